"""Audio players for the speaker agent: a real command (ffplay, mpg123, aplay) or a null one."""

from __future__ import annotations

import asyncio
import contextlib
import math
import shlex
import struct
import wave
from pathlib import Path
from typing import Protocol

# A player that runs this much longer than the audio is stuck: kill it and report a failure.
PLAYER_OVERRUN_FACTOR = 1.5
PLAYER_OVERRUN_GRACE_S = 15.0
# Characters of the player's stderr kept in a failure report (reports carry at most 500).
STDERR_TAIL_CHARS = 300
TONE_HZ = 1000
TONE_SAMPLE_RATE = 16000

DEFAULT_PLAYER = "ffplay -nodisp -autoexit -loglevel error -volume {volume}"


class PlayerError(RuntimeError):
    """Playback did not complete; the text is what a report's `error` field should say."""


class Player(Protocol):
    """Plays one file (or a tone) to the end, or raises PlayerError."""

    async def play(self, path: Path, duration_s: float, volume: int) -> None: ...

    async def tone(self, duration_s: float, volume: int, work_dir: Path) -> None: ...


class NullPlayer:
    """Plays nothing: sleeps for the audio's duration (simulation and load tests)."""

    async def play(self, path: Path, duration_s: float, volume: int) -> None:
        """Pretend to play the file for duration_s seconds."""
        await asyncio.sleep(duration_s)

    async def tone(self, duration_s: float, volume: int, work_dir: Path) -> None:
        """Pretend to play a test tone."""
        await asyncio.sleep(duration_s)


class CommandPlayer:
    """Runs an external program with the file path appended; `{volume}` in the command is 0–100."""

    def __init__(self, command: str) -> None:
        self.argv = shlex.split(command)
        if not self.argv:
            raise ValueError("player command is empty")

    def _argv(self, path: Path, volume: int) -> list[str]:
        return [part.replace("{volume}", str(volume)) for part in self.argv] + [str(path)]

    async def play(self, path: Path, duration_s: float, volume: int) -> None:
        """Run the player to completion; a non-zero exit raises PlayerError with the stderr tail."""
        argv = self._argv(path, volume)
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
            )
        except OSError as exc:
            raise PlayerError(f"cannot start player {argv[0]!r}: {exc}") from None
        limit = duration_s * PLAYER_OVERRUN_FACTOR + PLAYER_OVERRUN_GRACE_S
        try:
            async with asyncio.timeout(limit):
                _, stderr = await proc.communicate()
        except TimeoutError:
            await _kill(proc)
            raise PlayerError(f"player still running after {limit:.0f} s, killed") from None
        except asyncio.CancelledError:
            await _kill(proc)
            raise
        if proc.returncode != 0:
            tail = stderr.decode(errors="replace").strip()[-STDERR_TAIL_CHARS:]
            raise PlayerError(f"player exited with code {proc.returncode}: {tail}".rstrip(": "))

    async def tone(self, duration_s: float, volume: int, work_dir: Path) -> None:
        """Play a sine test tone written as a WAV file next to the audio cache."""
        path = write_tone(work_dir, duration_s)
        await self.play(path, duration_s, volume)


async def _kill(proc: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError):
        proc.kill()
    await proc.wait()


def write_tone(work_dir: Path, duration_s: float, hz: int = TONE_HZ) -> Path:
    """Write (once) a mono 16-bit sine WAV of this length and return its path."""
    path = work_dir / f"tone-{hz}hz-{duration_s:g}s.wav"
    if path.exists():
        return path
    work_dir.mkdir(parents=True, exist_ok=True)
    frames = int(duration_s * TONE_SAMPLE_RATE)
    amplitude = 0.5 * 32767
    data = b"".join(
        struct.pack("<h", int(amplitude * math.sin(2 * math.pi * hz * i / TONE_SAMPLE_RATE)))
        for i in range(frames)
    )
    tmp = path.with_suffix(".tmp")
    with wave.open(str(tmp), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(TONE_SAMPLE_RATE)
        out.writeframes(data)
    tmp.replace(path)
    return path


def make_player(spec: str) -> Player:
    """`null` gives the NullPlayer; anything else is a command line for CommandPlayer."""
    if spec.strip().lower() == "null":
        return NullPlayer()
    return CommandPlayer(spec)
