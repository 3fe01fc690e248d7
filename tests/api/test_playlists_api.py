"""Playlist and speech writes through the API are committed by their flows, not by the session dependency.

`api.deps.get_session` is replaced here by one that never commits (and rolls back at the end of
every request), as it will be once every write has a flow: whatever a request wrote must be seen
from a fresh session afterwards.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from api import deps
from core.db import make_engine, make_session_factory
from playlists.models import Playlist
from scheduler.models import AuditEntry
from tests.api.conftest import STAFF
from tts.models import AudioAsset

NOTICE = "各位村民请注意，明天停水一天。"


@pytest.fixture
def uncommitted(server) -> Iterator[None]:
    def session_without_commit(services: deps.ServicesDep) -> Iterator[Session]:
        session = services.session_factory()
        try:
            yield session
        finally:
            session.rollback()
            session.close()

    server.app.dependency_overrides[deps.get_session] = session_without_commit
    yield
    server.app.dependency_overrides.pop(deps.get_session, None)


@pytest.fixture
def fresh(server) -> Iterator[Session]:
    """A session of its own on the server's database: sees only what was committed."""
    engine = make_engine(server.settings.database_url)
    with make_session_factory(engine)() as session:
        yield session
    engine.dispose()


def _audit(fresh: Session, object_type: str, object_id: int) -> list[str]:
    query = select(AuditEntry.action).where(
        AuditEntry.object_type == object_type, AuditEntry.object_id == str(object_id)
    )
    return list(fresh.scalars(query.order_by(AuditEntry.id)))


def test_playlist_writes_are_committed_by_their_flows(server, uncommitted, fresh, tmp_path: Path) -> None:
    wav = tmp_path / "录音.wav"
    subprocess.run(["espeak-ng", "-v", "cmn", "-w", str(wav), "各位村民请注意。"], check=True)
    with server.client(server.login(*STAFF)) as c:
        with open(wav, "rb") as f:
            up = c.post("/api/v1/playlists/audio", files={"file": ("录音.wav", f, "audio/wav")})
        assert up.status_code == 201, up.text
        uploaded = up.json()["id"]
        assert fresh.get(AudioAsset, uploaded) is not None
        assert _audit(fresh, "audio_asset", uploaded) == ["uploaded"]

        body = {
            "name": "午间",
            "items": [{"kind": "audio", "asset_id": uploaded}, {"kind": "text", "text": NOTICE}],
        }
        created = c.post("/api/v1/playlists", json=body)
        assert created.status_code == 201, created.text
        pid = created.json()["id"]
        assert fresh.get(Playlist, pid).name == "午间"
        assert len(fresh.get(Playlist, pid).items) == 2

        patched = c.patch(f"/api/v1/playlists/{pid}", json={"name": "晚间", "repeat": 2})
        assert patched.status_code == 200, patched.text
        fresh.expire_all()
        assert (fresh.get(Playlist, pid).name, fresh.get(Playlist, pid).revision) == ("晚间", 2)

        assembled = c.post(f"/api/v1/playlists/{pid}/preview")
        assert assembled.status_code == 200, assembled.text
        assert fresh.get(AudioAsset, assembled.json()["id"]) is not None
        assert assembled.json()["url"].endswith(f"/media/{assembled.json()['sha256']}.mp3")

        assert c.delete(f"/api/v1/playlists/{pid}").status_code == 204
        fresh.expire_all()
        assert fresh.get(Playlist, pid) is None
        assert _audit(fresh, "playlist", pid) == ["created", "updated", "deleted"]

        missing = c.get(f"/api/v1/playlists/{pid}")
        assert missing.status_code == 404 and missing.json()["detail"] == f"no playlist {pid}"


def test_speech_preview_and_upload_are_committed_by_their_flows(
    server, uncommitted, fresh, tmp_path: Path
) -> None:
    wav = tmp_path / "录音.wav"
    subprocess.run(["espeak-ng", "-v", "cmn", "-w", str(wav), "各位村民请注意。"], check=True)
    with server.client(server.login(*STAFF)) as c:
        preview = c.post("/api/v1/tts/preview", json={"text": NOTICE, "speech": {"rate": "-20%"}})
        assert preview.status_code == 200, preview.text
        assert fresh.get(AudioAsset, preview.json()["asset_id"]).rate == -20
        assert preview.json()["url"] == f"/media/{preview.json()['sha256']}.mp3"
        with open(wav, "rb") as f:
            up = c.post("/api/v1/tts/upload", files={"file": ("录音.wav", f, "audio/wav")})
        assert up.status_code == 201, up.text
        assert fresh.get(AudioAsset, up.json()["asset_id"]).engine == "upload"
