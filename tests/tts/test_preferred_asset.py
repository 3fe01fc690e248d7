"""A preview made offline stays what airs when the online engine comes back (`prefer_asset_id`),
and the speech-settings shape gives preview and broadcast the same cache key."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import edge_tts.communicate
import edge_tts.voices
import pytest
from sqlalchemy.orm import Session

from core.db import Base, make_engine, make_session_factory
from core.settings import Settings
from tests.tts.fake_edge import FakeEdge
from tts import edge, service
from tts.schemas import PreviewRequest, SpeechSettings

NOTICE = "各位村民请注意，明天上午八点到十二点停水检修，请提前储水。"


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


def test_an_offline_preview_is_aired_as_heard_once_edge_is_back(
    db: Session, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    speech = SpeechSettings(voice="zh-CN-XiaoxiaoNeural", rate="-20%", repeat=2, chime=True)
    # offline (tests/conftest.py points edge at a closed port): espeak makes the preview
    heard = service.synthesize_sync(session=db, settings=settings, text=NOTICE, **speech.options())
    assert heard.asset.engine == "espeak" and heard.cached is False

    with FakeEdge() as fake:
        monkeypatch.setattr(edge_tts.communicate, "WSS_URL", fake.wss_url)
        monkeypatch.setattr(edge_tts.voices, "VOICE_LIST", fake.voices_url)
        edge.reset_health()

        aired = service.synthesize_sync(
            session=db, settings=settings, text=NOTICE, prefer_asset_id=heard.asset.id, **speech.options()
        )
        assert (aired.asset.id, aired.cached) == (heard.asset.id, True)
        assert fake.requests == []  # the neural voice was not asked: staff approved what they heard

        # a preferred asset of other settings is not what this request sounds like: ignored
        other = SpeechSettings(voice="zh-CN-XiaoxiaoNeural", rate="-20%", repeat=2)
        fresh = service.synthesize_sync(
            session=db, settings=settings, text=NOTICE, prefer_asset_id=heard.asset.id, **other.options()
        )
        assert fresh.asset.id != heard.asset.id and fresh.asset.engine == "edge"

        # without a preference the online voice replaces offline audio, as documented
        online = service.synthesize_sync(session=db, settings=settings, text=NOTICE, **speech.options())
        assert online.asset.engine == "edge" and online.asset.id != heard.asset.id


def test_flat_and_nested_preview_settings_are_one_request() -> None:
    flat = PreviewRequest.model_validate({"text": NOTICE, "rate": "-20%", "pitch": "+5Hz", "chime": True})
    nested = PreviewRequest.model_validate(
        {"text": NOTICE, "speech": {"rate": "-20%", "pitch": "+5Hz", "chime": True}}
    )
    assert flat == nested
    assert nested.speech.options() == {
        "voice": None, "rate": -20, "volume": 0, "pitch": 5, "repeat": 1, "chime": True,
        "closing_chime": False,
    }  # fmt: skip
    # shown as they are written, so a stored item can be sent back unchanged
    assert SpeechSettings.of(rate=-20, pitch=5, chime=True) == nested.speech
    assert nested.speech.model_dump(mode="json")["rate"] == "-20%"
