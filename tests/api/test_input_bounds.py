"""Out-of-range ids and offsets, area codes that are no real division, a newline in a media name,
and plain dates in the schedule view: each a clear 4xx (or the whole days meant), never a 500."""

from __future__ import annotations

import re
from datetime import datetime
from zoneinfo import ZoneInfo

import httpx
import pytest

from tests.api.conftest import ADMIN, STAFF

HUGE = 2**100  # beyond 64 bits: SQLite raised OverflowError
BIG = 2**40  # beyond PostgreSQL's 32-bit INTEGER ids
SH = ZoneInfo("Asia/Shanghai")


def _id_operations(spec: dict) -> list[tuple[str, str, str]]:
    """(method, path, parameter) of every operation with an integer path parameter."""
    out = []
    for path, item in spec["paths"].items():
        for method, op in item.items():
            for p in op.get("parameters", []):
                if p["in"] == "path" and p["schema"].get("type") == "integer":
                    out.append((method.upper(), path, p["name"]))
    return out


def _offset_operations(spec: dict) -> list[str]:
    return [
        path
        for path, item in spec["paths"].items()
        if "get" in item and any(p["name"] == "offset" for p in item["get"].get("parameters", []))
    ]


def test_ids_and_offsets_beyond_the_database_are_refused(server):
    with server.client(server.login(*ADMIN)) as c:
        spec = c.get("/openapi.json").json()
        ops = _id_operations(spec)
        assert len(ops) >= 14
        for method, path, name in ops:
            for value in (HUGE, BIG):
                url = path.replace("{" + name + "}", str(value))
                r = c.request(method, url, json={})
                assert r.status_code == 422, (method, url, r.status_code, r.text)
                assert r.json()["detail"][0]["loc"] == ["path", name]
            r = c.request(method, path.replace("{" + name + "}", "999999"), json={})
            assert r.status_code in (404, 422), (method, path, r.status_code, r.text)
        lists = _offset_operations(spec)
        assert len(lists) >= 8
        for path in lists:
            url = path.replace("{broadcast_id}", "1").replace("{device_id}", "x")
            r = c.get(url, params={"offset": HUGE})
            assert r.status_code == 422, (url, r.status_code, r.text)
            assert r.json()["detail"][0]["loc"] == ["query", "offset"]


# Every operation that names an area by its code, with the code put in.
AREA_OPERATIONS = [
    ("GET", "/api/v1/devices?area={}"),
    ("GET", "/api/v1/devices/health?area={}"),
    ("GET", "/api/v1/devices/alarms?area={}"),
    ("GET", "/api/v1/regions?parent={}"),
    ("GET", "/api/v1/regions/{}"),
    ("GET", "/api/v1/reports/reach?area={}"),
    ("GET", "/api/v1/schedule?area={}"),
    ("GET", "/api/v1/areas/{}/quiet-hours"),
    ("PUT", "/api/v1/areas/{}/quiet-hours"),
    ("POST", "/api/v1/areas/{}/stop"),
]
NO_DIVISION = ["000000000000", "341225000001"]  # twelve digits, but no county / no township part
UNKNOWN = ["341226000000", "341225999000", "341225100299"]  # well-formed, never imported
MALFORMED = ["34122510000", "34122510000x"]


