"""Synthesis end to end: real espeak-ng, real ffmpeg/ffprobe, a real SQLite database."""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from core.db import Base, make_engine, make_session_factory
from core.settings import Settings
from tts import audio, service, store
from tts.engines import EngineError, EspeakEngine
from tts.models import AudioAsset
from tts.text import TextError

NOTICE = "各位村民请注意，今年城乡居民医保缴费截止日期为十二月三十一日。"
# About 100 characters: the size of a typical village notice.
NOTICE_100 = (
    "各位村民请注意，今年城乡居民医保缴费截止日期为十二月三十一日。"
    "请大家及时到村委会或者通过手机缴纳，不要错过时间。"
    "如有疑问，请拨打村委会电话咨询。谢谢大家的配合！"
)


def ffprobe_ms(path: Path) -> int:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0", str(path)],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return round(float(out) * 1000)


def mean_volume_db(path: Path) -> float:
    err = subprocess.run(
        ["ffmpeg", "-hide_banner", "-nostats", "-i", str(path), "-af", "volumedetect", "-f", "null", "-"],
        capture_output=True, text=True, check=True,
    ).stderr  # fmt: skip
    match = re.search(r"mean_volume: (-?[\d.]+) dB", err)
    assert match, err
    return float(match.group(1))


def stream_info(path: Path) -> str:
    return subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "stream=codec_name,sample_rate,channels",
         "-of", "csv=p=0", str(path)],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip


def files_in(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.is_file()) if directory.exists() else []


def path_with(tmp_path: Path, *programs: str) -> str:
    """A PATH holding only these programs (symlinked), to take the others away."""
    bin_dir = tmp_path / ("bin-" + "-".join(programs) if programs else "bin-empty")
    bin_dir.mkdir()
    for program in programs:
        found = shutil.which(program)
        assert found, program
        (bin_dir / program).symlink_to(found)
    return str(bin_dir)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data")


@pytest.fixture
def factory(settings: Settings) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(settings.database_url)
    Base.metadata.create_all(engine)
    yield make_session_factory(engine)
    engine.dispose()


@pytest.fixture
def db(factory: sessionmaker[Session]) -> Iterator[Session]:
    with factory() as session:
        yield session


