"""Speech engines behind one small interface, and the registry that builds them from settings.

An engine turns one piece of prepared text into one audio file that it writes into a directory
the caller owns (and cleans up). Engines know nothing of the database or the store; the service
splits text, calls the engine per piece, and assembles the result.

``rate`` is engine-neutral: a percentage relative to the engine's normal speed (0 = normal,
-20 = 20 % slower, as villagers often need). Each engine maps it to its own unit (espeak-ng
words per minute; edge-tts ``"+0%"`` strings). ``pitch`` is an offset in Hz (edge-tts
``"+0Hz"``; espeak-ng maps it onto its 0..99 pitch scale). Volume is not an engine parameter:
the assembled announcement is loudness-normalised, so volume is applied there (`tts.audio`).

Built in: ``edge`` (tts/edge.py, online) and ``espeak`` (here, offline). The shared shape is in
`tts.base`, which the engines import; this registry imports the engines, never the other way.
Adding an engine (e.g. a local neural model): write a class with the `Engine` shape and a
``from_settings(settings)`` classmethod, call ``register_engine("name", Cls.from_settings)``, and
list its voices with `tts.voices.register_voices`. Callers only ever use
`get_engine(name, settings)`; the fallback chain (`tts.service`) treats every engine alike.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from core.settings import Settings
from tts.base import PITCH_MAX, PITCH_MIN, RATE_MAX, RATE_MIN, Engine, check_pitch, check_rate
from tts.edge import EdgeEngine
from tts.exceptions import EngineError

# Re-exported: callers have always imported these from here.
__all__ = [
    "PITCH_MAX",
    "PITCH_MIN",
    "RATE_MAX",
    "RATE_MIN",
    "Engine",
    "EngineError",
    "EspeakEngine",
    "check_pitch",
    "check_rate",
    "engine_names",
    "get_engine",
    "register_engine",
]

logger = logging.getLogger(__name__)

# espeak-ng renders 500 Chinese characters in ~0.2 s; a piece that takes this long is stuck.
ESPEAK_TIMEOUT_S = 60.0
ESPEAK_BINARY = "espeak-ng"

# A voice name goes into an argument vector, never a shell; still, keep it to what voice
# names look like so it cannot be taken for an option.
_VOICE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+\-]{0,63}")


class EspeakEngine:
    """Offline Mandarin with espeak-ng (robotic but always there); writes 16-bit mono WAV."""

    name = "espeak"
    max_piece_chars = 500

    def __init__(self, *, voice: str = "cmn", speed_wpm: int = 150, timeout_s: float | None = None) -> None:
        self.default_voice = voice
        self.speed_wpm = speed_wpm
        self.timeout_s = timeout_s

    @classmethod
    def from_settings(cls, settings: Settings) -> EspeakEngine:
        return cls(voice=settings.tts.espeak_voice, speed_wpm=settings.tts.espeak_speed)

    def available(self) -> bool:
        return shutil.which(ESPEAK_BINARY) is not None

    def unavailable_reason(self) -> str:
        return f"espeak-ng: `{ESPEAK_BINARY}` not found on PATH; install it (apt install espeak-ng)"

    def wpm(self, rate: int) -> int:
        """espeak-ng words per minute for a rate percentage (espeak accepts 80..450)."""
        return max(80, min(450, round(self.speed_wpm * (100 + check_rate(rate)) / 100)))

    @staticmethod
    def espeak_pitch(pitch: int) -> int:
        """espeak-ng pitch (0..99, normal 50) for an offset in Hz."""
        return max(0, min(99, 50 + check_pitch(pitch)))

    def cache_params(self, *, voice: str, rate: int, pitch: int = 0) -> dict[str, Any]:
        params: dict[str, Any] = {"engine": self.name, "voice": voice, "wpm": self.wpm(rate)}
        if pitch:  # keys of assets made before pitch existed stay valid
            params["pitch"] = self.espeak_pitch(pitch)
        return params

    async def synthesize(self, text: str, *, voice: str, rate: int, out_dir: Path, pitch: int = 0) -> Path:
        if not _VOICE_NAME.fullmatch(voice):
            raise EngineError(f"espeak-ng: invalid voice name {voice!r}")
        binary = shutil.which(ESPEAK_BINARY)
        if binary is None:
            raise EngineError(
                f"espeak-ng: `{ESPEAK_BINARY}` not found on PATH; install it (apt install espeak-ng) "
                "or configure another engine"
            )
        fd, name = tempfile.mkstemp(prefix="espeak-", suffix=".wav", dir=out_dir)
        os.close(fd)  # espeak-ng rewrites the file; only the unique name is wanted
        out = Path(name)
        args = [binary, "-v", voice, "-s", str(self.wpm(rate)), "-p", str(self.espeak_pitch(pitch))]
        args += ["-b", "1", "--stdin", "-w", str(out)]
        timeout = self.timeout_s if self.timeout_s is not None else ESPEAK_TIMEOUT_S
        try:
            try:
                async with asyncio.timeout(timeout):
                    returncode, message = await _run(args, text.encode("utf-8"))
            except TimeoutError:
                raise EngineError(f"espeak-ng: no result after {timeout:g} s ({len(text)} chars)") from None
            if returncode != 0:
                raise EngineError(
                    f"espeak-ng failed (exit {returncode}, voice {voice!r}): {message or 'no output'}"
                )
            if not _has_audio(out):
                raise EngineError(f"espeak-ng produced no audio (voice {voice!r}): {message or 'no message'}")
        except BaseException:
            _discard(out)
            raise
        if message:
            logger.warning("espeak-ng: %s", message)
        return out


async def _run(args: list[str], stdin: bytes) -> tuple[int, str]:
    """Run a program without a shell, feed it stdin, and return (exit code, stderr text)."""
    try:
        proc = await asyncio.create_subprocess_exec(
            *args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
    except OSError as exc:  # vanished between which() and exec, not executable, ...
        raise EngineError(f"cannot start {args[0]}: {exc}") from exc
    try:
        _, stderr = await proc.communicate(stdin)
    finally:
        if proc.returncode is None:  # timed out or cancelled: do not leave it running
            proc.kill()
            await proc.wait()
    return proc.returncode or 0, stderr.decode("utf-8", "replace").strip()


def _has_audio(path: Path) -> bool:
    # A WAV header alone is 44 bytes: anything that small has no speech in it.
    return path.is_file() and path.stat().st_size > 44


def _discard(path: Path) -> None:
    path.unlink(missing_ok=True)


EngineFactory = Callable[[Settings], Engine]

_REGISTRY: dict[str, EngineFactory] = {"edge": EdgeEngine.from_settings, "espeak": EspeakEngine.from_settings}


def register_engine(name: str, factory: EngineFactory) -> None:
    """Make an engine available to `get_engine` under this name."""
    _REGISTRY[name] = factory


def engine_names() -> list[str]:
    """Names of the registered engines."""
    return sorted(_REGISTRY)


def get_engine(name: str | None, settings: Settings) -> Engine:
    """Build the named engine (settings.tts.engine when None); EngineError if there is no such engine."""
    name = name or settings.tts.engine
    factory = _REGISTRY.get(name)
    if factory is None:
        raise EngineError(f"unknown speech engine {name!r}; known: {', '.join(engine_names())}")
    return factory(settings)
