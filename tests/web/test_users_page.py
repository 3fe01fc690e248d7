"""The accounts page: an admin disables an account in the console, and its console session and API
token stop at once; enabling lets it log in afresh. Only admins see the page."""

from __future__ import annotations

import re

import httpx

from tests.api.conftest import ADMIN
from tests.web.conftest import PASSWORD
from tests.web.test_same_answers import api_client


def console_login(base_url: str, username: str, password: str) -> tuple[httpx.Client, str]:
    client = httpx.Client(base_url=base_url, timeout=30, follow_redirects=False)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/login").text).group(1)
    r = client.post("/login", data={"username": username, "password": password, "csrf_token": csrf})
    assert r.status_code == 303, r.text
    csrf = re.search(r'name="csrf-token" content="([^"]+)"', client.get("/console/items").text).group(1)
    return client, csrf


def test_an_admin_disables_and_enables_an_account_in_the_console(console):
    server, _fleet = console
    admin, admin_csrf = console_login(server.base_url, *ADMIN)
    staff_web, _ = console_login(server.base_url, "staff1", PASSWORD)
    staff_api = api_client(server.base_url, "staff1")
    assert staff_api.get("/api/v1/me").status_code == 200

    page = admin.get("/console/users")
    assert page.status_code == 200 and "staff1" in page.text and "账号管理" in page.text
    row = re.search(r'<tr data-username="staff1">.*?/console/users/(\d+)/disable', page.text, re.S)
    staff_id = row.group(1)
    assert f'<tr data-username="{ADMIN[0]}">' in page.text

    r = admin.post(f"/console/users/{staff_id}/disable", data={"csrf_token": admin_csrf})
    assert r.status_code == 303 and "done=disabled" in r.headers["location"]
    assert "已停用" in admin.get("/console/users").text
    # at once: the console session goes to the login page, the API token is refused
    assert staff_web.get("/console/items").status_code == 303
    assert staff_api.get("/api/v1/me").status_code == 401
    assert httpx.post(
        f"{server.base_url}/api/v1/auth/token", data={"username": "staff1", "password": PASSWORD}
    ).status_code == 401

    r = admin.post(f"/console/users/{staff_id}/enable", data={"csrf_token": admin_csrf})
    assert r.status_code == 303
    assert api_client(server.base_url, "staff1").get("/api/v1/me").status_code == 200
    assert staff_api.get("/api/v1/me").status_code == 401  # the old token stays revoked

    # not for others, and not on oneself
    staff_again, staff_csrf = console_login(server.base_url, "staff1", PASSWORD)
    assert staff_again.get("/console/users").status_code == 403
    assert staff_again.post(
        f"/console/users/{staff_id}/disable", data={"csrf_token": staff_csrf}
    ).status_code == 403
    admin_api = httpx.Client(base_url=server.base_url, timeout=30)
    token = admin_api.post("/api/v1/auth/token", data={"username": ADMIN[0], "password": ADMIN[1]})
    admin_api.headers["Authorization"] = f"Bearer {token.json()['access_token']}"
    admin_id = admin_api.get("/api/v1/me").json()["id"]
    refused = admin.post(f"/console/users/{admin_id}/disable", data={"csrf_token": admin_csrf})
    assert refused.status_code == 409 and "不能停用或启用自己的账号" in refused.text
    admin_api.close()
    for client in (admin, staff_web, staff_api, staff_again):
        client.close()
