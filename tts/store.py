"""The content-addressed audio store: ``<audio_dir>/<sha256[:2]>/<sha256>.mp3``.

Files are named by the SHA-256 of their bytes, so a speaker can check what it downloaded and
identical audio is stored once. Files appear atomically: they are written under a staging name
in ``audio_dir`` (same filesystem) and renamed into place only when complete.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

SUFFIX = ".mp3"
# Staging files start with a dot so listings and globs of `??/*.mp3` never see them.
STAGING_PREFIX = ".staging-"

_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class StoredFile:
    sha256: str
    path: Path
    size_bytes: int


def media_path(sha256: str) -> str:
    """The server path an asset is served at (api/routes/system.py): ``/media/<sha256>.mp3``."""
    return f"/media/{sha256}{SUFFIX}"


def media_url(base_url: str, sha256: str) -> str:
    """The absolute URL speakers download an asset from: the public base URL plus `media_path`."""
    return base_url.rstrip("/") + media_path(sha256)


def is_sha256(value: str) -> bool:
    """Whether value is a lowercase hex SHA-256 (64 characters), safe to use as a file name."""
    return isinstance(value, str) and _SHA256.fullmatch(value) is not None


def path_for(audio_dir: Path, sha256: str) -> Path:
    """Return where the file with this SHA-256 lives; ValueError unless it is 64 lowercase hex."""
    if not is_sha256(sha256):
        raise ValueError(f"not a SHA-256 hex digest: {sha256!r}")
    return Path(audio_dir) / sha256[:2] / f"{sha256}{SUFFIX}"


def exists(audio_dir: Path, sha256: str) -> bool:
    """Whether the file with this SHA-256 is in the store."""
    return path_for(audio_dir, sha256).is_file()


def sha256_file(path: Path) -> str:
    """Return the hex SHA-256 of a file's bytes."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


@contextmanager
def staging(audio_dir: Path, suffix: str = SUFFIX) -> Iterator[Path]:
    """Yield a fresh path inside audio_dir to write to; it is removed on exit unless `put` moved it."""
    audio_dir = Path(audio_dir)
    audio_dir.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=STAGING_PREFIX, suffix=suffix, dir=audio_dir)
    os.close(fd)
    path = Path(name)
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)


def put(audio_dir: Path, staged: Path) -> StoredFile:
    """Move a complete staged file to its content address and return where it went."""
    digest = sha256_file(staged)
    size = staged.stat().st_size
    dest = path_for(audio_dir, digest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    # The bytes must be on disk before the name is: a crash must not leave a short file
    # under a content address that claims to be complete.
    with open(staged, "rb") as f:
        os.fsync(f.fileno())
    os.replace(staged, dest)
    logger.debug("stored %s (%s bytes)", dest, size)
    return StoredFile(sha256=digest, path=dest, size_bytes=size)


def remove(audio_dir: Path, sha256: str) -> None:
    """Delete the file with this SHA-256 if it is there."""
    path_for(audio_dir, sha256).unlink(missing_ok=True)
