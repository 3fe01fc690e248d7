"""The API and the console refuse the same action alike: the same status, from the same error type.

Both doors call one use case (scheduler.flows) and map its refusal by type (api/errors.py; the
console through api/web/messages.py). Each case below is tried through both doors, and the
broadcast must be unchanged afterwards.
"""

from __future__ import annotations

import re

import httpx
import pytest

from tests.web.conftest import PASSWORD

NOTICE = "各位村民请注意，明天上午停水。"


def api_client(base_url: str, username: str) -> httpx.Client:
    client = httpx.Client(base_url=base_url, timeout=30)
    r = client.post("/api/v1/auth/token", data={"username": username, "password": PASSWORD})
    r.raise_for_status()
    client.headers["Authorization"] = f"Bearer {r.json()['access_token']}"
    return client


def console_client(base_url: str, username: str) -> tuple[httpx.Client, str]:
    """A logged-in browser-like client and its session's CSRF token."""
    client = httpx.Client(base_url=base_url, timeout=30, follow_redirects=False)
    page = client.get("/login")
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    r = client.post("/login", data={"username": username, "password": PASSWORD, "csrf_token": csrf})
    assert r.status_code == 303, r.text
    page = client.get("/console/items")
    csrf = re.search(r'name="csrf-token" content="([^"]+)"', page.text).group(1)
    return client, csrf


def create(client: httpx.Client, area: str, **extra) -> dict:
    body = {"title": "停水通知", "text": NOTICE, "areas": [area], "speech": {"voice": "cmn"}} | extra
    r = client.post("/api/v1/broadcasts", json=body)
    assert r.status_code == 201, r.text
    return r.json()


def state(client: httpx.Client, broadcast_id: int) -> tuple[str, list]:
    b = client.get(f"/api/v1/broadcasts/{broadcast_id}").json()
    return b["status"], [o["status"] for o in b["occurrences"]]


@pytest.mark.slow
def test_the_api_and_the_console_refuse_the_same_actions_alike(console):
    server, fleet = console
    village = next(v for v in fleet.devices.values() if v.startswith(fleet.target[:9]))
    approver = api_client(server.base_url, "approver1")
    staff = api_client(server.base_url, "staff1")
    other = api_client(server.base_url, "otherstaff")
    web_approver, csrf_approver = console_client(server.base_url, "approver1")
    web_staff, csrf_staff = console_client(server.base_url, "staff1")
    web_other, csrf_other = console_client(server.base_url, "otherstaff")

    emergency = create(approver, village, priority="emergency_red")  # waits for a second person
    draft = create(staff, village, submit=False)
    waiting = create(staff, village)  # routine, by staff: waits for an approver

    cases = [
        # (what, api call, console call, status, reason)
        (
            "an emergency approved by its own creator",
            lambda: approver.post(f"/api/v1/broadcasts/{emergency['id']}/approve"),
            lambda: web_approver.post(
                f"/console/queue/{emergency['id']}/approve", data={"csrf_token": csrf_approver}
            ),
            403, "emergency_second_person",
        ),
        (
            "a draft approved",
            lambda: approver.post(f"/api/v1/broadcasts/{draft['id']}/approve"),
            lambda: web_approver.post(
                f"/console/queue/{draft['id']}/approve", data={"csrf_token": csrf_approver}
            ),
            409, None,
        ),
        (
            "a staff member approving",
            lambda: staff.post(f"/api/v1/broadcasts/{waiting['id']}/approve"),
            lambda: web_staff.post(
                f"/console/queue/{waiting['id']}/approve", data={"csrf_token": csrf_staff}
            ),
            403, "role",
        ),
        (
            "a rejection without a reason",
            lambda: approver.post(f"/api/v1/broadcasts/{waiting['id']}/reject", json={"comment": " "}),
            lambda: web_approver.post(
                f"/console/queue/{waiting['id']}/reject", data={"csrf_token": csrf_approver, "comment": " "}
            ),
            422, None,
        ),
        (
            "a cancel from another township",
            lambda: other.post(f"/api/v1/broadcasts/{waiting['id']}/cancel"),
            lambda: web_other.post(
                f"/console/items/{waiting['id']}/cancel", data={"csrf_token": csrf_other}
            ),
            403, "area",
        ),
    ]
    before = {b["id"]: state(approver, b["id"]) for b in (emergency, draft, waiting)}
    for what, through_api, through_console, status, reason in cases:
        api_answer, console_answer = through_api(), through_console()
        assert api_answer.status_code == status, (what, api_answer.text)
        assert console_answer.status_code == status, (what, console_answer.text[:500])
        if reason is not None:
            assert api_answer.json().get("reason") == reason, what
        assert "text/html" in console_answer.headers["content-type"], what  # a page, in Chinese
        assert re.search(r"[\u4e00-\u9fff]", console_answer.text), what
    # nothing refused changed anything
    assert {b["id"]: state(approver, b["id"]) for b in (emergency, draft, waiting)} == before
    for client in (approver, staff, other, web_approver, web_staff, web_other):
        client.close()
