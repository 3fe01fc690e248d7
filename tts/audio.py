"""Assembly of synthesised pieces into one broadcast-ready MP3 (pydub + ffmpeg).

The pieces are joined in order with a short gap, faded in and out so they start and stop without a
click, preceded by silence so pole-mounted amplifiers that switch on with the signal do not swallow
the first syllable, and encoded once as mono MP3 (ffmpeg reads the PCM from a pipe). The duration
is measured on the encoded file (ffprobe), because that is what speakers play and what schedules
are built from.

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
from pydub.exceptions import CouldntDecodeError

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
# libmp3lame -q (0 best .. 9 fastest). 7 encodes twice as fast as ffmpeg's default (13 minutes of
# speech: 1.9 s instead of 3.8 s); at 64 kbit/s speech through horn speakers the difference is not
# audible.
LAME_QUALITY = 7
# ffmpeg encodes ~7 minutes of speech per second here; a 5,000-character notice is ~30 minutes.
ENCODE_TIMEOUT_S = 300.0
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
    lame_quality: int = LAME_QUALITY

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
    encode_mp3(
        whole, dest=dest, bitrate=params.bitrate, sample_rate=params.sample_rate, quality=params.lame_quality
    )
    return probe_duration_ms(dest)


def encode_mp3(
    segment: AudioSegment, *, dest: Path, bitrate: str, sample_rate: int, quality: int = LAME_QUALITY
) -> None:
    """Encode a segment to a mono MP3 file with ffmpeg, resampling to sample_rate.

    Not ``AudioSegment.export``: that writes a WAV copy and an MP3 copy to the system temp dir and
    leaks both when ffmpeg fails or is missing. Here the PCM goes to ffmpeg's stdin and the MP3
    straight to dest (a staging file the caller removes on failure).
    """
    args = [
        AudioSegment.converter, "-hide_banner", "-nostdin", "-loglevel", "error", "-y",
        "-f", f"s{segment.sample_width * 8}le", "-ar", str(segment.frame_rate),
        "-ac", str(segment.channels), "-i", "pipe:0",
        "-vn", "-map_metadata", "-1",
        "-c:a", "libmp3lame", "-b:a", bitrate, "-compression_level", str(quality), "-ar", str(sample_rate),
        "-ac", "1", "-f", "mp3", str(dest),
    ]  # fmt: skip
    try:
        result = subprocess.run(
            args, input=segment.raw_data, capture_output=True, timeout=ENCODE_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise AudioError(f"cannot encode MP3 with {args[0]}: {exc}") from exc
    if result.returncode != 0:
        message = result.stderr.decode("utf-8", "replace").strip()
        raise AudioError(f"cannot encode MP3 ({args[0]} exit {result.returncode}): {message}")


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
