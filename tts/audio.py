"""Assembly of synthesised pieces into one broadcast-ready MP3 (pydub + ffmpeg).

The pieces are joined in order with a short gap, faded in and out so they start and stop without a
click, preceded by silence so pole-mounted amplifiers that switch on with the signal do not swallow
the first syllable, and encoded once as mono MP3. The duration is measured on the encoded file
(ffprobe), because that is what speakers play and what schedules are built from.

This is CPU-bound (decode to PCM, resample, encode) and blocking: async callers run it in a worker
thread. Chimes and loudness normalisation belong to the speech/playlists issues; they extend
`AssemblyParams` (and so the cache key) rather than change this shape.
"""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pydub import AudioSegment
from pydub.exceptions import CouldntDecodeError, CouldntEncodeError

from core.settings import AudioSettings

logger = logging.getLogger(__name__)

# Amplifiers on poles wake on signal and need about half a second before they are audible.
LEAD_IN_MS = 500
# Silence after the speech so the last syllable is not cut when a speaker stops its amplifier.
TAIL_MS = 300
# Long enough to avoid a click at the edges, short enough not to eat a syllable.
FADE_MS = 20
# Between pieces; engines leave their own pause after a sentence, this marks the paragraph.
PIECE_GAP_MS = 150
# ffprobe reads one header; anything slower means it is stuck.
PROBE_TIMEOUT_S = 30.0

SAMPLE_WIDTH = 2  # 16-bit PCM while assembling


class AudioError(RuntimeError):
    """Decoding, encoding or measuring audio failed (ffmpeg/ffprobe missing or unhappy)."""


@dataclass(frozen=True)
class AssemblyParams:
    """Everything that shapes the assembled file; part of every asset's cache key."""

    bitrate: str
    sample_rate: int
    lead_in_ms: int = LEAD_IN_MS
    tail_ms: int = TAIL_MS
    fade_ms: int = FADE_MS
    gap_ms: int = PIECE_GAP_MS

    @classmethod
    def from_settings(cls, settings: AudioSettings) -> AssemblyParams:
        return cls(bitrate=settings.bitrate, sample_rate=settings.sample_rate)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def assemble(pieces: Sequence[Path], *, dest: Path, params: AssemblyParams) -> int:
    """Join the audio files into one MP3 written to dest and return its measured duration (ms)."""
    if not pieces:
        raise AudioError("nothing to assemble")
    try:
        segments = [AudioSegment.from_file(piece) for piece in pieces]
    except (CouldntDecodeError, OSError) as exc:
        raise AudioError(f"cannot decode synthesised audio: {exc}") from exc
    # Join at the engine's own rate; ffmpeg resamples once, on export, better than audioop would.
    frame_rate = segments[0].frame_rate
    gap = AudioSegment.silent(duration=params.gap_ms, frame_rate=frame_rate)
    joined: list[AudioSegment] = []
    for i, segment in enumerate(segments):
        if i:
            joined.append(gap)
        joined.append(segment)
    speech = concatenate(joined, frame_rate=frame_rate)
    speech = speech.fade_in(params.fade_ms).fade_out(params.fade_ms)
    whole = concatenate(
        [
            AudioSegment.silent(duration=params.lead_in_ms, frame_rate=frame_rate),
            speech,
            AudioSegment.silent(duration=params.tail_ms, frame_rate=frame_rate),
        ],
        frame_rate=frame_rate,
    )
    try:
        handle = whole.export(
            str(dest),
            format="mp3",
            bitrate=params.bitrate,
            parameters=["-ar", str(params.sample_rate), "-ac", "1"],
        )
        handle.close()
    except (CouldntEncodeError, OSError) as exc:
        raise AudioError(f"cannot encode MP3: {exc}") from exc
    return probe_duration_ms(dest)


def concatenate(segments: Sequence[AudioSegment], *, frame_rate: int) -> AudioSegment:
    """Join segments end to end with no crossfade, copying the samples once.

    ``sum()`` / repeated ``+`` copies the growing result every time (quadratic for long notices).
    """
    uniform = [s.set_channels(1).set_sample_width(SAMPLE_WIDTH).set_frame_rate(frame_rate) for s in segments]
    return AudioSegment(
        data=b"".join(s.raw_data for s in uniform),
        sample_width=SAMPLE_WIDTH,
        frame_rate=frame_rate,
        channels=1,
    )


def probe_duration_ms(path: Path) -> int:
    """Return the playing time of an audio file in milliseconds, as ffprobe measures it."""
    args = [
        "ffprobe", "-v", "error", "-show_entries", "format=duration",
        "-of", "default=noprint_wrappers=1:nokey=1", str(path),
    ]  # fmt: skip
    try:
        result = subprocess.run(args, capture_output=True, text=True, timeout=PROBE_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise AudioError(f"ffprobe failed on {path.name}: {exc}") from exc
    try:
        return round(float(result.stdout.strip()) * 1000)
    except ValueError:
        raise AudioError(
            f"ffprobe could not measure {path.name} (exit {result.returncode}): {result.stderr.strip()}"
        ) from None
