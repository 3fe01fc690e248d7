"""Region scoping on a live server: a user bound to a township gets a 403 for anything of another
township (speakers, their registration, playlists, broadcasts, areas, reach reports), and lists
without an area hold only their own; a county-wide admin sees everything."""

from __future__ import annotations

import pytest

from core import users
from core.db import make_engine, make_session_factory, session_scope
from core.models import Role
from devices import service as device_service
from tests.api.conftest import ADMIN, LUCHENG, STAFF, make_settings, seed
from tests.live import LiveServer, free_port

COUNTY = "341225000000"
HUILONG = "341225101000"  # 会龙镇, the other township
LC1, LC2, HL1 = "341225100201", "341225100202", "341225101201"  # villages
OPERATOR = ("luchengop", "operator-password")  # operator of 鹿城镇
OTHER_STAFF = ("huilongstaff", "staff-password-2")  # staff of 会龙镇
SPEAKERS = {"lc-1": LC1, "lc-2": LC2, "hl-1": HL1}


@pytest.fixture
def server(tmp_path, database_url, embedded_broker_url):
    seed(database_url)
    engine = make_engine(database_url)
    with session_scope(make_session_factory(engine)) as s:
        users.create_user(session=s, username=OPERATOR[0], password=OPERATOR[1], role=Role.operator,
                          area_code=LUCHENG)  # fmt: skip
        users.create_user(session=s, username=OTHER_STAFF[0], password=OTHER_STAFF[1], role=Role.staff,
                          area_code=HUILONG)  # fmt: skip
        for device_id, village in SPEAKERS.items():
            device_service.register(session=s, device_id=device_id, name=device_id, area_code=village)
    engine.dispose()
    port = free_port()
    with LiveServer(make_settings(tmp_path, database_url, embedded_broker_url, port), port) as live:
        yield live


def ids(page: dict) -> set[str]:
    return {item["id"] for item in page["items"]}


def test_township_operator_lists_reads_and_registers_only_own_speakers(server):
    with server.client(server.login(*OPERATOR)) as op, server.client(server.login(*ADMIN)) as admin:
        # no area given: their own township's speakers, not everyone's
        mine = op.get("/api/v1/devices").json()
        assert ids(mine) == {"lc-1", "lc-2"} and mine["total"] == 2
        assert ids(op.get("/api/v1/devices", params={"area": LC1}).json()) == {"lc-1"}
        for area in (HUILONG, HL1, COUNTY):
            r = op.get("/api/v1/devices", params={"area": area})
            assert r.status_code == 403 and "outside your area" in r.json()["detail"], area

        assert op.get("/api/v1/devices/lc-1").json()["area_code"] == LC1
        r = op.get("/api/v1/devices/hl-1")
        assert r.status_code == 403 and "outside your area" in r.json()["detail"]
        assert op.get("/api/v1/devices/no-such-speaker").status_code == 404
        assert op.get("/api/v1/devices/hl-1/status-history").status_code == 403
        assert op.post("/api/v1/devices/hl-1/credentials").status_code == 403
        assert op.post("/api/v1/devices/hl-1/commands", json={"type": "sync"}).status_code == 403
        assert op.get("/api/v1/devices/health", params={"area": HUILONG}).status_code == 403
        assert op.get("/api/v1/devices/alarms", params={"area": HUILONG}).status_code == 403

        # registering: not in another township, not moving its speaker in, not moving ours out
        refused = [
            {"id": "new-1", "name": "新喇叭", "area_code": HL1},
            {"id": "hl-1", "name": "抢来的", "area_code": LC1},
            {"id": "lc-1", "name": "送走的", "area_code": HL1},
        ]
        for body in refused:
            r = op.post("/api/v1/devices", json=body)
            assert r.status_code == 403, (body, r.text)
        everyone = {d["id"]: d for d in admin.get("/api/v1/devices").json()["items"]}
        assert {k: v["area_code"] for k, v in everyone.items()} == SPEAKERS  # nothing moved
        assert "new-1" not in everyone and everyone["hl-1"]["name"] == "hl-1"

        r = op.post("/api/v1/devices", json={"id": "lc-3", "name": "三号", "area_code": LC2})
        assert r.status_code == 201, r.text
        r = op.post("/api/v1/devices", json={"id": "lc-1", "name": "一号（改名）", "area_code": LC2})
        assert r.status_code == 201 and r.json()["area_code"] == LC2  # moved inside the township
        assert op.get("/api/v1/devices").json()["total"] == 3

        # the county-wide admin sees every speaker, with or without an area
        assert admin.get("/api/v1/devices").json()["total"] == 4
        assert ids(admin.get("/api/v1/devices", params={"area": HUILONG}).json()) == {"hl-1"}
        assert admin.get("/api/v1/devices/hl-1").status_code == 200


