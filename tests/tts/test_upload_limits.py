"""Uploaded recordings: limits checked by ffprobe, and the true length by ffmpeg, never by
decoding the whole file in Python (a header that lies about the length changes nothing)."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from core.db import Base, make_engine, make_session_factory
from core.settings import Settings
from tests.tts.helpers import files_in
from tts import audio, service
from tts.models import AudioAsset

LIMIT_S = 60
LONG_S = 1200  # 20 minutes of 8 kbit/s MP3: 1.2 MB


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        data_dir=tmp_path / "data", tts={"engine": "espeak", "fallback": []}, audio={"max_upload_s": LIMIT_S}
    )


@pytest.fixture
def db(settings: Settings) -> Iterator[Session]:
    engine = make_engine(settings.database_url)
    Base.metadata.create_all(engine)
    with make_session_factory(engine)() as session:
        yield session
    engine.dispose()


def _mp3(path: Path, seconds: float, *extra: str) -> Path:
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", f"sine=f=440:d={seconds}:sample_rate=8000",
         "-ac", "1", "-c:a", "libmp3lame", *extra, str(path)],
        check=True,
    )  # fmt: skip
    return path


def lying_mp3(tmp_path: Path) -> Path:
    """A 1 s VBR MP3 whose Xing header counts its frames, followed by 20 minutes of 8 kbit/s
    frames; the header's byte count is set to the whole file's, so ffprobe believes ~1 s."""
    head = _mp3(tmp_path / "head.mp3", 1, "-q:a", "9")
    tail = _mp3(tmp_path / "tail.mp3", LONG_S, "-b:a", "8k", "-write_xing", "0", "-id3v2_version", "0")
    data = bytearray(head.read_bytes() + tail.read_bytes())
    xing = data.find(b"Xing")
    flags = struct.unpack(">I", data[xing + 4 : xing + 8])[0]
    assert flags & 1 and flags & 2  # frames, then bytes
    data[xing + 12 : xing + 16] = struct.pack(">I", len(data))
    crafted = tmp_path / "notice.mp3"
    crafted.write_bytes(bytes(data))
    return crafted


def test_an_mp3_whose_header_claims_1_s_but_holds_20_minutes_is_refused(db, settings, tmp_path):
    crafted = lying_mp3(tmp_path)
    probe = audio.probe_upload(crafted, max_seconds=LIMIT_S)
    assert probe.duration_s < 2  # the lie works on ffprobe
    before = files_in(settings.audio_dir)
    with pytest.raises(audio.NotAudio, match="longer than the 60 s"):
        service.store_recording_sync(session=db, settings=settings, path=crafted, title="x")
    assert files_in(settings.audio_dir) == before
    assert db.scalar(select(func.count()).select_from(AudioAsset)) == 0
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".pcm.wav")] == []


def test_refusing_it_keeps_the_python_process_small(tmp_path):
    """Peak RSS of a fresh process that refuses the crafted file: decoding all 20 minutes at
    24 kHz in Python would take 57.6 MB of PCM (and pydub copies it); ffmpeg stops at the limit
    and this process reads nothing of it."""
    crafted = lying_mp3(tmp_path)
    script = f"""
import json, resource
from tts import audio
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    audio.decode({str(crafted)!r}, frame_rate=24000, max_seconds={LIMIT_S})
    refused = False
except audio.NotAudio:
    refused = True
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({{"refused": refused, "grew_kb": after - before}}))
"""
    script = script.replace(repr(str(crafted)), f"__import__('pathlib').Path({str(crafted)!r})")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["refused"] is True
    assert result["grew_kb"] < 16 * 1024, result


@pytest.mark.parametrize(
    ("lavfi", "codec", "why"),
    [
        ("sine=d=2:sample_rate=4000", "pcm_s16le", "sample rate 4000 Hz"),
        ("sine=d=2:sample_rate=8000", "adpcm_ms", "unsupported audio codec"),
    ],
)
def test_probe_refuses_rates_and_codecs_outside_the_limits(tmp_path, lavfi, codec, why):
    path = tmp_path / "x.wav"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-f", "lavfi", "-i", lavfi, "-c:a", codec, str(path)], check=True
    )
    with pytest.raises(audio.NotAudio, match=why):
        audio.probe_upload(path, max_seconds=LIMIT_S)


def test_an_honest_recording_within_the_limit_is_stored(db, settings, tmp_path):
    honest = _mp3(tmp_path / "ok.mp3", 5, "-b:a", "32k")
    result = service.store_recording_sync(session=db, settings=settings, path=honest, title="通知")
    assert result.asset.engine == "upload"
    assert result.path.is_file()
