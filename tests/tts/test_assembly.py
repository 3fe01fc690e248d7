"""The announcement as a listener hears it: chime, lead-in, repeats, loudness, title; and the cache."""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from core.clock import utcnow
from core.db import Base, make_engine, make_session_factory
from core.errors import InvalidInput
from core.settings import Settings
from tests.tts.helpers import ffprobe_ms, files_in, id3_title, loudness
from tts import audio, flows, service, store
from tts.engines import EngineError, get_engine
from tts.exceptions import SpeechInputError
from tts.models import AudioAsset

NOTICE = "各位村民请注意，明天上午八点到十点停水，请提前储水。"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    # espeak only: these tests are about assembly, not engines.
    return Settings(data_dir=tmp_path / "data", tts={"engine": "espeak", "fallback": []})


@pytest.fixture
def db(settings: Settings) -> Iterator[Session]:
    engine = make_engine(settings.database_url)
    Base.metadata.create_all(engine)
    with make_session_factory(engine)() as session:
        yield session
    engine.dispose()


def speak(db: Session, settings: Settings, **options) -> service.SynthesisResult:
    return service.synthesize_sync(session=db, settings=settings, text=NOTICE, **options)


def test_loudness_is_normalised_to_the_target_without_clipping(db: Session, settings: Settings) -> None:
    result = speak(db, settings)
    integrated, peak = loudness(result.path)
    print(f"\nintegrated {integrated} LUFS, peak {peak} dBFS (target {settings.audio.loudness_lufs})")
    assert integrated == pytest.approx(settings.audio.loudness_lufs, abs=1.0)
    assert peak <= settings.audio.peak_db + 0.5  # MP3 encoding overshoots a little
    assert id3_title(result.path) == NOTICE


def test_volume_moves_the_loudness(db: Session, settings: Settings) -> None:
    quiet = speak(db, settings, volume=-50)
    normal = speak(db, settings)
    assert quiet.asset.id != normal.asset.id and quiet.asset.volume == -50
    assert loudness(normal.path)[0] - loudness(quiet.path)[0] == pytest.approx(6.0, abs=1.0)


def test_chime_lead_in_and_repeats_shape_the_announcement(db: Session, settings: Settings) -> None:
    once = speak(db, settings)
    framed = speak(db, settings, repeat=3, chime=True, closing_chime=True)
    chime_ms = len(audio.chime(24000))
    speech_ms = once.asset.duration_ms - settings.audio.lead_in_ms - audio.TAIL_MS
    expected = (
        settings.audio.lead_in_ms
        + 2 * (chime_ms + audio.CHIME_GAP_MS)
        + 3 * speech_ms
        + 2 * settings.audio.repeat_gap_ms
        + audio.TAIL_MS
    )
    assert framed.asset.duration_ms == pytest.approx(expected, abs=150)
    assert abs(ffprobe_ms(framed.path) - framed.asset.duration_ms) <= 100
    # The chime does not make the whole louder than the target.
    assert loudness(framed.path)[0] == pytest.approx(settings.audio.loudness_lufs, abs=1.0)


def test_each_assembly_choice_is_its_own_cache_entry(
    db: Session, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    variants = [{}, {"repeat": 2}, {"chime": True}, {"closing_chime": True}, {"pitch": 10}, {"rate": -20}]
    first = [speak(db, settings, **v) for v in variants]
    assert len({r.asset.id for r in first}) == len(variants)
    assert not any(r.cached for r in first)

    monkeypatch.setenv("PATH", str(tmp_path))  # no espeak-ng, no ffmpeg: a synthesis would fail
    again = [speak(db, settings, **v) for v in variants]
    assert all(r.cached for r in again)
    assert [r.asset.id for r in again] == [r.asset.id for r in first]


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"rate": 200}, "rate"),
        ({"pitch": 99}, "pitch"),
        ({"volume": 300}, "volume"),
        ({"repeat": 0}, "repeat"),
        ({"voice": "zh-CN-NoSuchNeural"}, "voice"),
    ],
)
def test_bad_options_name_the_field(db: Session, settings: Settings, options: dict, field: str) -> None:
    with pytest.raises(SpeechInputError) as refused:
        speak(db, settings, **options)
    assert refused.value.field == f"speech.{field}"  # where requests carry it
    assert refused.value.setting == field
    assert isinstance(refused.value, InvalidInput) and not isinstance(refused.value, ValueError)
    assert db.scalar(select(func.count()).select_from(AudioAsset)) == 0


