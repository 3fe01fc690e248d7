"""Audio files on disk keyed by sha256, downloaded once per process however many speakers ask."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
from collections import Counter
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

import httpx

logger = logging.getLogger(__name__)

# Refuse anything larger, whatever the command announces (a 30-minute 48 kbit/s MP3 is ~11 MB).
MAX_AUDIO_BYTES = 64 * 1024 * 1024
# Connect/read timeout of one HTTP request, and the whole download's deadline.
HTTP_TIMEOUT_S = 10.0
DOWNLOAD_DEADLINE_S = 120.0
_CHUNK = 64 * 1024
_SUFFIXES = {".mp3", ".wav", ".ogg", ".opus", ".m4a", ".aac", ".flac"}


class DownloadError(RuntimeError):
    """The audio could not be fetched or did not match its sha256; the text goes into the report."""


class AudioCache:
    """A directory of verified audio files named by their sha256; share one per process.

    With `max_bytes`, the least recently used files are deleted after each download until the
    total fits, except files pinned by airings still to come (a programme is never evicted).
    """

    def __init__(
        self, directory: Path, *, http: httpx.AsyncClient | None = None, max_bytes: int | None = None
    ) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        for stale in self.directory.glob("*.part"):  # left by a download cut short by a crash
            with contextlib.suppress(OSError):
                stale.unlink()
        self._http = http
        self._own_http = http is None
        self._locks: dict[str, asyncio.Lock] = {}
        self._pins: Counter[str] = Counter()
        self.max_bytes = max_bytes
        self.downloads = 0  # completed HTTP downloads, for tests and statistics
        self.evictions = 0

    def pin(self, sha256: str) -> None:
        """Keep this file: an airing still needs it."""
        self._pins[sha256] += 1

    def unpin(self, sha256: str) -> None:
        """One airing no longer needs this file."""
        self._pins[sha256] -= 1
        if self._pins[sha256] <= 0:
            del self._pins[sha256]

    def size(self) -> int:
        """Bytes of audio in the cache."""
        return sum(p.stat().st_size for p in self._files())

    def _files(self) -> list[Path]:
        return [p for p in self.directory.iterdir() if p.is_file() and len(p.stem) == 64]

    def prune(self) -> int:
        """Delete least recently used unpinned files until the cache fits max_bytes; return how many."""
        if self.max_bytes is None:
            return 0
        files = []
        for path in self._files():
            with contextlib.suppress(FileNotFoundError):
                st = path.stat()
                files.append((st.st_mtime, st.st_size, path))
        total = sum(size for _, size, _ in files)
        removed = 0
        for _, size, path in sorted(files):
            if total <= self.max_bytes:
                break
            if path.stem in self._pins:
                continue
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            total -= size
            removed += 1
            logger.info("audio cache over %s bytes: evicted %s", self.max_bytes, path.name)
        self.evictions += removed
        return removed

    def path_for(self, sha256: str, url: str = "") -> Path:
        """Where the file with this digest lives (it may not exist yet)."""
        suffix = PurePosixPath(urlsplit(url).path).suffix.lower()
        return self.directory / (sha256 + (suffix if suffix in _SUFFIXES else ".audio"))

    def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=HTTP_TIMEOUT_S, follow_redirects=True)
        return self._http

    async def fetch(self, url: str, sha256: str, size_bytes: int = 0) -> Path:
        """Return the local file for this digest, downloading and verifying it if needed."""
        path = self.path_for(sha256, url)
        if path.exists():
            with contextlib.suppress(OSError):
                os.utime(path)  # recently used: evicted last
            return path
        lock = self._locks.setdefault(sha256, asyncio.Lock())
        async with lock:
            if path.exists():
                return path
            try:
                async with asyncio.timeout(DOWNLOAD_DEADLINE_S):
                    await self._download(url, sha256, size_bytes, path)
            except TimeoutError:
                raise DownloadError(
                    f"download of {url} took longer than {DOWNLOAD_DEADLINE_S:.0f} s"
                ) from None
        self.prune()
        return path

    async def _download(self, url: str, sha256: str, size_bytes: int, path: Path) -> None:
        limit = min(size_bytes, MAX_AUDIO_BYTES) if size_bytes > 0 else MAX_AUDIO_BYTES
        digest = hashlib.sha256()
        received = 0
        tmp = path.with_name(f"{path.name}.{os.getpid()}.part")
        try:
            async with self._client().stream("GET", url) as response:
                if response.status_code != 200:
                    raise DownloadError(f"HTTP {response.status_code} from {url}")
                with tmp.open("wb") as out:
                    async for chunk in response.aiter_bytes(_CHUNK):
                        received += len(chunk)
                        if received > limit:
                            raise DownloadError(f"audio larger than {limit} bytes: {url}")
                        digest.update(chunk)
                        out.write(chunk)
            if digest.hexdigest() != sha256:
                raise DownloadError(f"sha256 mismatch: expected {sha256}, got {digest.hexdigest()}")
            tmp.replace(path)
            self.downloads += 1
            logger.debug("downloaded %s (%s bytes) to %s", url, received, path)
        except httpx.HTTPError as exc:
            raise DownloadError(f"download of {url} failed: {type(exc).__name__}: {exc}") from None
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()

    async def aclose(self) -> None:
        """Close the HTTP client if this cache created it."""
        if self._own_http and self._http is not None:
            await self._http.aclose()
            self._http = None
