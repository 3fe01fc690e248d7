"""The online engine: Microsoft Edge's neural voices through edge-tts (async API only).

Every request runs inside an outer `asyncio.timeout` (edge-tts's own receive timeout does not stop a
stream that stalls after audio has started), is retried with backoff when the service answers
403, 429 or 5xx, and holds one of a process-wide number of connection slots (the service
rate-limits heavy parallel use). Audio is written to a ``.part`` file and renamed when the service
has said ``turn.end``, so a failed request never leaves a file that looks complete.

When the service cannot be reached (no network: DNS fails within milliseconds) or a request stalls
past its timeout, the engine marks itself unavailable for `COOLDOWN_S`: the fallback chain then
goes straight to the next engine instead of waiting on every request, and the voice catalogue
shows edge voices as unavailable. The first success clears the mark.
"""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import edge_tts
from edge_tts.exceptions import EdgeTTSException

from core.settings import Settings
from tts.base import check_pitch, check_rate
from tts.exceptions import EngineError

logger = logging.getLogger(__name__)

# How long edge is skipped after it could not be reached or stalled; short enough that a village
# office whose link comes back gets neural voices again within a minute.
COOLDOWN_S = 60.0
# First retry delay; doubled per retry (0.5 s, 1 s, ...), capped by the request's own timeout.
BACKOFF_S = 0.5
# Handshake and first-byte limits passed to edge-tts (integers, in seconds).
CONNECT_TIMEOUT_S = 10
RECEIVE_TIMEOUT_S = 30
# Statuses worth retrying: 403 (clock skew / token refresh), 429 (rate limit), 5xx (service trouble).
RETRY_STATUSES = frozenset({403, 429})


@dataclass
class _Health:
    """Process-wide memory of the last failure to reach the service."""

    down_until: float = 0.0
    reason: str = ""

    def is_down(self) -> bool:
        return time.monotonic() < self.down_until

    def mark_down(self, reason: str) -> None:
        self.down_until = time.monotonic() + COOLDOWN_S
        self.reason = reason

    def mark_up(self) -> None:
        self.down_until = 0.0
        self.reason = ""


HEALTH = _Health()


def reset_health() -> None:
    """Forget past failures (tests; an operator who knows the link is back)."""
    HEALTH.mark_up()


class _ConnectionSlots:
    """A process-wide bound on open connections, usable from any event loop.

    Sync callers run each synthesis in its own `asyncio.run`, so an `asyncio.Semaphore` (bound to
    one loop) cannot be shared; a thread semaphore polled without blocking the loop can.
    """

    POLL_S = 0.02

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._size = 0
        self._sem = threading.Semaphore(0)

    def resize(self, size: int) -> None:
        with self._lock:
            for _ in range(size - self._size):
                self._sem.release()
            if size < self._size:  # shrinking is rare (tests): take slots back as they come
                for _ in range(self._size - size):
                    self._sem.acquire()
            self._size = size

    async def __aenter__(self) -> None:
        # Polled, not awaited on an Event: the holders may run on other threads' loops.
        while not self._sem.acquire(blocking=False):  # noqa: ASYNC110
            await asyncio.sleep(self.POLL_S)

    async def __aexit__(self, *exc: object) -> None:
        self._sem.release()


SLOTS = _ConnectionSlots()


class _Retryable(Exception):
    pass


