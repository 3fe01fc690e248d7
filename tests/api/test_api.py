"""The HTTP API as a client sees it: auth, paging, and clear 4xx errors for bad input."""

from __future__ import annotations

from tests.api.conftest import ADMIN, LUCHENG, STAFF


def test_health_needs_no_token_and_reports_every_part(server):
    with server.client() as c:
        r = c.get("/api/v1/health")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ok"
    assert body["database"]["ok"] and body["broker"]["ok"] and body["scheduler"]["ok"]


def test_every_other_route_needs_a_token(server):
    with server.client() as c:
        for path in ("/api/v1/regions", "/api/v1/devices", "/api/v1/broadcasts"):
            assert c.get(path).status_code == 401, path
        assert c.get("/api/v1/regions", headers={"Authorization": "Bearer forged"}).status_code == 401
        bad = c.post("/api/v1/auth/token", data={"username": ADMIN[0], "password": "wrong-password"})
        assert bad.status_code == 401


def test_regions_page_with_limit_offset_and_total(server):
    token = server.login(*ADMIN)
    with server.client(token) as c:
        top = c.get("/api/v1/regions").json()
        assert top["total"] == 1 and top["items"][0]["name"] == "阜南县"
        page1 = c.get("/api/v1/regions", params={"parent": "341225000000", "limit": 10}).json()
        page3 = c.get("/api/v1/regions", params={"parent": "341225000000", "limit": 10, "offset": 20}).json()
        assert page1["total"] == 28 and len(page1["items"]) == 10 and len(page3["items"]) == 8
        assert {r["level"] for r in page1["items"]} == {"township"}
        assert c.get("/api/v1/regions", params={"parent": "999999000000"}).status_code == 404
        assert c.get("/api/v1/regions", params={"parent": "12ab"}).status_code == 422


def test_malformed_broadcasts_are_refused_naming_the_field(server):
    token = server.login(*ADMIN)
    good = {"title": "通知", "text": "各位村民请注意。", "areas": [LUCHENG]}
    cases = [
        ({**good, "areas": ["34122510"]}, "areas"),
        ({**good, "areas": ["341225999000"]}, "areas"),  # well-formed but unknown: refused, not ignored
        ({**good, "devices": ["no-such-speaker"]}, "devices"),
        ({**good, "text": "   "}, "text"),
        ({**good, "title": ""}, "title"),
        ({**good, "start_at": "tomorrow"}, "start_at"),
        ({**good, "start_at": "2020-01-01T08:00:00+08:00"}, "start_at"),
        ({**good, "priority": "urgent"}, "priority"),
        ({**good, "volume": 130}, "volume"),
        ({**good, "colour": "red"}, "colour"),
        ({"title": "通知", "text": "请注意。"}, "areas"),
    ]
    with server.client(token) as c:
        for body, field in cases:
            r = c.post("/api/v1/broadcasts", json=body)
            assert r.status_code == 422, (body, r.text)
            locs = [e["loc"] for e in r.json()["detail"]]
            assert any(field in loc for loc in locs), (field, r.json())
        r = c.post("/api/v1/broadcasts", content=b"{not json", headers={"content-type": "application/json"})
        assert r.status_code == 422
        assert c.get("/api/v1/broadcasts").json()["total"] == 0  # nothing half-created


def test_staff_are_confined_to_their_area(server):
    token = server.login(*STAFF)
    with server.client(token) as c:
        r = c.post(
            "/api/v1/broadcasts", json={"title": "通知", "text": "请注意。", "areas": ["341225000000"]}
        )
        assert r.status_code == 403
        assert "outside your area" in r.json()["detail"]
        r = c.post("/api/v1/devices", json={"id": "x1", "name": "x", "area_code": LUCHENG})
        assert r.status_code == 403  # staff do not register speakers


def test_devices_filter_by_area_and_online(server):
    token = server.login(*ADMIN)
    with server.client(token) as c:
        for i, area in enumerate(["341225100201", "341225100202", "341225101201"]):
            r = c.post("/api/v1/devices", json={"id": f"d{i}", "name": f"喇叭{i}", "area_code": area})
            assert r.status_code == 201, r.text
        r = c.post("/api/v1/devices", json={"id": "bad", "name": "x", "area_code": "341225999999"})
        assert r.status_code == 422 and "unknown area" in r.text
        assert c.get("/api/v1/devices", params={"area": LUCHENG}).json()["total"] == 2
        assert (
            c.get("/api/v1/devices", params={"area": "341225000000", "online": "false"}).json()["total"] == 3
        )
        assert c.get("/api/v1/devices", params={"online": "true"}).json()["total"] == 0
        assert c.get("/api/v1/devices", params={"limit": 0}).status_code == 422
