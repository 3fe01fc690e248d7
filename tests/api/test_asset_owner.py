"""Audio assets belong to the areas they were made for: a township's staff cannot air, by its id,
another township's recording (before: 201 for both the broadcast and the playlist)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from core.db import make_engine, make_session_factory, session_scope
from tests.api import test_scoping
from tests.api.conftest import ADMIN, STAFF
from tests.api.test_scoping import HL1, LC1, OTHER_STAFF
from tts import service as tts_service

NOTICE = "各位村民请注意，今晚八点开会。"
server = test_scoping.server  # two townships, a staff user in each


@pytest.fixture
def database_url(sqlite_url):
    """SQLite only: the rule is plain rows (the migration runs on both in tests/core)."""
    return sqlite_url


def recording(tmp_path: Path) -> Path:
    wav = tmp_path / "录音.wav"
    subprocess.run(["espeak-ng", "-v", "cmn", "-w", str(wav), "会龙镇的通知。"], check=True)
    return wav


def broadcast(c, asset_id: int, village: str):
    return c.post(
        "/api/v1/broadcasts",
        json={"title": "通知", "asset_id": asset_id, "areas": [village], "submit": False},
    )


def playlist(c, asset_id: int):
    return c.post(
        "/api/v1/playlists", json={"name": "节目", "items": [{"kind": "audio", "asset_id": asset_id}]}
    )


def test_a_township_cannot_air_another_townships_assets(server, tmp_path):
    wav = recording(tmp_path)
    with server.client(server.login(*OTHER_STAFF)) as other:
        with open(wav, "rb") as f:
            uploaded = other.post("/api/v1/tts/upload", files={"file": ("录音.wav", f, "audio/wav")})
        assert uploaded.status_code == 201, uploaded.text
        with open(wav, "rb") as f:
            item = other.post("/api/v1/playlists/audio", files={"file": ("录音.wav", f, "audio/wav")})
        assert item.status_code == 201, item.text
        previewed = other.post("/api/v1/tts/preview", json={"text": NOTICE})
        assert previewed.status_code == 200, previewed.text
        theirs = [uploaded.json()["asset_id"], item.json()["id"], previewed.json()["asset_id"]]
        for asset_id in theirs:  # their own area may
            assert broadcast(other, asset_id, HL1).status_code == 201
            assert playlist(other, asset_id).status_code == 201

    with server.client(server.login(*STAFF)) as staff:
        for asset_id in theirs:
            for r in (broadcast(staff, asset_id, LC1), playlist(staff, asset_id)):
                assert r.status_code == 403, r.text
                assert r.json()["reason"] == "area"
        mine = staff.post(
            "/api/v1/playlists", json={"name": "我的", "items": [{"kind": "text", "text": NOTICE}]}
        )
        assert mine.status_code == 201
        r = staff.patch(
            f"/api/v1/playlists/{mine.json()['id']}",
            json={"items": [{"kind": "audio", "asset_id": theirs[0]}]},
        )
        assert r.status_code == 403 and r.json()["reason"] == "area"

        # Making the same audio themselves (the cache hands back the same asset) makes it theirs too.
        same = staff.post("/api/v1/tts/preview", json={"text": NOTICE})
        assert same.json()["asset_id"] == theirs[2]
        assert broadcast(staff, theirs[2], LC1).status_code == 201

    with server.client(server.login(*ADMIN)) as admin:  # unbound: every asset
        assert broadcast(admin, theirs[0], LC1).status_code == 201


def test_assets_made_before_owners_are_for_unbound_users_only(server, tmp_path):
    engine = make_engine(server.settings.database_url)
    with session_scope(make_session_factory(engine)) as s:  # as the scheduler or an old version made it
        asset_id = tts_service.store_recording_sync(
            session=s, settings=server.settings, path=recording(tmp_path)
        ).asset.id
    engine.dispose()
    with server.client(server.login(*STAFF)) as staff:
        r = broadcast(staff, asset_id, LC1)
        assert r.status_code == 403 and r.json()["reason"] == "area"
    with server.client(server.login(*ADMIN)) as admin:
        assert broadcast(admin, asset_id, LC1).status_code == 201
