"""Audio files on disk keyed by sha256, downloaded once per process however many speakers ask."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
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
    """A directory of verified audio files named by their sha256; share one per process."""

    def __init__(self, directory: Path, *, http: httpx.AsyncClient | None = None) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._http = http
        self._own_http = http is None
        self._locks: dict[str, asyncio.Lock] = {}
        self.downloads = 0  # completed HTTP downloads, for tests and statistics

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