@pytest.mark.parametrize("who", ["admin", "staff"])
def test_area_codes_are_answered_alike_everywhere(server, who):
    token = server.login(*(ADMIN if who == "admin" else STAFF))
    with server.client(token) as c:
        for method, template in AREA_OPERATIONS:
            body = {"start": None, "end": None} if method == "PUT" else None
            for code in NO_DIVISION + MALFORMED:
                r = c.request(method, template.format(code), json=body)
                assert r.status_code == 422, (method, template, code, r.status_code, r.text)
                assert isinstance(r.json()["detail"], list), r.text
            for code in UNKNOWN:
                r = c.request(method, template.format(code), json=body)
                assert r.status_code == 404, (method, template, code, r.status_code, r.text)
        if who == "staff":
            return  # staff may neither send commands nor register speakers (403 by role)
        # An area in a body: the target of a command is like one in its URL (404 when unknown); the
        # area of a speaker being registered is a field of the new object (422 naming it).
        for code in NO_DIVISION + UNKNOWN:
            r = c.post("/api/v1/devices/commands", json={"type": "stop", "area": code})
            assert r.status_code == (422 if code in NO_DIVISION else 404), (code, r.status_code, r.text)
            r = c.post("/api/v1/devices", json={"id": "fuzz-1", "name": "喇叭", "area_code": code})
            assert r.status_code == 422, (code, r.status_code, r.text)
            assert r.json()["detail"][0]["loc"] == ["body", "area_code"]


def test_media_name_with_a_trailing_newline_is_not_found(server):
    digest = "ab" * 32
    with server.client() as c:
        assert c.get(f"/media/{digest}%0A.mp3").status_code == 404
        assert c.get(f"/media/{digest}.mp3").status_code == 404  # well-formed, no such file
        assert c.get(f"/media/{digest[:-1]}.mp3").status_code == 404


def test_schedule_takes_plain_dates_as_whole_days_in_the_county_zone(server):
    assert server.settings.scheduler.timezone == "Asia/Shanghai"
    with server.client(server.login(*ADMIN)) as c:
        r = c.get(
            "/api/v1/schedule", params={"area": "341225000000", "from": "2026-12-01", "to": "2026-12-08"}
        )
        assert r.status_code == 200, r.text
        body = r.json()
        assert datetime.fromisoformat(body["start"]) == datetime(2026, 12, 1, tzinfo=SH)
        assert datetime.fromisoformat(body["end"]) == datetime(2026, 12, 9, tzinfo=SH)  # 8 Dec included

        with_offset = {
            "area": "341225000000",
            "from": "2026-12-01T06:00:00+08:00",
            "to": "2026-12-02T00:00:00Z",
        }
        r = c.get("/api/v1/schedule", params=with_offset)
        assert r.status_code == 200, r.text
        assert datetime.fromisoformat(r.json()["start"]) == datetime(2026, 12, 1, 6, tzinfo=SH)

        r = c.get("/api/v1/schedule", params={"area": "341225000000", "from": "2026-12-01"})
        assert datetime.fromisoformat(r.json()["end"]) == datetime(2026, 12, 8, tzinfo=SH)  # from + 7 days

        for bad in (
            "2026-12-01T06:00:00",
            "2026-13-01",
            "tomorrow",
            "9999-12-31",
            "9999-12-31T23:00:00+00:00",
        ):
            r = c.get("/api/v1/schedule", params={"area": "341225000000", "from": bad})
            assert r.status_code == 422, (bad, r.status_code, r.text)
            assert r.json()["detail"][0]["loc"] == ["body", "from"]
        r = c.get(
            "/api/v1/schedule", params={"area": "341225000000", "from": "2026-12-01", "to": "2027-01-02"}
        )
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "to"]


def test_console_ids_and_pages_beyond_the_database_are_refused(server):
    with httpx.Client(base_url=server.base_url, timeout=30) as browser:  # the console's session cookie
        page = browser.get("/login").text
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
        r = browser.post("/login", data={"username": ADMIN[0], "password": ADMIN[1], "csrf_token": csrf})
        assert r.status_code == 303, r.text
        for url in (
            f"/console/items/{HUGE}",
            f"/console/items/{BIG}",
            f"/console/items/{HUGE}/reach",
            f"/console/items/{HUGE}/reach.csv",
            f"/console/items?page={HUGE}",
            f"/console/fleet?page={HUGE}",
            f"/console/fleet/341225100201-01?command={HUGE}",
        ):
            r = browser.get(url)
            assert r.status_code in (404, 422), (url, r.status_code, r.text[:300])