def test_staff_see_and_edit_only_their_townships_playlists(server):
    body = {"name": "鹿城早间节目", "items": [{"kind": "text", "text": "各位村民早上好。", "voice": "cmn"}]}
    with server.client(server.login(*STAFF)) as mine, server.client(server.login(*OTHER_STAFF)) as other:
        created = mine.post("/api/v1/playlists", json=body)
        assert created.status_code == 201, created.text
        pid = created.json()["id"]
        assert created.json()["area_code"] == LUCHENG

        calls = [
            ("GET", f"/api/v1/playlists/{pid}", None),
            ("PATCH", f"/api/v1/playlists/{pid}", {"name": "改掉"}),
            ("POST", f"/api/v1/playlists/{pid}/preview", None),
            ("DELETE", f"/api/v1/playlists/{pid}", None),
        ]
        for method, path, payload in calls:
            r = other.request(method, path, json=payload)
            assert r.status_code == 403, (method, path, r.text)
            assert "outside your area" in r.json()["detail"]
        assert other.get("/api/v1/playlists").json() == {"items": [], "total": 0}
        assert other.get("/api/v1/playlists/99999").status_code == 404

        # untouched, and still theirs
        got = mine.get(f"/api/v1/playlists/{pid}").json()
        assert got["name"] == "鹿城早间节目" and mine.get("/api/v1/playlists").json()["total"] == 1
    with server.client(server.login(*ADMIN)) as admin:
        assert admin.get(f"/api/v1/playlists/{pid}").status_code == 200


def test_broadcasts_schedule_areas_and_reach_of_another_township_are_403(server):
    with server.client(server.login(*ADMIN)) as admin:
        r = admin.post(
            "/api/v1/broadcasts",
            json={
                "title": "会龙镇通知",
                "text": "请注意。",
                "areas": [HUILONG],
                "voice": "cmn",
                "submit": False,
            },
        )
        assert r.status_code == 201, r.text
        bid = r.json()["id"]
        assert admin.get("/api/v1/regions").json()["items"][0]["code"] == COUNTY

    with server.client(server.login(*STAFF)) as staff:
        for path in (f"/api/v1/broadcasts/{bid}", f"/api/v1/broadcasts/{bid}/reach",
                     f"/api/v1/broadcasts/{bid}/deliveries", f"/api/v1/broadcasts/{bid}/history",
                     f"/api/v1/broadcasts/{bid}/occurrences"):  # fmt: skip
            assert staff.get(path).status_code == 403, path
        assert staff.post(f"/api/v1/broadcasts/{bid}/cancel").status_code == 403
        assert bid not in {b["id"] for b in staff.get("/api/v1/broadcasts").json()["items"]}
        assert staff.get("/api/v1/schedule", params={"area": HUILONG}).status_code == 403
        assert staff.get(f"/api/v1/areas/{HUILONG}/quiet-hours").status_code == 403

        # areas: their own, what lies under it and what lies above it; never a neighbour's
        roots = staff.get("/api/v1/regions").json()
        assert [r["code"] for r in roots["items"]] == [LUCHENG] and roots["total"] == 1
        villages = staff.get("/api/v1/regions", params={"parent": LUCHENG}).json()
        assert villages["total"] > 0 and all(v["parent_code"] == LUCHENG for v in villages["items"])
        assert staff.get("/api/v1/regions", params={"parent": COUNTY}).status_code == 403
        assert staff.get("/api/v1/regions", params={"parent": HUILONG}).status_code == 403
        assert staff.get(f"/api/v1/regions/{HUILONG}").status_code == 403
        assert staff.get(f"/api/v1/regions/{HL1}").status_code == 403
        assert staff.get(f"/api/v1/regions/{COUNTY}").json()["name"] == "阜南县"
        assert staff.get(f"/api/v1/regions/{LC1}").status_code == 200

        # period reach: their township by default, 403 for the neighbour or the whole county
        own = staff.get("/api/v1/reports/reach")
        assert own.status_code == 200 and own.json()["area"] == LUCHENG
        assert staff.get("/api/v1/reports/reach", params={"area": LC1}).status_code == 200
        for area in (HUILONG, COUNTY):
            r = staff.get("/api/v1/reports/reach", params={"area": area})
            assert r.status_code == 403 and "outside your area" in r.json()["detail"], area
