"""Logout, a password change and disabling revoke a user's API tokens and console sessions at once.

Each case is tried on a live server over HTTP, through the API (bearer tokens) and the console
(the signed cookie): a token or cookie issued before is refused on its very next request.
"""

from __future__ import annotations

import re

import httpx

from api import cli
from tests.api.conftest import ADMIN, STAFF


def api_token(server, username: str, password: str) -> str:
    return server.login(username, password)


def console(server, username: str, password: str) -> tuple[httpx.Client, str]:
    """A logged-in browser-like client and its session's CSRF token."""
    client = httpx.Client(base_url=server.base_url, timeout=30, follow_redirects=False)
    page = client.get("/login")
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    r = client.post("/login", data={"username": username, "password": password, "csrf_token": csrf})
    assert r.status_code == 303, r.text
    page = client.get("/console/items")
    assert page.status_code == 200
    csrf = re.search(r'name="csrf-token" content="([^"]+)"', page.text).group(1)
    return client, csrf


def api_ok(server, token: str) -> bool:
    with server.client(token) as c:
        status = c.get("/api/v1/me").status_code
    assert status in (200, 401)
    return status == 200


def console_ok(client: httpx.Client) -> bool:
    r = client.get("/console/items")
    assert r.status_code in (200, 303)
    return r.status_code == 200


def with_cookie_of(server, client: httpx.Client) -> httpx.Client:
    """A second browser holding a copy of `client`'s cookie (as a thief would)."""
    copy = httpx.Client(base_url=server.base_url, timeout=30, follow_redirects=False)
    copy.cookies.set("cx_session", client.cookies.get("cx_session"))
    return copy


def test_api_logout_revokes_every_token_and_console_session(server):
    first, second = api_token(server, *STAFF), api_token(server, *STAFF)
    browser, _ = console(server, *STAFF)
    other_user = api_token(server, *ADMIN)
    assert api_ok(server, first) and api_ok(server, second) and console_ok(browser)

    with server.client(first) as c:
        assert c.post("/api/v1/auth/logout").status_code == 204

    assert not api_ok(server, first) and not api_ok(server, second)
    assert not console_ok(browser)
    assert api_ok(server, other_user)  # someone else's tokens are untouched
    assert api_ok(server, api_token(server, *STAFF))  # logging in again works
    with server.client(first) as c:  # the revoked token cannot log out again
        assert c.post("/api/v1/auth/logout").status_code == 401


def test_console_logout_revokes_a_copied_cookie_and_api_tokens(server):
    browser, csrf = console(server, *STAFF)
    stolen = with_cookie_of(server, browser)
    token = api_token(server, *STAFF)
    assert console_ok(stolen)

    r = browser.post("/logout", data={"csrf_token": csrf})
    assert r.status_code == 303 and r.headers["location"] == "/login"

    assert not console_ok(stolen)  # before: the copy stayed valid for 12 h
    assert not api_ok(server, token)
    again, _ = console(server, *STAFF)
    assert console_ok(again)


def test_a_password_change_at_the_command_line_revokes_tokens_and_sessions(server, database_url, monkeypatch):
    token = api_token(server, *STAFF)
    browser, _ = console(server, *STAFF)
    monkeypatch.setenv("CUNXIANG_DATABASE_URL", database_url)
    assert cli.main(["users", "passwd", "--username", STAFF[0], "--password", "a-new-staff-pw-7"]) == 0

    assert not api_ok(server, token) and not console_ok(browser)
    assert api_ok(server, api_token(server, STAFF[0], "a-new-staff-pw-7"))


def test_disabling_through_the_api_stops_the_user_at_once_and_enabling_lets_them_log_in_again(server):
    token = api_token(server, *STAFF)
    browser, _ = console(server, *STAFF)
    admin = api_token(server, *ADMIN)

    with server.client(token) as staff:  # only admins may
        r = staff.post(f"/api/v1/users/{ADMIN[0]}/disable")
        assert r.status_code == 403 and r.json()["reason"] == "role"
    with server.client(admin) as c:
        r = c.post(f"/api/v1/users/{ADMIN[0]}/disable")  # never oneself
        assert r.status_code == 409 and r.json()["reason"] == "self"
        assert c.post("/api/v1/users/nobody/disable").status_code == 404
        r = c.post(f"/api/v1/users/{STAFF[0]}/disable")
        assert r.status_code == 200 and r.json()["is_active"] is False

    assert not api_ok(server, token) and not console_ok(browser)
    with server.client() as c:
        r = c.post("/api/v1/auth/token", data={"username": STAFF[0], "password": STAFF[1]})
        assert r.status_code == 401
    page = httpx.get(f"{server.base_url}/login")
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    r = httpx.post(f"{server.base_url}/login", cookies=page.cookies,
                   data={"username": STAFF[0], "password": STAFF[1], "csrf_token": csrf})  # fmt: skip
    assert r.status_code == 400

    with server.client(admin) as c:
        r = c.post(f"/api/v1/users/{STAFF[0]}/enable")
        assert r.status_code == 200 and r.json()["is_active"] is True
    assert not api_ok(server, token)  # what was revoked stays revoked
    assert api_ok(server, api_token(server, *STAFF))
    assert console_ok(console(server, *STAFF)[0])


def test_disabling_at_the_command_line(server, database_url, monkeypatch, capsys):
    token = api_token(server, *STAFF)
    browser, _ = console(server, *STAFF)
    monkeypatch.setenv("CUNXIANG_DATABASE_URL", database_url)

    assert cli.main(["users", "disable", "--username", STAFF[0]]) == 0
    assert not api_ok(server, token) and not console_ok(browser)
    with server.client() as c:
        assert (
            c.post("/api/v1/auth/token", data={"username": STAFF[0], "password": STAFF[1]}).status_code == 401
        )

    assert cli.main(["users", "enable", "--username", STAFF[0]]) == 0
    assert api_ok(server, api_token(server, *STAFF))
    assert cli.main(["users", "disable", "--username", "nobody"]) == 1
    assert "no user 'nobody'" in capsys.readouterr().err
