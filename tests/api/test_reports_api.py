"""GET /api/v1/reports/reach on a live server, over the hand-counted scenario of
tests/reports/test_reach_reports.py: the figures are the hand count, and exactly what the console's
report page shows in its table and puts in its CSV and XLSX exports."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from html.parser import HTMLParser

import httpx
import pytest
from openpyxl import load_workbook

from core import users
from core.clock import utcnow
from core.models import Role
from tests.api.conftest import make_settings
from tests.live import LiveServer, free_port
from tests.reports.test_reach_reports import A1, A2, COUNTY, POP, TOWN_A, TOWN_B, scenario  # noqa: F401

ADMIN = ("reportadmin", "report-password")
TOWN_A_STAFF = ("jiazhen", "report-password-2")
WEEK = {"area": COUNTY, "period": "week", "date": "2026-11-05"}  # Mon 2 - Sun 8 Nov 2026
MONDAY = {"area": COUNTY, "period": "day", "date": "2026-11-02"}
KEYS = ("targeted", "played", "failed", "no_report", "other", "population_targeted", "population_reached")


@pytest.fixture
def server(tmp_path, database_url, session, scenario, embedded_broker_url):  # noqa: F811
    """The live app over the scenario's database, with a county-wide admin and township A's staff."""
    # Tuesday's open airing stays open while the test runs (the runner would close it at its
    # deadline, long past): that day is counted from the raw deliveries, Monday from a roll-up.
    scenario.deadline_at = utcnow() + timedelta(days=1)
    users.create_user(session=session, username=ADMIN[0], password=ADMIN[1], role=Role.admin)
    users.create_user(session=session, username=TOWN_A_STAFF[0], password=TOWN_A_STAFF[1], role=Role.staff,
                      area_code=TOWN_A)  # fmt: skip
    session.commit()
    port = free_port()
    with LiveServer(make_settings(tmp_path, database_url, embedded_broker_url, port), port) as live:
        yield live


class _Table(HTMLParser):
    """The rows of the console's `.reach-table` (body, then footer) and the KPI figures."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[list[str]] = []
        self.kpis: dict[str, str] = {}
        self._in_table = self._cell = False
        self._kpi: str | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "table" and "reach-table" in (a.get("class") or ""):
            self._in_table = True
        elif self._in_table and tag == "tr":
            self.rows.append([])
        elif self._in_table and tag == "td":
            self._cell = True
            self.rows[-1].append("")
        elif tag == "b" and (a.get("id") or "").startswith("k-"):
            self._kpi = a["id"][2:]
            self.kpis[self._kpi] = ""

    def handle_endtag(self, tag):
        if tag == "table":
            self._in_table = False
        elif tag == "td":
            self._cell = False
        elif tag == "b":
            self._kpi = None

    def handle_data(self, data):
        if self._cell:
            self.rows[-1][-1] += data.strip()
        elif self._kpi:
            self.kpis[self._kpi] += data.strip()


@contextmanager
def console(server) -> Iterator[httpx.Client]:
    """A browser-like client logged in to the console (session cookie, no bearer token)."""
    with httpx.Client(base_url=server.base_url, timeout=30) as client:
        page = client.get("/login").text
        token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
        r = client.post("/login", data={"username": ADMIN[0], "password": ADMIN[1], "csrf_token": token})
        assert r.status_code == 303, r.text
        yield client


def percent(rate: float) -> str:
    return f"{rate * 100:.1f}%"


def api_rows(report: dict) -> list[list[str]]:
    """The API's answer as the console's table shows it: one row per area, then the total."""
    rows = [
        [e["code"], e["name"], *(str(e[k]) for k in ("targeted", "played", "failed", "no_report")),
         percent(e["reach_rate"]), str(e["population"]), str(e["population_reached"])]
        for e in report["by_area"]
    ]  # fmt: skip
    total = [str(report[k]) for k in ("targeted", "played", "failed", "no_report")]
    pops = [str(report["population_targeted"]), str(report["population_reached"])]
    return [*rows, ["", "合计", *total, percent(report["reach_rate"]), *pops]]


