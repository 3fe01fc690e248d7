"""Logging in, throttled: the use case behind the API's token route and the console's login form.

It lives here, not in core/flows.py, because a lockout is written to the audit log, which lives in
the scheduler (core may not import it). Throttling is `core.throttle`: a login is refused unchecked
while the account or the address is locked; each wrong password counts; a lockout that starts is
recorded (action ``login_locked``, object the account or the address, with the window and the
door) and logged.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy.orm import Session

from core import users
from core.db import transaction
from core.models import User
from core.throttle import LoginThrottle
from scheduler import audit

log = logging.getLogger(__name__)

OBJECT_ID_MAX = 64  # audit_log.object_id


@dataclass(frozen=True)
class LoginResult:
    """The user whose password matched (None: wrong or disabled), or how long to wait (throttled)."""

    user: User | None
    retry_after: int | None = None  # seconds; set when refused without checking the password


def log_in(
    *, session: Session, throttle: LoginThrottle, username: str, password: str, address: str, door: str
) -> LoginResult:
    """Check a password unless the account or the address is locked; count and record failures."""
    wait = throttle.retry_after(username, address)
    if wait is not None:
        log.info("login for %r from %s refused unchecked for %s s (throttled)", username[:64], address, wait)
        return LoginResult(None, wait)
    with transaction(session):  # commits a stronger hash of a right password, or the lockouts
        user = users.authenticate(session=session, username=username, password=password)
        if user is not None:
            throttle.succeeded(username)
            return LoginResult(user)
        for lockout in throttle.failed(username, address):
            log.warning(
                "login locked: %s %r after %s wrong passwords (%s door, from %s) for %s s",
                lockout.scope, lockout.key[:64], lockout.limit, door, address, lockout.retry_after,
            )  # fmt: skip
            audit.record(
                session=session,
                user=None,
                action="login_locked",
                object_type="user" if lockout.scope == "account" else "address",
                object_id=lockout.key[:OBJECT_ID_MAX],
                detail={"limit": lockout.limit, "retry_after_s": lockout.retry_after, "door": door,
                        "address": address},
            )  # fmt: skip
    return LoginResult(None)
