"""Password guessing is throttled per account and per address, on the API and the console alike.

Before: 50 wrong passwords in a row were each answered 401, and the right one then worked at once.
"""

from __future__ import annotations

import re

import httpx
import pytest
from sqlalchemy import select

from core import throttle
from core.db import make_engine, make_session_factory, session_scope
from scheduler.models import AuditEntry
from tests.api.conftest import ADMIN, STAFF

PER_ACCOUNT = 5  # the first window of throttle.ACCOUNT_LIMITS
PER_ADDRESS = 30  # the first window of throttle.ADDRESS_LIMITS


@pytest.fixture
def database_url(sqlite_url):
    """SQLite only: the counts are in memory, the audit entry an ordinary row (tried on both elsewhere)."""
    return sqlite_url


def test_the_limits_are_the_ones_tested():
    assert throttle.ACCOUNT_LIMITS.startswith(f"{PER_ACCOUNT}/minute")
    assert throttle.ADDRESS_LIMITS.startswith(f"{PER_ADDRESS}/minute")


def api_login(server, username: str, password: str) -> httpx.Response:
    with server.client() as c:
        return c.post("/api/v1/auth/token", data={"username": username, "password": password})


def console_login(server, username: str, password: str) -> httpx.Response:
    with httpx.Client(base_url=server.base_url, timeout=30, follow_redirects=False) as c:
        page = c.get("/login")
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
        return c.post("/login", data={"username": username, "password": password, "csrf_token": csrf})


def lockouts(database_url: str) -> list[tuple[str, str, dict]]:
    engine = make_engine(database_url)
    with session_scope(make_session_factory(engine)) as s:
        rows = s.scalars(
            select(AuditEntry).where(AuditEntry.action == "login_locked").order_by(AuditEntry.id)
        )
        found = [(e.object_type, e.object_id, e.detail) for e in rows]
    engine.dispose()
    return found


def test_an_account_is_locked_after_wrong_passwords_on_both_doors_and_the_lockout_is_audited(
    server, database_url
):
    for i in range(PER_ACCOUNT):  # wrong passwords through both doors count together
        r = (
            api_login(server, STAFF[0], "wrong-guess")
            if i % 2
            else console_login(server, STAFF[0], "wrong-guess")
        )
        assert r.status_code in (401, 400), r.text

    r = api_login(server, STAFF[0], STAFF[1])  # even the right password now waits
    assert r.status_code == 429
    assert 0 < int(r.headers["Retry-After"]) <= 60
    r = console_login(server, STAFF[0], STAFF[1])
    assert r.status_code == 429 and "锁定" in r.text
    assert 0 < int(r.headers["Retry-After"]) <= 60

    [(kind, key, detail)] = lockouts(database_url)  # one entry, when the lockout started
    assert (kind, key) == ("user", STAFF[0])
    assert (
        detail["limit"] == "5 per 1 minute"
        and detail["door"] == "console"
        and detail["address"] == "127.0.0.1"
    )
    assert 0 < detail["retry_after_s"] <= 60
    # another account from the same address is not locked
    assert api_login(server, *ADMIN).status_code == 200


def test_a_right_password_clears_the_account_count(server):
    for _ in range(PER_ACCOUNT - 1):
        assert api_login(server, STAFF[0], "wrong-guess").status_code == 401
    assert api_login(server, *STAFF).status_code == 200
    for _ in range(PER_ACCOUNT - 1):
        assert api_login(server, STAFF[0], "wrong-guess").status_code == 401
    assert api_login(server, *STAFF).status_code == 200


def test_an_address_trying_many_accounts_is_locked(server, database_url):
    # The server's throttle, with the address window cut to 4 so the test makes 4 guesses, not 30.
    server.app.state.login_throttle = throttle.LoginThrottle(address_limits="4/minute;100/hour")
    names = [f"guess{i}" for i in range(4)]  # one try each, below the account limit
    for i, name in enumerate(names):
        assert api_login(server, name, f"wrong-{i}").status_code == 401
    r = api_login(server, *ADMIN)
    assert r.status_code == 429 and int(r.headers["Retry-After"]) > 0
    assert console_login(server, *STAFF).status_code == 429
    assert [(kind, key) for kind, key, _ in lockouts(database_url)] == [("address", "127.0.0.1")]