@pytest.fixture
def private_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Route the process temp dir to an empty directory, to see what is left behind."""
    directory = tmp_path / "systmp"
    directory.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(directory))
    return directory


def test_notice_becomes_a_stored_audible_mp3(db: Session, settings: Settings) -> None:
    started = time.perf_counter()
    result = service.synthesize_sync(session=db, settings=settings, text=NOTICE)
    elapsed = time.perf_counter() - started
    asset = result.asset
    print(f"\n{len(NOTICE)} chars -> {asset.duration_ms} ms of audio in {elapsed:.2f} s")

    assert not result.cached
    assert result.path == store.path_for(settings.audio_dir, asset.sha256)
    assert result.path.is_file()
    data = result.path.read_bytes()
    assert hashlib.sha256(data).hexdigest() == asset.sha256
    assert len(data) == asset.size_bytes
    assert asset.mime_type == "audio/mpeg"
    assert (asset.engine, asset.voice, asset.text) == ("espeak", "cmn", NOTICE)
    assert stream_info(result.path) == "mp3,24000,1"

    measured = ffprobe_ms(result.path)
    assert measured > 2000
    assert abs(measured - asset.duration_ms) <= 100
    assert mean_volume_db(result.path) > -40.0
    # Lead-in silence is there for the amplifiers to wake up.
    assert asset.duration_ms > audio.LEAD_IN_MS + audio.TAIL_MS + 2000

    # Committed: another session sees it, and the lookups find it.
    with Session(db.get_bind()) as other:
        assert service.get_asset(session=other, asset_id=asset.id).sha256 == asset.sha256
        assert service.get_by_sha256(session=other, sha256=asset.sha256).id == asset.id
    assert service.get_by_sha256(session=db, sha256="../../etc/passwd") is None
    assert files_in(settings.audio_dir) == [result.path]


def test_identical_request_is_served_from_cache_without_espeak(
    db: Session, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = service.synthesize_sync(session=db, settings=settings, text=NOTICE)
    before = first.path.stat().st_mtime_ns

    # Same text written differently (half-width comma, stray spaces): same cache entry.
    # espeak-ng is taken off PATH, so a synthesis would fail loudly.
    monkeypatch.setenv("PATH", path_with(tmp_path, "ffmpeg", "ffprobe"))
    assert not EspeakEngine().available()
    started = time.perf_counter()
    second = service.synthesize_sync(
        session=db, settings=settings, text="  各位村民请注意,今年城乡居民医保缴费截止日期为十二月三十一日。 "
    )
    print(f"\ncache hit in {(time.perf_counter() - started) * 1000:.1f} ms")

    assert second.cached
    assert second.asset.id == first.asset.id
    assert second.path == first.path
    assert second.path.stat().st_mtime_ns == before
    assert db.scalar(select(func.count()).select_from(AudioAsset)) == 1


def test_other_voice_or_speed_is_another_asset(db: Session, settings: Settings) -> None:
    base = service.synthesize_sync(session=db, settings=settings, text=NOTICE)
    cantonese = service.synthesize_sync(session=db, settings=settings, text=NOTICE, voice="yue")
    slower = service.synthesize_sync(session=db, settings=settings, text=NOTICE, rate=-30)

    ids = {base.asset.id, cantonese.asset.id, slower.asset.id}
    assert len(ids) == 3
    assert not cantonese.cached and not slower.cached
    assert cantonese.asset.voice == "yue"
    assert len({base.asset.sha256, cantonese.asset.sha256, slower.asset.sha256}) == 3
    # Slower speech for villagers really is slower.
    assert slower.asset.duration_ms > base.asset.duration_ms * 1.2
    assert len(files_in(settings.audio_dir)) == 3


def test_settings_that_change_the_audio_change_the_cache_key(db: Session, settings: Settings) -> None:
    engine = EspeakEngine()
    key = service.cache_key(prepared_text=NOTICE, engine=engine, voice="cmn", rate=0, settings=settings)
    other_bitrate = settings.model_copy(
        update={"audio": settings.audio.model_copy(update={"bitrate": "48k"})}
    )
    faster = EspeakEngine(speed_wpm=170)
    assert key != service.cache_key(
        prepared_text=NOTICE, engine=engine, voice="cmn", rate=0, settings=other_bitrate
    )
    assert key != service.cache_key(
        prepared_text=NOTICE, engine=faster, voice="cmn", rate=0, settings=settings
    )
    assert key == service.cache_key(
        prepared_text=NOTICE, engine=engine, voice="cmn", rate=0, settings=settings
    )


@pytest.mark.parametrize("text", ["", "   ", "\n\t\u3000", "。。！"])
def test_empty_text_is_refused(db: Session, settings: Settings, text: str) -> None:
    with pytest.raises(TextError):
        service.synthesize_sync(session=db, settings=settings, text=text)
    assert db.scalar(select(func.count()).select_from(AudioAsset)) == 0


def test_missing_espeak_fails_clearly_and_leaves_nothing(
    db: Session, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, private_tmp: Path
) -> None:
    monkeypatch.setenv("PATH", path_with(tmp_path, "ffmpeg", "ffprobe"))
    with pytest.raises(EngineError, match=r"espeak-ng.*not found on PATH.*install"):
        service.synthesize_sync(session=db, settings=settings, text=NOTICE_100 * 5)
    assert files_in(settings.audio_dir) == []
    assert files_in(private_tmp) == []
    assert db.scalar(select(func.count()).select_from(AudioAsset)) == 0


def test_failing_encoder_leaves_no_half_written_file(
    db: Session, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, private_tmp: Path
) -> None:
    monkeypatch.setenv("PATH", path_with(tmp_path, "espeak-ng"))  # no ffmpeg, no ffprobe
    with pytest.raises(audio.AudioError, match="ffmpeg"):
        service.synthesize_sync(session=db, settings=settings, text=NOTICE)
    assert files_in(settings.audio_dir) == []
    assert files_in(private_tmp) == []
    assert db.scalar(select(func.count()).select_from(AudioAsset)) == 0


def test_lost_file_is_synthesised_again(db: Session, settings: Settings) -> None:
    first = service.synthesize_sync(session=db, settings=settings, text=NOTICE)
    first.path.unlink()
    again = service.synthesize_sync(session=db, settings=settings, text=NOTICE)
    assert not again.cached
    assert again.asset.id == first.asset.id
    assert again.path.is_file()
    assert hashlib.sha256(again.path.read_bytes()).hexdigest() == again.asset.sha256


def test_long_notice_is_split_and_spoken_in_full(db: Session, settings: Settings) -> None:
    short_started = time.perf_counter()
    short = service.synthesize_sync(session=db, settings=settings, text=NOTICE_100)
    short_s = time.perf_counter() - short_started
    copies = 25
    long_text = "\n".join([NOTICE_100] * copies)
    long_started = time.perf_counter()
    long = service.synthesize_sync(session=db, settings=settings, text=long_text)
    long_s = time.perf_counter() - long_started
    print(
        f"\n{len(NOTICE_100)} chars -> {short.asset.duration_ms} ms in {short_s:.2f} s; "
        f"{len(long_text)} chars -> {long.asset.duration_ms} ms in {long_s:.2f} s"
    )
    assert len(long_text) >= 2000

    padding = audio.LEAD_IN_MS + audio.TAIL_MS
    speech_short = short.asset.duration_ms - padding
    speech_long = long.asset.duration_ms - padding - (copies - 1) * audio.PIECE_GAP_MS
    assert speech_long == pytest.approx(copies * speech_short, rel=0.05)
    assert abs(ffprobe_ms(long.path) - long.asset.duration_ms) <= 100
    assert mean_volume_db(long.path) > -40.0


def test_async_callers_await_synthesize(db: Session, settings: Settings) -> None:
    async def job() -> service.SynthesisResult:
        # What an APScheduler async job does; the loop keeps ticking while espeak/ffmpeg work.
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        task = asyncio.create_task(ticker())
        result = await service.synthesize(session=db, settings=settings, text=NOTICE_100)
        task.cancel()
        assert ticks > 5, "the event loop was blocked during synthesis"
        with pytest.raises(RuntimeError, match="await synthesize"):
            service.synthesize_sync(session=db, settings=settings, text=NOTICE_100)
        return result

    result = asyncio.run(job())
    assert not result.cached
    assert result.path.is_file()


def test_concurrent_identical_requests_store_one_asset(
    factory: sessionmaker[Session], settings: Settings
) -> None:
    barrier = threading.Barrier(2)
    results: list[service.SynthesisResult] = []
    errors: list[BaseException] = []

    def request() -> None:
        try:
            with factory() as session:
                barrier.wait()
                results.append(service.synthesize_sync(session=session, settings=settings, text=NOTICE))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=request) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    assert len(results) == 2
    assert results[0].asset.id == results[1].asset.id
    with factory() as session:
        assert session.scalar(select(func.count()).select_from(AudioAsset)) == 1
        asset = session.scalars(select(AudioAsset)).one()
    assert files_in(settings.audio_dir) == [store.path_for(settings.audio_dir, asset.sha256)]
    assert os.path.getsize(results[0].path) == asset.size_bytes
