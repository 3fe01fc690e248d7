"""The edge engine through the real edge-tts client, against a local fake edge service.

Covers the fallback chain as a user meets it: a normal synthesis, a service that stalls
mid-stream, one that answers 403, one that is briefly overloaded, and both engines failing.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from core.db import Base, make_engine, make_session_factory
from core.settings import Settings
from tests.tts.fake_edge import FakeEdge
from tests.tts.helpers import ffprobe_ms, files_in
from tts import edge, service
from tts.exceptions import SynthesisFailed
from tts.models import AudioAsset

NOTICE = "各位村民请注意，今年城乡居民医保缴费截止日期为12月31日，请拨打12345咨询。"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", tts={"edge_timeout_s": 2.0})


@pytest.fixture
def db(settings: Settings) -> Iterator[Session]:
    engine = make_engine(settings.database_url)
    Base.metadata.create_all(engine)
    with make_session_factory(engine)() as session:
        yield session
    engine.dispose()


@pytest.fixture(autouse=True)
def _quick_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(edge, "BACKOFF_S", 0.01)


def count(db: Session) -> int:
    return db.scalar(select(func.count()).select_from(AudioAsset))


def test_edge_voice_is_synthesised_by_the_edge_service(db: Session, settings: Settings, fake_edge: FakeEdge):
    result = service.synthesize_sync(
        session=db, settings=settings, text=NOTICE, voice="zh-CN-liaoning-XiaobeiNeural", rate=-20, pitch=5
    )
    asset = result.asset
    assert (asset.engine, asset.voice, asset.requested_engine) == (
        "edge",
        "zh-CN-liaoning-XiaobeiNeural",
        "edge",
    )
    assert asset.fallback_reason is None and result.fallback_reason is None
    assert (asset.rate, asset.pitch) == (-20, 5)
    [request] = fake_edge.requests
    assert request.voice == "Microsoft Server Speech Text to Speech Voice (zh-CN-liaoning, XiaobeiNeural)"
    assert (request.rate, request.pitch) == ("-20%", "+5Hz")
    assert request.output_format == "audio-24khz-48kbitrate-mono-mp3"
    # The service is sent the text as spoken: numbers already in words.
    assert "十二月三十一日" in request.text and "幺二三四五" in request.text
    assert ffprobe_ms(result.path) > 3000

    again = service.synthesize_sync(
        session=db, settings=settings, text=NOTICE, voice="zh-CN-liaoning-XiaobeiNeural", rate=-20, pitch=5
    )
    assert again.cached and again.asset.id == asset.id
    assert len(fake_edge.requests) == 1  # no second synthesis


def test_long_notice_is_cut_at_sentence_ends_under_the_service_limit(
    db: Session, settings: Settings, fake_edge: FakeEdge
):
    sentence = "各位村民请注意，今年城乡居民医保缴费工作已经开始，请大家按时缴纳，不要错过时间！"
    text = sentence * 60  # ~2,400 characters, ~7,000 UTF-8 bytes
    # The fake makes real MP3 with espeak-ng + ffmpeg: allow it more than the stall tests' 2 s.
    patient = settings.model_copy(update={"tts": settings.tts.model_copy(update={"edge_timeout_s": 30.0})})
    result = service.synthesize_sync(session=db, settings=patient, text=text, voice="zh-CN-XiaoxiaoNeural")
    assert result.asset.engine == "edge"
    assert len(fake_edge.requests) >= 3
    for request in fake_edge.requests:
        assert len(request.text.encode("utf-8")) < 4096
        assert request.text.endswith("！")
    assert "".join(r.text for r in fake_edge.requests) == text


def test_stalled_stream_times_out_and_espeak_takes_over(db: Session, settings: Settings, fake_edge: FakeEdge):
    fake_edge.stall_after_frames = 1
    started = time.perf_counter()
    result = service.synthesize_sync(session=db, settings=settings, text=NOTICE)
    elapsed = time.perf_counter() - started
    asset = result.asset
    assert (asset.engine, asset.voice, asset.requested_engine) == ("espeak", "cmn", "edge")
    assert "edge: edge-tts: no complete answer within 2 s" in asset.fallback_reason
    assert result.fallback_reason == asset.fallback_reason
    assert elapsed < 6
    assert result.path.is_file()

    # Edge is now skipped without waiting again, and says why.
    started = time.perf_counter()
    other = service.synthesize_sync(session=db, settings=settings, text="请注意，明天上午停水。")
    assert time.perf_counter() - started < 1.5
    assert other.asset.engine == "espeak"
    assert "edge-tts unreachable, not retried for" in other.fallback_reason
    assert len(fake_edge.requests) == 1


def test_forbidden_is_retried_then_falls_back(db: Session, settings: Settings, fake_edge: FakeEdge):
    fake_edge.refuse_always = 403
    result = service.synthesize_sync(session=db, settings=settings, text=NOTICE)
    assert result.asset.engine == "espeak"
    assert "403" in result.asset.fallback_reason
    # Each of our 3 attempts (2 retries) is two handshakes: edge-tts retries a 403 once itself.
    assert fake_edge.handshakes == 6
    assert fake_edge.requests == []


def test_overloaded_service_is_retried_with_backoff(db: Session, settings: Settings, fake_edge: FakeEdge):
    fake_edge.refuse = [503, 429]
    result = service.synthesize_sync(session=db, settings=settings, text=NOTICE, voice="zh-CN-YunyangNeural")
    assert (result.asset.engine, result.asset.fallback_reason) == ("edge", None)
    assert fake_edge.handshakes == 3


def test_offline_default_chain_uses_espeak_quickly(db: Session, settings: Settings):
    # The autouse fixture points edge at a closed port: what no network looks like.
    started = time.perf_counter()
    result = service.synthesize_sync(session=db, settings=settings, text=NOTICE, voice="zh-HK-HiuGaaiNeural")
    assert time.perf_counter() - started < 3
    assert (result.asset.engine, result.asset.voice) == ("espeak", "yue")  # Cantonese stays Cantonese
    assert "cannot reach the service" in result.asset.fallback_reason


def test_both_engines_failing_is_one_clear_error_and_stores_nothing(
    db: Session, settings: Settings, fake_edge: FakeEdge, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    fake_edge.refuse_always = 503
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", str(bin_dir))  # no espeak-ng
    with pytest.raises(SynthesisFailed) as failed:
        service.synthesize_sync(session=db, settings=settings, text=NOTICE)
    reasons = dict(failed.value.reasons)
    assert set(reasons) == {"edge", "espeak"}
    assert "503" in reasons["edge"]
    assert "not found on PATH" in reasons["espeak"]
    assert files_in(settings.audio_dir) == []
    assert count(db) == 0


def test_espeak_only_chain_has_no_fallback(db: Session, tmp_path: Path):
    settings = Settings(data_dir=tmp_path / "data2", tts={"engine": "espeak", "fallback": []})
    engine = make_engine(settings.database_url)
    Base.metadata.create_all(engine)
    with make_session_factory(engine)() as session:
        result = service.synthesize_sync(session=session, settings=settings, text=NOTICE)
        assert (result.asset.engine, result.asset.requested_engine, result.asset.fallback_reason) == (
            "espeak", "espeak", None,
        )  # fmt: skip
    engine.dispose()
