"""Assembly of synthesised pieces (or a recording) into one broadcast-ready MP3 (pydub + ffmpeg).

An announcement is, in order::

    lead-in silence | [chime] | speech | (repeat gap | speech) x (repeat - 1) | [closing chime] | tail

- lead-in silence so pole-mounted amplifiers that switch on with the signal do not swallow the
  first sound;
- the speech: the engine's pieces joined in order with a short gap, no crossfade, with a light
  fade at both ends so it starts and stops without a click;
- loudness: the speech is measured once (EBU R128 integrated loudness, ffmpeg ``ebur128``) and
  brought to ``loudness_lufs`` (+ the request's volume) by a linear gain; the chime is set a little
  below it. When the gain would push peaks over ``peak_db``, ffmpeg's ``alimiter`` holds them
  there (only then: it costs time). Two-pass ``loudnorm`` measures at 192 kHz and took 8 s for
  10 minutes of speech here; this takes 0.4 s and is the same linear normalisation;
- one MP3 encode at the configured bitrate (ffmpeg reads PCM from a pipe), with an ID3 title;
- the duration is measured on the encoded file (ffprobe), because that is what speakers play and
  what schedules are built from.

Every knob is in `AssemblyParams`, which is part of every asset's cache key. This is CPU-bound and
blocking: async callers run it in a worker thread.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import re
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pydub import AudioSegment
from pydub.exceptions import CouldntDecodeError
from pydub.generators import Sine

from core.errors import InvalidInput, Unavailable
from core.settings import AudioSettings
from tts.exceptions import SpeechInputError

logger = logging.getLogger(__name__)

# Amplifiers on poles wake on signal and need about half a second before they are audible.
LEAD_IN_MS = 500
# Silence after the speech so the last syllable is not cut when a speaker stops its amplifier.
TAIL_MS = 300
# Long enough to avoid a click at the edges, short enough not to eat a syllable.
FADE_MS = 20
# Between pieces; engines leave their own pause after a sentence, this marks the paragraph.
PIECE_GAP_MS = 150
# Between a chime and the speech next to it.
CHIME_GAP_MS = 400
# The chime sits this far (LU) below the speech: an attention signal, not a shock.
CHIME_BELOW_LU = 4.0
# Below this integrated loudness there is nothing to normalise (silence or hum).
SILENCE_LUFS = -60.0
# libmp3lame -q (0 best .. 9 fastest). 7 encodes twice as fast as ffmpeg's default (13 minutes of
# speech: 1.9 s instead of 3.8 s); at 64 kbit/s speech through horn speakers the difference is not
# audible.
LAME_QUALITY = 7
# ffmpeg encodes ~7 minutes of speech per second here; a 5,000-character notice is ~30 minutes,
# read three times.
ENCODE_TIMEOUT_S = 600.0
# ffprobe reads one header; anything slower means it is stuck.
PROBE_TIMEOUT_S = 30.0
MAX_REPEAT = 5

SAMPLE_WIDTH = 2  # 16-bit PCM while assembling


class AudioError(Unavailable):
    """Decoding, encoding or measuring audio failed (ffmpeg/ffprobe missing or unhappy)."""


class NotAudio(InvalidInput):
    """An uploaded file is not audio we accept (wrong format, no sound, too long): the caller's
    input (field ``file``), not a failure of ours, so not an `AudioError`."""

    def __init__(self, message: str) -> None:
        super().__init__("file", message)

    def __str__(self) -> str:
        return self.message


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
    loudness_lufs: float | None = None  # None: leave the level as the engine made it
    peak_db: float = -1.0
    volume: int = 0  # percent, -50..100: moves the loudness target by 20·log10(1 + volume/100) dB
    repeat: int = 1
    repeat_gap_ms: int = 2000
    chime: bool = False
    closing_chime: bool = False
    title: str = ""

    @classmethod
    def from_settings(cls, settings: AudioSettings, **request: Any) -> AssemblyParams:
        """Parameters from the settings, with per-request choices (volume, repeat, chime, title)."""
        return cls(
            bitrate=settings.bitrate,
            sample_rate=settings.sample_rate,
            lead_in_ms=settings.lead_in_ms,
            loudness_lufs=settings.loudness_lufs,
            peak_db=settings.peak_db,
            repeat_gap_ms=settings.repeat_gap_ms,
            **request,
        )

    def __post_init__(self) -> None:
        if isinstance(self.repeat, bool) or not isinstance(self.repeat, int):
            raise SpeechInputError("repeat", f"repeat must be an integer from 1 to {MAX_REPEAT}")
        if not 1 <= self.repeat <= MAX_REPEAT:
            raise SpeechInputError("repeat", f"repeat must be from 1 to {MAX_REPEAT}, not {self.repeat}")
        if isinstance(self.volume, bool) or not isinstance(self.volume, int) or not -50 <= self.volume <= 100:
            raise SpeechInputError(
                "volume", f"volume must be an integer percentage from -50 to 100, not {self.volume!r}"
            )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def target_lufs(self) -> float | None:
        if self.loudness_lufs is None:
            return None
        return self.loudness_lufs + 20 * math.log10(1 + self.volume / 100)


# Marks "not measured yet" (None means measured and silent).
UNMEASURED = float("nan")


def assemble(
    pieces: Sequence[AudioSegment],
    *,
    dest: Path,
    params: AssemblyParams,
    loudness: float | None = UNMEASURED,
) -> int:
    """Join the decoded pieces into one announcement written to dest; return its measured duration (ms).

    ``loudness`` is the integrated loudness of the joined speech when it was measured already (a
    `LoudnessMeter` fed while the pieces were being synthesised); NaN: measure it here.
    """
    if not pieces:
        raise AudioError("nothing to assemble")
    # Join at the engine's own rate; ffmpeg resamples once, on export, better than audioop would.
    frame_rate = pieces[0].frame_rate
    gap = AudioSegment.silent(duration=params.gap_ms, frame_rate=frame_rate)
    joined: list[AudioSegment] = []
    for i, segment in enumerate(pieces):
        if i:
            joined.append(gap)
        joined.append(segment)
    speech = concatenate(joined, frame_rate=frame_rate)
    return assemble_speech(speech, dest=dest, params=params, loudness=loudness)


def decode_piece(path: Path) -> AudioSegment:
    """Decode one synthesised piece (WAV in-process, anything else through ffmpeg)."""
    try:
        return AudioSegment.from_file(path)
    except (CouldntDecodeError, OSError, IndexError) as exc:
        raise AudioError(f"cannot decode synthesised audio: {str(exc)[-300:]}") from exc


def assemble_speech(
    speech: AudioSegment, *, dest: Path, params: AssemblyParams, loudness: float | None = UNMEASURED
) -> int:
    """Frame one speech segment as an announcement (see the module doc), encode it to dest, measure it."""
    frame_rate = speech.frame_rate
    speech = speech.set_channels(1).set_sample_width(SAMPLE_WIDTH).fade_in(params.fade_ms)
    speech = speech.fade_out(params.fade_ms)
    gain = 0.0
    target = params.target_lufs
    if target is not None:
        measured = integrated_loudness(speech) if loudness is not None and math.isnan(loudness) else loudness
        if measured is not None:
            gain = target - measured

    def silence(ms: int) -> AudioSegment:
        return AudioSegment.silent(duration=ms, frame_rate=frame_rate)

    parts = [silence(params.lead_in_ms)]
    if params.chime:
        parts += [_level_chime(frame_rate, target, gain), silence(CHIME_GAP_MS)]
    for i in range(params.repeat):
        if i:
            parts.append(silence(params.repeat_gap_ms))
        parts.append(speech)
    if params.closing_chime:
        parts += [silence(CHIME_GAP_MS), _level_chime(frame_rate, target, gain)]
    parts.append(silence(params.tail_ms))
    whole = concatenate(parts, frame_rate=frame_rate)

    # The speech gain is applied by ffmpeg on the way to the encoder (in float: no clipping before
    # the limiter); the chime was levelled relative to it.
    ceiling = 10 ** (params.peak_db / 20)
    peak_after = whole.max / whole.max_possible_amplitude * 10 ** (gain / 20)
    encode_mp3(
        whole,
        dest=dest,
        bitrate=params.bitrate,
        sample_rate=params.sample_rate,
        quality=params.lame_quality,
        gain_db=gain,
        limit=ceiling if peak_after > ceiling else None,
        title=params.title,
    )
    return probe_duration_ms(dest)


@functools.lru_cache(maxsize=8)
def chime(frame_rate: int) -> AudioSegment:
    """A two-tone "ding-dong" (E5 then C5, bell-like partials, decaying), 16-bit mono at frame_rate."""

    def bell(freq: float, ms: int) -> AudioSegment:
        tone = Sine(freq, sample_rate=frame_rate, bit_depth=16).to_audio_segment(ms, volume=-6.0)
        for partial, level in ((2.0, -16.0), (3.0, -26.0)):
            overtone = Sine(freq * partial, sample_rate=frame_rate, bit_depth=16)
            tone = tone.overlay(overtone.to_audio_segment(ms, volume=-6.0 + level))
        # pydub fades are linear in dB: an exponential decay, as a struck bell has.
        return tone.fade_in(8).fade(to_gain=-60.0, start=30, end=ms)

    ding, dong = bell(659.25, 900), bell(523.25, 1300)
    tail = AudioSegment.silent(duration=450 + len(dong) - len(ding), frame_rate=frame_rate)
    return concatenate([ding, tail], frame_rate=frame_rate).overlay(dong, position=450)


def _level_chime(frame_rate: int, target: float | None, speech_gain: float) -> AudioSegment:
    """The chime, pre-scaled so that after the speech gain it sits CHIME_BELOW_LU under the target."""
    sound = chime(frame_rate)
    if target is None:
        return sound
    wanted = target - CHIME_BELOW_LU - _chime_loudness(frame_rate)
    # Its peak is -6 dBFS: up to +5 dB of relative boost stays clear of clipping in 16 bits.
    return sound.apply_gain(min(wanted - speech_gain, 5.0))


@functools.lru_cache(maxsize=8)
def _chime_loudness(frame_rate: int) -> float:
    return integrated_loudness(chime(frame_rate)) or -20.0


_INTEGRATED = re.compile(r"Integrated loudness:\s*I:\s*(-?[\d.]+|-?inf) LUFS")


class LoudnessMeter:
    """EBU R128 integrated loudness of audio fed piece by piece, measured by one ffmpeg as it arrives.

    The speech is measured as it will be played (pieces and the gaps between them, one gating over
    the whole), while later pieces are still being synthesised: when the last piece arrives only
    that piece is left to measure. One process for the whole speech, because starting ffmpeg costs
    about 0.13 s here, twice what measuring a minute of speech costs.

    Use as a context manager; `feed` and `result` block (call them from a worker thread).
    ffmpeg's stderr goes to an unnamed temporary file, so a chatty ffmpeg can never fill a pipe
    and stall the writer.
    """

    def __init__(self, *, frame_rate: int, sample_width: int = SAMPLE_WIDTH) -> None:
        self.frame_rate = frame_rate
        self.sample_width = sample_width
        self._stderr = tempfile.TemporaryFile()
        args = [
            AudioSegment.converter, "-hide_banner", "-nostdin", "-nostats",
            "-f", f"s{sample_width * 8}le", "-ar", str(frame_rate), "-ch_layout", "mono", "-i", "pipe:0",
            "-af", "ebur128=framelog=verbose", "-f", "null", "-",
        ]  # fmt: skip
        try:
            self._proc = subprocess.Popen(
                args, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=self._stderr
            )
        except OSError as exc:
            self._stderr.close()
            raise AudioError(f"cannot measure loudness with {args[0]}: {exc}") from exc

    def __enter__(self) -> LoudnessMeter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def feed(self, segment: AudioSegment) -> None:
        """Measure this segment next (converted to the meter's rate, mono, sample width)."""
        uniform = segment.set_channels(1).set_sample_width(self.sample_width).set_frame_rate(self.frame_rate)
        assert self._proc.stdin is not None
        try:
            self._proc.stdin.write(uniform.raw_data)
        except (BrokenPipeError, ValueError) as exc:  # ffmpeg died, or result()/close() came first
            raise AudioError(f"loudness meter stopped: {self._stderr_text() or exc}") from exc

    def feed_silence(self, ms: int) -> None:
        self.feed(AudioSegment.silent(duration=ms, frame_rate=self.frame_rate))

    def result(self, timeout: float = ENCODE_TIMEOUT_S) -> float | None:
        """End the input and return the integrated loudness (LUFS); None when (near) silent."""
        assert self._proc.stdin is not None
        try:
            self._proc.stdin.close()
        except BrokenPipeError:
            pass  # died already; its exit code and message say why
        try:
            returncode = self._proc.wait(timeout)
        except subprocess.TimeoutExpired as exc:
            raise AudioError(f"loudness meter gave no result after {timeout:g} s") from exc
        done = subprocess.CompletedProcess(self._proc.args, returncode, b"", self._stderr_text().encode())
        return _parse_integrated(done, AudioSegment.converter)

    def close(self) -> None:
        """Stop ffmpeg if it still runs and drop its output (idempotent)."""
        if self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        if self._proc.stdin is not None and not self._proc.stdin.closed:
            try:
                self._proc.stdin.close()
            except BrokenPipeError:
                pass
        self._stderr.close()

    def _stderr_text(self) -> str:
        self._stderr.seek(0)
        return self._stderr.read().decode("utf-8", "replace")


def _parse_integrated(result: subprocess.CompletedProcess[bytes], program: str) -> float | None:
    stderr = result.stderr.decode("utf-8", "replace")
    found = _INTEGRATED.findall(stderr)
    if result.returncode != 0 or not found:
        raise AudioError(f"cannot measure loudness ({program} exit {result.returncode}): {stderr[-500:]}")
    value = float(found[-1])
    return value if value > SILENCE_LUFS else None


def integrated_loudness(segment: AudioSegment) -> float | None:
    """EBU R128 integrated loudness (LUFS) of a segment; None when it is (near) silent."""
    with LoudnessMeter(frame_rate=segment.frame_rate, sample_width=segment.sample_width) as meter:
        meter.feed(segment)
        return meter.result()


def _run_with_pcm(args: list[str], pcm: bytes) -> subprocess.CompletedProcess[bytes]:
    """Run ffmpeg with PCM on stdin.

    Fed from an unnamed temporary file, not ``input=``: `subprocess.run` writes a pipe 512 bytes
    per poll, which cost 0.3-0.6 s per 10 minutes of audio. The file has no name, so it cannot leak.
    """
    with tempfile.TemporaryFile() as feed:
        feed.write(pcm)
        feed.seek(0)
        return subprocess.run(args, stdin=feed, capture_output=True, timeout=ENCODE_TIMEOUT_S, check=False)


def encode_mp3(
    segment: AudioSegment,
    *,
    dest: Path,
    bitrate: str,
    sample_rate: int,
    quality: int = LAME_QUALITY,
    gain_db: float = 0.0,
    limit: float | None = None,
    title: str = "",
) -> None:
    """Encode a segment to a mono MP3 file with ffmpeg, resampling to sample_rate.

    ``gain_db`` is applied first (in float), then ``limit`` (0..1 of full scale) puts a peak limiter
    in front of the encoder; ``title`` becomes the ID3 title.

    Not ``AudioSegment.export``: that writes a WAV copy and an MP3 copy to the system temp dir and
    leaks both when ffmpeg fails or is missing. Here the PCM goes to ffmpeg's stdin and the MP3
    straight to dest (a staging file the caller removes on failure).
    """
    chain = [f"volume={gain_db:.3f}dB"] if gain_db else []
    if limit:
        chain.append(f"alimiter=limit={limit:.4f}:level=disabled:latency=1")
    filters = ["-af", ",".join(chain)] if chain else []
    tags = ["-metadata", f"title={title}", "-id3v2_version", "3"] if title else []
    args = [
        AudioSegment.converter, "-hide_banner", "-nostdin", "-loglevel", "error", "-y",
        "-f", f"s{segment.sample_width * 8}le", "-ar", str(segment.frame_rate),
        "-ac", str(segment.channels), "-i", "pipe:0",
        "-vn", "-map_metadata", "-1", *filters, *tags,
        "-c:a", "libmp3lame", "-b:a", bitrate, "-compression_level", str(quality), "-ar", str(sample_rate),
        "-ac", "1", "-f", "mp3", str(dest),
    ]  # fmt: skip
    try:
        result = _run_with_pcm(args, segment.raw_data)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise AudioError(f"cannot encode MP3 with {args[0]}: {exc}") from exc
    if result.returncode != 0:
        message = result.stderr.decode("utf-8", "replace").strip()
        raise AudioError(f"cannot encode MP3 ({args[0]} exit {result.returncode}): {message}")


def concatenate(
    segments: Sequence[AudioSegment], *, frame_rate: int, sample_width: int = SAMPLE_WIDTH
) -> AudioSegment:
    """Join segments end to end with no crossfade, copying the samples once.

    ``sum()`` / repeated ``+`` copies the growing result every time (quadratic for long notices).
    """
    uniform = [s.set_channels(1).set_sample_width(sample_width).set_frame_rate(frame_rate) for s in segments]
    return AudioSegment(
        data=b"".join(s.raw_data for s in uniform),
        sample_width=sample_width,
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


# ffprobe format names of the recordings we accept: MP3, WAV, and M4A (AAC/ALAC in MP4).
UPLOAD_FORMATS = {"mp3": "mp3", "wav": "wav", "mov,mp4,m4a,3gp,3g2,mj2": "m4a"}


# Audio codecs accepted inside those containers.
UPLOAD_CODECS = frozenset(
    {"mp3", "aac", "alac", "pcm_u8", "pcm_s16le", "pcm_s24le", "pcm_s32le", "pcm_f32le", "pcm_f64le",
     "pcm_alaw", "pcm_mulaw"}
)  # fmt: skip
UPLOAD_SAMPLE_RATES = (8000, 96000)  # Hz, inclusive: telephone to studio recordings
UPLOAD_MAX_CHANNELS = 8
# ffmpeg decodes at many times real time; an hour of audio in well under a minute here.
TRANSCODE_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class Probe:
    kind: str  # mp3 | wav | m4a
    codec: str
    duration_s: float
    sample_rate: int = 0
    channels: int = 0


def probe_upload(path: Path, *, max_seconds: float) -> Probe:
    """Check with ffprobe that a file is an MP3, WAV or M4A recording with sound; NotAudio if not."""
    args = [
        "ffprobe", "-v", "error", "-print_format", "json", "-show_format",
        "-show_entries", "stream=codec_type,codec_name,duration,sample_rate,channels", str(path),
    ]  # fmt: skip
    try:
        result = subprocess.run(args, capture_output=True, text=True, timeout=PROBE_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise AudioError(f"ffprobe failed: {exc}") from exc
    if result.returncode != 0:
        raise NotAudio("not an audio file (ffprobe cannot read it)")
    info = json.loads(result.stdout or "{}")
    kind = UPLOAD_FORMATS.get(info.get("format", {}).get("format_name", ""))
    streams = [s for s in info.get("streams", []) if s.get("codec_type") == "audio"]
    if kind is None or not streams:
        name = info.get("format", {}).get("format_long_name") or "unknown format"
        raise NotAudio(f"not an MP3, WAV or M4A recording ({name})")
    video = [s for s in info.get("streams", []) if s.get("codec_type") == "video"]
    # Cover art in an MP3/M4A is a picture stream; a film is not a recording.
    if any(s.get("codec_name") not in ("mjpeg", "png") for s in video):
        raise NotAudio("the file has a video track; upload the sound only")
    if len(streams) > 1:
        raise NotAudio("the file has more than one audio track")
    stream = streams[0]
    codec = stream.get("codec_name", "")
    if codec not in UPLOAD_CODECS:
        raise NotAudio(f"unsupported audio codec {codec!r}")
    rate, channels = _int(stream.get("sample_rate")), _int(stream.get("channels"))
    if not UPLOAD_SAMPLE_RATES[0] <= rate <= UPLOAD_SAMPLE_RATES[1]:
        raise NotAudio(
            f"sample rate {rate} Hz is outside {UPLOAD_SAMPLE_RATES[0]}-{UPLOAD_SAMPLE_RATES[1]} Hz"
        )
    if not 1 <= channels <= UPLOAD_MAX_CHANNELS:
        raise NotAudio(f"{channels} channels; 1 to {UPLOAD_MAX_CHANNELS} are accepted")
    # Both figures are header-based estimates (decode() measures the truth): take the longer.
    durations = [_float(info["format"].get("duration")), _float(stream.get("duration"))]
    duration = max(durations)
    if duration <= 0:
        raise NotAudio("the recording has no length")
    if duration > max_seconds:
        raise NotAudio(f"the recording is {duration:.0f} s long; at most {max_seconds:.0f} s are accepted")
    return Probe(kind=kind, codec=codec, duration_s=duration, sample_rate=rate, channels=channels)


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def _float(value: Any) -> float:
    try:
        result = float(value)
    except (TypeError, ValueError):
        return 0.0
    return result if math.isfinite(result) else 0.0


def transcode_upload(path: Path, dest: Path, *, frame_rate: int, max_seconds: float) -> int:
    """Decode a recording with ffmpeg, streaming to a 16-bit mono WAV file `dest` at `frame_rate`,
    and return its true length in ms; NotAudio if it is longer than `max_seconds`.

    The header's duration (what `probe_upload` read) can lie: an MP3 whose first frame says 1 s can
    hold hours. ffmpeg is told to stop one second past the limit (`-t`), so neither the disk file
    nor anything in this process grows with what the file really holds.
    """
    args = [
        AudioSegment.converter, "-hide_banner", "-nostdin", "-loglevel", "error", "-y",
        "-i", str(path), "-map", "0:a:0", "-vn", "-ac", "1", "-ar", str(frame_rate),
        "-c:a", "pcm_s16le", "-t", f"{max_seconds + 1:.3f}", "-f", "wav", str(dest),
    ]  # fmt: skip
    try:
        result = subprocess.run(args, capture_output=True, timeout=TRANSCODE_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired as exc:
        raise NotAudio("decoding the recording took too long") from exc
    except OSError as exc:
        raise AudioError(f"ffmpeg failed: {exc}") from exc
    if result.returncode != 0:
        raise NotAudio(f"cannot decode the recording: {result.stderr.decode('utf-8', 'replace')[-300:]}")
    duration_ms = probe_duration_ms(dest)
    if duration_ms > max_seconds * 1000:
        raise NotAudio(f"the recording is longer than the {max_seconds:.0f} s accepted")
    if duration_ms <= 0:
        raise NotAudio("the recording has no length")
    return duration_ms


def decode(path: Path, *, frame_rate: int, max_seconds: float) -> AudioSegment:
    """Decode a recording to 16-bit mono PCM at `frame_rate`, through a WAV file that ffmpeg
    writes (`transcode_upload`): at most `max_seconds` of it is ever read into memory."""
    wav = path.with_name(path.name + ".pcm.wav")
    try:
        transcode_upload(path, wav, frame_rate=frame_rate, max_seconds=max_seconds)
        try:
            segment = AudioSegment.from_wav(wav)
        except (CouldntDecodeError, OSError, IndexError) as exc:
            raise NotAudio(f"cannot decode the recording: {str(exc)[-300:]}") from exc
    finally:
        wav.unlink(missing_ok=True)
    return segment.set_channels(1).set_sample_width(SAMPLE_WIDTH)
