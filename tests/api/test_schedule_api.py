"""Playlists, schedule view with conflicts, quiet hours, stop-area and scoping, over HTTP."""

from __future__ import annotations

import io
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from pydub.generators import Sine

from core import users
from core.db import make_engine, make_session_factory, session_scope
from core.models import Role
from tests.api.conftest import ADMIN, LUCHENG, STAFF

SH = ZoneInfo("Asia/Shanghai")
VILLAGE = "341225100201"
APPROVER = ("lucheng_ap", "approver-password")


def _approver(server):
    engine = make_engine(server.settings.database_url)
    with session_scope(make_session_factory(engine)) as s:
        users.create_user(
            session=s, username=APPROVER[0], password=APPROVER[1], role=Role.approver, area_code=LUCHENG
        )
    engine.dispose()
    return server.login(*APPROVER)


def _wav(seconds: float = 1.0) -> bytes:
    buf = io.BytesIO()
    Sine(440).to_audio_segment(duration=int(seconds * 1000)).export(buf, format="wav")
    return buf.getvalue()


def test_playlists_crud_upload_and_preview(server):
    with server.client(server.login(*STAFF)) as c:
        up = c.post("/api/v1/playlists/audio", files={"file": ("chime.wav", _wav(), "audio/wav")})
        assert up.status_code == 201, up.text
        asset = up.json()
        # 1 s of tone, plus the lead-in (and short tail) silence every stored recording gets
        lead_in = server.settings.audio.lead_in_ms
        assert asset["engine"] == "upload" and 900 + lead_in < asset["duration_ms"] < 1600 + lead_in
        assert c.get(asset["url"].removeprefix(server.base_url)).status_code == 200
        bad = c.post("/api/v1/playlists/audio", files={"file": ("x.wav", b"not audio", "audio/wav")})
        assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["body", "file"]

        body = {
            "name": "早间",
            "items": [{"kind": "audio", "asset_id": asset["id"]}, {"kind": "text", "text": "请注意。"}],
            "repeat": 2,
            "gap_ms": 300,
        }
        created = c.post("/api/v1/playlists", json=body)
        assert created.status_code == 201, created.text
        pid = created.json()["id"]
        assert [i["kind"] for i in created.json()["items"]] == ["audio", "text"]
        preview = c.post(f"/api/v1/playlists/{pid}/preview").json()
        assert preview["engine"] == "playlist" and preview["duration_ms"] > 2 * 1000
        patched = c.patch(f"/api/v1/playlists/{pid}", json={"repeat": 1}).json()
        assert patched["revision"] == 2 and patched["repeat"] == 1
        assert c.get("/api/v1/playlists").json()["total"] == 1

        cases = [
            ({**body, "items": []}, ["body", "items"]),
            ({**body, "items": [{"kind": "audio"}]}, ["body", "items", 0]),
            ({**body, "items": [{"kind": "audio", "asset_id": 999}]}, ["body", "items", "0", "asset_id"]),
            ({**body, "repeat": 0}, ["body", "repeat"]),
        ]
        for case, loc in cases:
            r = c.post("/api/v1/playlists", json=case)
            assert r.status_code == 422, (case, r.text)
            assert r.json()["detail"][0]["loc"][: len(loc)] == loc, r.json()

        b = c.post(
            "/api/v1/broadcasts", json={"title": "节目", "playlist_id": pid, "areas": [VILLAGE]}
        ).json()
        assert b["status"] == "submitted" and b["asset_id"] is not None
        assert c.delete(f"/api/v1/playlists/{pid}").status_code == 409  # in use by an open broadcast
        assert c.post(f"/api/v1/broadcasts/{b['id']}/cancel").status_code == 200
        assert c.delete(f"/api/v1/playlists/{pid}").status_code == 204


def test_bad_schedules_are_refused_naming_the_field(server):
    tomorrow = (datetime.now(SH) + timedelta(days=1)).date().isoformat()
    good = {"title": "通知", "text": "请注意。", "areas": [LUCHENG]}
    rule = {"times": ["07:00"], "start_date": tomorrow}
    cases = [
        ({**good, "recurrence": {**rule, "end_date": "2020-01-01"}}, "end_date", 422),
        (
            {
                **good,
                "recurrence": {
                    **rule,
                    "times": ["02:30"],
                    "timezone": "America/New_York",
                    "start_date": "2027-03-14",
                    "freq": "once",
                },
            },
            "times",
            422,
        ),
        ({**good, "recurrence": {**rule, "timezone": "Mars/Base"}}, "timezone", 422),
        ({**good, "recurrence": {**rule, "weekdays": ["someday"]}}, "weekdays", 422),
        ({**good, "recurrence": rule, "start_at": "2030-01-01T08:00:00+08:00"}, "recurrence", 422),
        ({**good, "areas": []}, "areas", 422),
        ({**good, "text": None}, "text", 422),
        ({**good, "playlist_id": 12345, "text": None}, "playlist_id", 422),
    ]
    with server.client(server.login(*ADMIN)) as c:
        for body, field, code in cases:
            r = c.post("/api/v1/broadcasts", json=body)
            assert r.status_code == code, (body, r.text)
            assert any(field in map(str, e["loc"]) for e in r.json()["detail"]), (field, r.json())
        assert c.get("/api/v1/broadcasts").json()["total"] == 0
    with server.client(server.login(*STAFF)) as c:
        r = c.post("/api/v1/broadcasts", json={**good, "areas": ["341225101000"], "recurrence": rule})
        assert r.status_code == 403 and "outside your area" in r.json()["detail"]