def test_api_figures_are_the_hand_count_and_the_consoles_table_and_exports(server, tmp_path):
    with server.client(server.login(*ADMIN)) as api, console(server) as browser:
        week = api.get("/api/v1/reports/reach", params=WEEK).json()
        # hand count (tests/reports/test_reach_reports.py): a village counts once in the week
        assert tuple(week[k] for k in KEYS) == (8, 4, 1, 1, 2, 2200, 2200)
        assert week["reach_rate"] == 0.5 and week["area_name"] == "测试县"
        assert (week["first"], week["last"], week["level"]) == ("2026-11-02", "2026-11-08", "township")
        assert [(e["code"], e["targeted"], e["played"]) for e in week["by_area"]] == [
            (TOWN_A, 6, 3), (TOWN_B, 2, 1),
        ]  # fmt: skip
        assert [d["targeted"] for d in week["by_day"]] == [5, 3, 0, 0, 0, 0, 0]
        # Monday from its roll-up; Tuesday, with an open airing, from the raw deliveries
        assert "2026-11-02" in week["rolled_up_days"] and "2026-11-03" not in week["rolled_up_days"]
        monday = api.get("/api/v1/reports/reach", params=MONDAY).json()
        assert tuple(monday[k] for k in KEYS) == (5, 3, 1, 1, 0, 1500, 1500) and monday["reach_rate"] == 0.6
        town = api.get("/api/v1/reports/reach", params={**WEEK, "area": TOWN_A}).json()
        villages = [(e["code"], e["targeted"], e["played"], e["population_reached"]) for e in town["by_area"]]
        assert villages == [(A1, 4, 2, POP[A1]), (A2, 2, 1, POP[A2])]

        queries = [WEEK, MONDAY, {**WEEK, "area": TOWN_A}, {**WEEK, "period": "month", "level": "village"}]
        for query in queries:
            report = api.get("/api/v1/reports/reach", params=query).json()
            expected = api_rows(report)

            # the console's page: the same figures in its table and its KPIs
            page = browser.get("/console/reports", params=query)
            assert page.status_code == 200, page.text
            shown = _Table()
            shown.feed(page.text)
            assert [row for row in shown.rows if row] == expected, query  # (the heading row has no td)
            assert shown.kpis["targeted"] == str(report["targeted"]) and shown.kpis["rate"] == percent(
                report["reach_rate"]
            )
            assert 'data-src="/api/v1/reports/reach?' in page.text  # its charts fetch this endpoint

            # the exports hold that table
            r = browser.get("/console/reports/export.csv", params=query)
            assert r.status_code == 200 and r.content.startswith(b"\xef\xbb\xbf")
            got = list(csv.reader(io.StringIO(r.content.decode("utf-8-sig"))))
            assert got[0][:4] == ["区域代码", "区域", "目标喇叭", "完整播放"]
            assert len(got) - 1 == len(expected)
            for row, want in zip(got[1:], expected, strict=True):
                assert row[:6] == want[:6] and percent(float(row[6])) == want[6] and row[7:] == want[7:]

            r = browser.get("/console/reports/export.xlsx", params=query)
            assert r.status_code == 200
            path = tmp_path / "report.xlsx"
            path.write_bytes(r.content)
            sheet = load_workbook(path).active
            rows = [list(row) for row in sheet.iter_rows(values_only=True)]
            assert len(rows) - 1 == len(expected)
            for row, want in zip(rows[1:], expected, strict=True):
                assert [str(row[0] or ""), row[1]] == want[:2]
                assert [str(v) for v in row[2:6]] == want[2:6] and percent(row[6]) == want[6]
                assert [str(v) for v in row[7:9]] == want[7:9]
            assert sheet.cell(row=2, column=7).number_format == "0.00%"


def test_the_consoles_cookie_reads_the_report_and_nothing_else_without_a_token(server):
    with server.client(server.login(*ADMIN)) as api, console(server) as browser:
        by_token = api.get("/api/v1/reports/reach", params=WEEK).json()
        by_cookie = browser.get("/api/v1/reports/reach", params=WEEK)
        assert by_cookie.status_code == 200 and by_cookie.json() == by_token
        assert browser.get("/api/v1/devices").status_code == 401  # the cookie opens this one GET only
    with server.client() as anonymous:
        r = anonymous.get("/api/v1/reports/reach", params=WEEK)
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    with server.client("forged-token") as forged:
        assert forged.get("/api/v1/reports/reach", params=WEEK).status_code == 401


def test_bad_input_is_a_422_naming_the_field_and_other_areas_a_403(server):
    cases = [
        ({**WEEK, "period": "year"}, "period"),
        ({**WEEK, "date": "2026-02-30"}, "date"),
        ({**WEEK, "date": "25/11/2026"}, "date"),
        ({**WEEK, "date": "1999-12-31"}, "date"),
        ({**WEEK, "area": "34122510"}, "area"),
        ({**WEEK, "level": "county"}, "level"),
    ]
    with server.client(server.login(*ADMIN)) as api:
        for query, field in cases:
            r = api.get("/api/v1/reports/reach", params=query)
            assert r.status_code == 422, (query, r.text)
            assert [e["loc"] for e in r.json()["detail"]] == [["query", field]], r.json()
        assert api.get("/api/v1/reports/reach", params={**WEEK, "area": "341225999000"}).status_code == 404
        assert api.get("/api/v1/reports/reach").json()["area"] == COUNTY  # absent: the county

    with server.client(server.login(*TOWN_A_STAFF)) as staff:
        own = staff.get("/api/v1/reports/reach", params={k: v for k, v in WEEK.items() if k != "area"})
        assert own.status_code == 200
        assert (own.json()["area"], own.json()["targeted"], own.json()["played"]) == (TOWN_A, 6, 3)
        for area in (TOWN_B, COUNTY):
            r = staff.get("/api/v1/reports/reach", params={**WEEK, "area": area})
            assert r.status_code == 403 and "outside your area" in r.json()["detail"]
