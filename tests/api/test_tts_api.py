"""The speech API on a live server: voices, previews with fallback and cache, uploads, bad input."""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import edge_tts.communicate
import edge_tts.voices
import pytest

from tests.api.conftest import ADMIN, STAFF
from tests.live import free_port
from tests.tts.fake_edge import FakeEdge
from tts import edge, voices

NOTICE = "各位村民请注意，今年医保缴费截止日期为2024年12月31日，咨询电话0558-6512345。"


def audio_files(server) -> list[Path]:
    root = server.settings.audio_dir
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


@pytest.fixture(autouse=True)
def edge_offline(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No internet here: edge points at a closed port (connection refused, like a DNS failure)."""
    closed = free_port()
    monkeypatch.setattr(edge_tts.communicate, "WSS_URL", f"ws://127.0.0.1:{closed}/edge/v1?T=x")
    monkeypatch.setattr(edge_tts.voices, "VOICE_LIST", f"http://127.0.0.1:{closed}/voices/list?t=x")
    monkeypatch.setattr(edge, "BACKOFF_S", 0.01)
    edge.reset_health()
    voices.reset()
    yield
    edge.reset_health()
    voices.reset()


@pytest.fixture
def fake_edge(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeEdge]:
    with FakeEdge() as fake:
        monkeypatch.setattr(edge_tts.communicate, "WSS_URL", fake.wss_url)
        monkeypatch.setattr(edge_tts.voices, "VOICE_LIST", fake.voices_url)
        yield fake


def test_voices_say_which_work_offline_and_online(server, monkeypatch: pytest.MonkeyPatch) -> None:
    token = server.login(*STAFF)
    with server.client(token) as c:
        offline = {v["id"]: v for v in c.get("/api/v1/voices").json()}
    assert offline["zh-CN-liaoning-XiaobeiNeural"]["dialect"] == "东北话"
    assert offline["zh-CN-liaoning-XiaobeiNeural"]["available"] is False
    assert offline["cmn"]["available"] is True

    with FakeEdge() as fake:
        monkeypatch.setattr(edge_tts.voices, "VOICE_LIST", fake.voices_url)
        voices.reset()
        edge.reset_health()
        with server.client(token) as c:
            online = {v["id"]: v for v in c.get("/api/v1/voices").json()}
    assert online["zh-CN-liaoning-XiaobeiNeural"]["available"] is True
    assert online["zh-CN-sichuan-YunxiNeural"]["dialect"] == "四川话"
    with server.client() as c:
        assert c.get("/api/v1/voices").status_code == 401


def test_preview_offline_falls_back_says_so_and_is_cached(server) -> None:
    token = server.login(*STAFF)
    body = {"text": NOTICE, "voice": "zh-CN-XiaoxiaoNeural", "rate": "-20%", "repeat": 2, "chime": True}
    with server.client(token) as c:
        first = c.post("/api/v1/tts/preview", json=body)
        assert first.status_code == 200, first.text
        made = first.json()
        assert (made["engine"], made["voice"], made["requested_engine"]) == ("espeak", "cmn", "edge")
        assert "cannot reach the service" in made["fallback_reason"]
        assert made["cached"] is False and made["duration_ms"] > 10_000
        audio = c.get(made["url"])
        assert audio.status_code == 200 and audio.headers["content-type"] == "audio/mpeg"
        assert hashlib.sha256(audio.content).hexdigest() == made["sha256"] == made["url"][7:71]

        again = c.post("/api/v1/tts/preview", json=body).json()
        assert again["cached"] is True and again["asset_id"] == made["asset_id"]


def test_preview_through_edge_when_the_service_answers(server, fake_edge: FakeEdge) -> None:
    token = server.login(*ADMIN)
    with server.client(token) as c:
        r = c.post("/api/v1/tts/preview", json={"text": NOTICE, "voice": "zh-CN-shaanxi-XiaoniNeural"})
    assert r.status_code == 200, r.text
    assert (r.json()["engine"], r.json()["fallback_reason"]) == ("edge", None)
    assert fake_edge.requests[0].voice.endswith("(zh-CN-shaanxi, XiaoniNeural)")


def test_bad_preview_input_is_a_422_naming_the_field(server) -> None:
    token = server.login(*STAFF)
    good = {"text": NOTICE}
    cases = [
        ({"text": ""}, "text"),
        ({"text": " \u3000\n "}, "text"),
        ({"text": "一" * (server.settings.tts.max_chars + 1)}, "text"),
        ({**good, "voice": "zh-CN-NoSuchNeural"}, "voice"),
        ({**good, "rate": "10%"}, "rate"),
        ({**good, "rate": -20}, "rate"),
        ({**good, "rate": "-80%"}, "rate"),
        ({**good, "volume": "loud"}, "volume"),
        ({**good, "pitch": "+5"}, "pitch"),
        ({**good, "repeat": 9}, "repeat"),
        ({**good, "colour": "red"}, "colour"),
    ]
    with server.client(token) as c:
        for body, field in cases:
            r = c.post("/api/v1/tts/preview", json=body)
            assert r.status_code == 422, (body, r.text)
            locs = [e["loc"] for e in r.json()["detail"]]
            assert any(field in loc for loc in locs), (field, r.json())
    assert audio_files(server) == []


def test_both_engines_failing_is_a_503_with_reasons_and_nothing_stored(
    server, fake_edge: FakeEdge, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_edge.refuse_always = 503
    empty = tmp_path / "no-espeak"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    token = server.login(*STAFF)
    with server.client(token) as c:
        r = c.post("/api/v1/tts/preview", json={"text": NOTICE})
    assert r.status_code == 503, r.text
    reasons = {item["engine"]: item["reason"] for item in r.json()["detail"]["reasons"]}
    assert "503" in reasons["edge"] and "espeak-ng" in reasons["espeak"]
    assert audio_files(server) == []


def test_upload_of_a_recording_and_refusal_of_other_files(server, tmp_path: Path) -> None:
    wav = tmp_path / "录音.wav"
    subprocess.run(["espeak-ng", "-v", "cmn", "-w", str(wav), "各位村民请注意。"], check=True)
    token = server.login(*STAFF)
    with server.client(token) as c:
        with open(wav, "rb") as f:
            r = c.post(
                "/api/v1/tts/upload", files={"file": ("录音.wav", f, "audio/wav")}, data={"chime": "true"}
            )
        assert r.status_code == 201, r.text
        made = r.json()
        assert made["engine"] == "upload" and made["duration_ms"] > 2000
        assert c.get(made["url"]).status_code == 200
        stored = audio_files(server)

        fake = c.post(
            "/api/v1/tts/upload", files={"file": ("notice.mp3", b"<html>not audio</html>" * 50, "audio/mpeg")}
        )
        assert fake.status_code == 422, fake.text
        assert fake.json()["detail"][0]["loc"] == ["body", "file"]
        assert audio_files(server) == stored