def test_schedule_view_conflicts_quiet_hours_scoping_and_stop(server):
    approver = _approver(server)
    day = (datetime.now(SH) + timedelta(days=2)).date()
    at8 = datetime(day.year, day.month, day.day, 8, 0, tzinfo=SH)
    with (
        server.client(approver) as ap,
        server.client(server.login(*ADMIN)) as admin,
        server.client(server.login(*STAFF)) as staff,
    ):
        rule = {
            "freq": "daily",
            "times": ["08:00"],
            "start_date": day.isoformat(),
            "end_date": (day + timedelta(days=3)).isoformat(),
        }
        village = ap.post(
            "/api/v1/broadcasts",
            json={"title": "村务", "text": "请注意。", "areas": [VILLAGE], "recurrence": rule},
        )
        assert village.status_code == 201 and village.json()["status"] == "scheduled", village.text
        county = admin.post(
            "/api/v1/broadcasts",
            json={
                "title": "县通知",
                "text": "请注意。",
                "areas": ["341225000000"],
                "start_at": at8.isoformat(),
            },
        )
        assert county.status_code == 201, county.text
        county = county.json()
        assert county["priority"] == "county" and len(county["conflicts"]) == 1
        assert county["conflicts"][0]["winner"] == county["id"]

        view = ap.get(
            "/api/v1/schedule",
            params={"area": VILLAGE, "from": at8.isoformat(), "to": (at8 + timedelta(days=2)).isoformat()},
        ).json()
        assert sorted(i["title"] for i in view["items"]) == ["县通知", "村务", "村务"]
        assert len(view["items"]) == 3  # two days of the village rule, and the county one-off
        assert len(view["conflicts"]) == 1 and view["conflicts"][0]["winner"] == county["id"]
        assert "preempts" in view["conflicts"][0]["outcome"]

        # a township user sees only broadcasts inside the township, and only its own areas' schedule
        assert [b["title"] for b in staff.get("/api/v1/broadcasts").json()["items"]] == ["村务"]
        assert staff.get("/api/v1/schedule", params={"area": "341225101000"}).status_code == 403
        assert (
            ap.get(
                "/api/v1/schedule", params={"area": VILLAGE, "to": "2020-01-01T00:00:00+08:00"}
            ).status_code
            == 422
        )

        # quiet hours: the village's own, set by an approver; routine at 08:00 is then refused
        assert (
            staff.put(
                f"/api/v1/areas/{VILLAGE}/quiet-hours", json={"start": "07:30", "end": "09:00"}
            ).status_code
            == 403
        )
        set_ = ap.put(f"/api/v1/areas/{VILLAGE}/quiet-hours", json={"start": "07:30", "end": "09:00"})
        assert set_.json() == {
            "area": VILLAGE,
            "start": "07:30",
            "end": "09:00",
            "own": True,
            "from_area": VILLAGE,
        }
        inherited = ap.get("/api/v1/areas/341225100202/quiet-hours").json()
        assert (inherited["start"], inherited["own"], inherited["from_area"]) == ("00:00", False, "default")
        refused = ap.post(
            "/api/v1/broadcasts",
            json={"title": "x", "text": "请注意。", "areas": [LUCHENG], "start_at": at8.isoformat()},
        )
        assert refused.status_code == 422
        assert (
            f"{day} 08:00:00 Asia/Shanghai (quiet 07:30-09:00 ({VILLAGE}))"
            in refused.json()["detail"][0]["msg"]
        )
        urgent = ap.post(
            "/api/v1/broadcasts",
            json={
                "title": "x",
                "text": "请注意。",
                "areas": [LUCHENG],
                "start_at": at8.isoformat(),
                "priority": "emergency_blue",
            },
        )
        assert urgent.status_code == 201 and urgent.json()["status"] == "submitted"
        queue = admin.get("/api/v1/broadcasts", params={"status": "submitted"}).json()
        assert [b["id"] for b in queue["items"]] == [urgent.json()["id"]]

        stop = ap.post(f"/api/v1/areas/{VILLAGE}/stop", json={"comment": "紧急停播"})
        assert stop.status_code == 200 and stop.json()["commands_sent"] >= 1
        assert staff.post(f"/api/v1/areas/{VILLAGE}/stop").status_code == 403