class EdgeEngine:
    """Neural voices from the Edge read-aloud service; MP3, 24 kHz, 48 kbit/s, mono."""

    name = "edge"
    # The service cuts text at 4,096 UTF-8 bytes and edge-tts escapes &, <, > (up to 5 bytes for
    # one character): 800 characters stay under the limit whatever they are, so we choose the
    # cuts (at 。！？；) and edge-tts never has to.
    max_piece_chars = 800

    def __init__(
        self,
        *,
        voice: str = "zh-CN-XiaoxiaoNeural",
        timeout_s: float = 45.0,
        retries: int = 2,
        concurrency: int = 4,
    ) -> None:
        self.default_voice = voice
        self.timeout_s = timeout_s
        self.retries = retries
        SLOTS.resize(concurrency)

    @classmethod
    def from_settings(cls, settings: Settings) -> EdgeEngine:
        tts = settings.tts
        return cls(
            voice=tts.edge_voice,
            timeout_s=tts.edge_timeout_s,
            retries=tts.edge_retries,
            concurrency=tts.edge_concurrency,
        )

    def available(self) -> bool:
        return not HEALTH.is_down()

    def unavailable_reason(self) -> str:
        left = max(0.0, HEALTH.down_until - time.monotonic())
        return f"edge-tts unreachable, not retried for {left:.0f} s: {HEALTH.reason}"

    def cache_params(self, *, voice: str, rate: int, pitch: int = 0) -> dict[str, Any]:
        return {"engine": self.name, "voice": voice, **_prosody(rate, pitch)}

    async def synthesize(self, text: str, *, voice: str, rate: int, out_dir: Path, pitch: int = 0) -> Path:
        prosody = _prosody(rate, pitch)
        delay = BACKOFF_S
        for attempt in range(self.retries + 1):
            try:
                path = await self._once(text, voice=voice, out_dir=out_dir, **prosody)
            except _Retryable as exc:
                if attempt == self.retries:
                    raise EngineError(f"edge-tts: {exc} (after {attempt + 1} attempts)") from None
                logger.info("edge-tts: %s; retry %s in %.1f s", exc, attempt + 1, delay)
                await asyncio.sleep(delay)
                delay *= 2
            else:
                HEALTH.mark_up()
                return path
        raise AssertionError("unreachable")  # pragma: no cover

    async def _once(self, text: str, *, voice: str, out_dir: Path, rate: str, pitch: str) -> Path:
        fd, name = tempfile.mkstemp(prefix="edge-", suffix=".part", dir=out_dir)
        part = Path(name)
        try:
            with os.fdopen(fd, "wb") as out:
                try:
                    async with SLOTS, asyncio.timeout(self.timeout_s):
                        communicate = edge_tts.Communicate(
                            text,
                            voice,
                            rate=rate,
                            pitch=pitch,
                            connect_timeout=CONNECT_TIMEOUT_S,
                            receive_timeout=RECEIVE_TIMEOUT_S,
                        )
                        async for chunk in communicate.stream():
                            if chunk["type"] == "audio":
                                out.write(chunk["data"])
                except TimeoutError:
                    reason = f"no complete answer within {self.timeout_s:g} s (stalled or too slow)"
                    HEALTH.mark_down(reason)
                    raise EngineError(f"edge-tts: {reason}") from None
                except aiohttp.ClientResponseError as exc:  # handshake refused: 403, 429, 503, ...
                    reason = f"service answered {exc.status} {exc.message}".strip()
                    if exc.status in RETRY_STATUSES or exc.status >= 500:
                        raise _Retryable(reason) from None
                    raise EngineError(f"edge-tts: {reason}") from None
                except (aiohttp.ClientConnectionError, OSError) as exc:  # offline, refused, reset
                    reason = f"cannot reach the service: {exc}"
                    HEALTH.mark_down(reason)
                    raise EngineError(f"edge-tts: {reason}") from None
                except EdgeTTSException as exc:  # NoAudioReceived, UnexpectedResponse, ...
                    raise EngineError(f"edge-tts ({type(exc).__name__}, voice {voice!r}): {exc}") from None
                except ValueError as exc:  # malformed voice name
                    raise EngineError(f"edge-tts: {exc}") from None
            done = part.with_suffix(".mp3")
            os.replace(part, done)
            return done
        except BaseException:
            _discard(part)
            raise


def _discard(path: Path) -> None:
    path.unlink(missing_ok=True)


def _prosody(rate: int, pitch: int) -> dict[str, str]:
    return {"rate": f"{check_rate(rate):+d}%", "pitch": f"{check_pitch(pitch):+d}Hz"}