def test_recording_is_validated_and_normalised(db: Session, settings: Settings, tmp_path: Path) -> None:
    spoken = speak(db, settings, volume=-50)  # a quiet recording to start from
    m4a = tmp_path / "notice.m4a"
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(spoken.path), "-c:a", "aac", str(m4a)], check=True)
    result = service.store_recording_sync(session=db, settings=settings, path=m4a, title="停水通知")
    assert (result.asset.engine, result.asset.voice, result.asset.text) == ("upload", "m4a", "停水通知")
    assert loudness(result.path)[0] == pytest.approx(settings.audio.loudness_lufs, abs=1.0)
    assert id3_title(result.path) == "停水通知"
    again = service.store_recording_sync(session=db, settings=settings, path=m4a, title="停水通知")
    assert again.cached and again.asset.id == result.asset.id

    text_file = tmp_path / "notice.mp3"
    text_file.write_text("这不是音频文件" * 100)
    before = files_in(settings.audio_dir)
    with pytest.raises(audio.NotAudio):
        service.store_recording_sync(session=db, settings=settings, path=text_file)
    assert files_in(settings.audio_dir) == before


def test_cleanup_removes_only_old_unreferenced_assets(db: Session, settings: Settings) -> None:
    used = speak(db, settings)
    unused = speak(db, settings, repeat=2)
    fresh = speak(db, settings, repeat=3)
    old = utcnow() - timedelta(days=3)
    for result in (used, unused):
        result.asset.created_at = old
    db.commit()
    stray = store.path_for(settings.audio_dir, "f" * 64)  # a file no row names
    stray.parent.mkdir(parents=True, exist_ok=True)
    stray.write_bytes(b"x" * 10)
    os.utime(stray, (time.time() - 3 * 86400,) * 2)

    report = flows.cleanup(session=db, settings=settings, referenced_ids={used.asset.id})
    assert (report.assets_removed, report.files_removed, report.assets_kept_young) == (1, 2, 1)
    remaining = set(db.scalars(select(AudioAsset.id)))
    assert remaining == {used.asset.id, fresh.asset.id}
    assert used.path.is_file() and fresh.path.is_file()
    assert not unused.path.exists() and not stray.exists()


def espeak_wav(path: Path, text: str) -> Path:
    subprocess.run(["espeak-ng", "-v", "cmn", "-w", str(path), text], check=True)
    return path


def test_loudness_meter_fed_piece_by_piece_measures_the_joined_speech(tmp_path: Path) -> None:
    first = audio.decode_piece(espeak_wav(tmp_path / "a.wav", NOTICE))
    # A quieter piece at another rate: the meter converts it as `audio.concatenate` does.
    second = audio.decode_piece(espeak_wav(tmp_path / "b.wav", NOTICE)).apply_gain(-8.0).set_frame_rate(16000)
    with audio.LoudnessMeter(frame_rate=first.frame_rate) as meter:
        meter.feed(first)
        meter.feed_silence(audio.PIECE_GAP_MS)
        meter.feed(second)
        streamed = meter.result()
    gap = audio.AudioSegment.silent(duration=audio.PIECE_GAP_MS, frame_rate=first.frame_rate)
    joined = audio.concatenate([first, gap, second], frame_rate=first.frame_rate)
    joined.export(tmp_path / "joined.wav", format="wav")
    whole = loudness(tmp_path / "joined.wav")[0]
    print(f"\nstreamed {streamed} LUFS, joined file {whole} LUFS")
    assert streamed is not None
    assert streamed == pytest.approx(whole, abs=0.1)
    # Not the louder piece alone: the quiet one counted.
    assert streamed < loudness(tmp_path / "a.wav")[0] - 1.0


def test_loudness_meter_that_dies_or_cannot_start_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(audio.AudioSegment, "converter", "false")  # starts, reads nothing, exits 1
    meter = audio.LoudnessMeter(frame_rate=22050)
    with meter, pytest.raises(audio.AudioError, match="loudness"):
        for _ in range(50):  # the first writes may land in the pipe before it has exited
            meter.feed(audio.AudioSegment.silent(duration=1000, frame_rate=22050))
            time.sleep(0.02)
        meter.result()
    monkeypatch.setattr(audio.AudioSegment, "converter", "/nonexistent/ffmpeg")
    with pytest.raises(audio.AudioError, match="cannot measure loudness"):
        audio.LoudnessMeter(frame_rate=22050)


def test_failing_piece_stops_the_loudness_meter(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    meters: list[audio.LoudnessMeter] = []

    class Recorded(audio.LoudnessMeter):
        def __init__(self, **kwargs) -> None:
            super().__init__(**kwargs)
            meters.append(self)

    monkeypatch.setattr(audio, "LoudnessMeter", Recorded)
    espeak = get_engine("espeak", settings)

    class FailsOnThird:
        name, max_piece_chars = "flaky", 500

        async def synthesize(self, text: str, **kwargs) -> Path:
            if text == "third":
                await asyncio.sleep(0.5)  # the meter is running by now
                raise EngineError("flaky: gave up on the third piece")
            return await espeak.synthesize(NOTICE, **kwargs)

    with pytest.raises(EngineError, match="third piece"):
        asyncio.run(
            service._speak_pieces(
                FailsOnThird(), ["first", "second", "third", "fourth"], voice="cmn", rate=0, pitch=0,
                out_dir=tmp_path, measure_gap_ms=audio.PIECE_GAP_MS,
            )
        )  # fmt: skip
    assert len(meters) == 1
    assert meters[0]._proc.poll() is not None  # killed, not left running
