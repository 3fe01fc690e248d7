"""Joining a playlist's audio files into one MP3 (pydub to decode and join, ffmpeg to encode).

Items are joined end to end without crossfade, with `gap_ms` of silence between items and between
rounds. Blocking and CPU-bound: async callers run it in a worker thread.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path

from pydub import AudioSegment
from pydub.exceptions import CouldntDecodeError

from core.errors import Unavailable

SAMPLE_WIDTH = 2  # 16-bit PCM while joining
# The rate items are joined at; edge-tts gives 24 kHz, espeak-ng 22.05 kHz.
JOIN_RATE = 24_000
BITRATE = "64k"
# Long programmes encode at several minutes of audio per second; this only catches a stuck ffmpeg.
ENCODE_TIMEOUT_S = 600.0
PROBE_TIMEOUT_S = 30.0


class AssemblyError(Unavailable):
    """An item could not be decoded, or ffmpeg/ffprobe failed (our stored audio or our tools: 503)."""


def decode(path: Path) -> AudioSegment:
    """Decode an audio file to mono 16-bit PCM at the join rate."""
    try:
        segment = AudioSegment.from_file(path)
    except (CouldntDecodeError, OSError, IndexError) as exc:
        raise AssemblyError(f"cannot decode {path.name}: {exc}") from exc
    return segment.set_channels(1).set_sample_width(SAMPLE_WIDTH).set_frame_rate(JOIN_RATE)


def join(files: Sequence[Path], *, repeat: int, gap_ms: int) -> AudioSegment:
    """The files in order, `repeat` times, with gap_ms of silence between items and rounds."""
    if not files:
        raise AssemblyError("nothing to assemble")
    segments = [decode(path) for path in files]
    gap = AudioSegment.silent(duration=gap_ms, frame_rate=JOIN_RATE).set_sample_width(SAMPLE_WIDTH)
    parts: list[bytes] = []
    for _ in range(repeat):
        for segment in segments:
            if parts and gap_ms:
                parts.append(gap.raw_data)
            parts.append(segment.raw_data)
    # One join of the raw samples: repeated `+` copies the growing result every time.
    return AudioSegment(data=b"".join(parts), sample_width=SAMPLE_WIDTH, frame_rate=JOIN_RATE, channels=1)


def encode_mp3(segment: AudioSegment, dest: Path, *, bitrate: str = BITRATE) -> None:
    """Encode to a mono MP3 at dest, PCM piped to ffmpeg (no temp files left behind on failure)."""
    args = [
        AudioSegment.converter, "-hide_banner", "-nostdin", "-loglevel", "error", "-y",
        "-f", f"s{segment.sample_width * 8}le", "-ar", str(segment.frame_rate), "-ac", "1", "-i", "pipe:0",
        "-vn", "-map_metadata", "-1", "-c:a", "libmp3lame", "-b:a", bitrate, "-f", "mp3", str(dest),
    ]  # fmt: skip
    try:
        result = subprocess.run(args, input=segment.raw_data, capture_output=True, timeout=ENCODE_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise AssemblyError(f"cannot run {args[0]}: {exc}") from exc
    if result.returncode != 0:
        message = result.stderr.decode(errors="replace")[-300:]
        raise AssemblyError(f"ffmpeg exit {result.returncode}: {message}")


def duration_ms(path: Path) -> int:
    """Playing time of an audio file as ffprobe measures it."""
    args = ["ffprobe", "-v", "error", "-show_entries", "format=duration",
            "-of", "default=noprint_wrappers=1:nokey=1", str(path)]  # fmt: skip
    try:
        result = subprocess.run(args, capture_output=True, text=True, timeout=PROBE_TIMEOUT_S)
        return round(float(result.stdout.strip()) * 1000)
    except (OSError, subprocess.TimeoutExpired, ValueError) as exc:
        raise AssemblyError(f"ffprobe could not measure {path.name}: {exc}") from exc
