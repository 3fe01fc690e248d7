"""What every speech engine shares: the `Engine` shape and the engine-neutral prosody ranges.

Its own module so that the engine registry (`tts.engines`) and the engines themselves
(`tts.edge`, ...) both build on it without importing each other.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from tts.exceptions import SpeechInputError

RATE_MIN = -50
RATE_MAX = 100
PITCH_MIN = -50
PITCH_MAX = 50


@runtime_checkable
class Engine(Protocol):
    """What the service needs from a speech engine."""

    name: str
    default_voice: str
    # Longest piece of text (characters) the engine should be given in one call.
    max_piece_chars: int

    def available(self) -> bool:
        """Whether the engine can be used right now (binary present, service reachable)."""
        ...

    def unavailable_reason(self) -> str:
        """Why `available` is False, in words an operator can act on."""
        ...

    def cache_params(self, *, voice: str, rate: int, pitch: int = 0) -> dict[str, Any]:
        """Everything besides the text that decides the audio; part of the asset's cache key."""
        ...

    async def synthesize(self, text: str, *, voice: str, rate: int, out_dir: Path, pitch: int = 0) -> Path:
        """Speak text into a new audio file inside out_dir and return its path."""
        ...


def check_rate(rate: int) -> int:
    """Return rate if it is an allowed percentage, else SpeechInputError (field ``speech.rate``)."""
    if isinstance(rate, bool) or not isinstance(rate, int) or not RATE_MIN <= rate <= RATE_MAX:
        raise SpeechInputError(
            "rate", f"rate must be an integer percentage from {RATE_MIN} to {RATE_MAX}, not {rate!r}"
        )
    return rate


def check_pitch(pitch: int) -> int:
    """Return pitch if it is an allowed offset in Hz, else SpeechInputError (field ``speech.pitch``)."""
    if isinstance(pitch, bool) or not isinstance(pitch, int) or not PITCH_MIN <= pitch <= PITCH_MAX:
        raise SpeechInputError(
            "pitch", f"pitch must be an integer offset in Hz from {PITCH_MIN} to {PITCH_MAX}, not {pitch!r}"
        )
    return pitch
