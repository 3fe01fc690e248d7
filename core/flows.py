"""The administration use cases run from the command line: accounts, areas, the demo county.

The command line acts as the machine's operator (it holds the database credentials), so these
check no role (`set_user_active` checks it when an API user asks); each owns its transaction as
every flow does: the services flush, the flow commits.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.orm import Session

from core import access, errors, regions, users
from core.db import transaction
from core.models import Role, User


def add_user(
    *, session: Session, username: str, password: str, role: Role | str, area_code: str | None = None
) -> User:
    """A new account with a hashed password (UserError when refused)."""
    with transaction(session):
        return users.create_user(
            session=session, username=username, password=password, role=role, area_code=area_code
        )


def set_password(*, session: Session, username: str, password: str) -> None:
    """A new password for an existing account (UserError when refused)."""
    with transaction(session):
        users.set_password(session=session, username=username, password=password)


def logout(*, session: Session, user: User) -> None:
    """End every session and token of `user` (logging out of the console or the API logs out of all)."""
    with transaction(session):
        users.revoke_tokens(user)
        session.flush()


def set_user_active(*, session: Session, actor: User | None, username: str, active: bool) -> User:
    """Disable (revoking its tokens and sessions at once) or enable an account.

    `actor` is the user asking (admins only; not oneself, so the county is never locked out by a
    slip), or None for the machine's operator at the command line. UserError/Forbidden when refused.
    """
    if actor is not None:
        access.require_role(actor)
    with transaction(session):
        user = users.get_existing(session=session, username=username)
        if actor is not None and user.id == actor.id:
            raise errors.Conflict("you cannot disable or enable your own account", reason="self")
        return users.set_active(session=session, user=user, active=active)


def import_regions(*, session: Session, path: Path | str) -> regions.ImportResult:
    """Areas from a CSV or JSON file, all or nothing (RegionImportError lists the bad rows)."""
    with transaction(session):
        return regions.import_file(session=session, path=path)


@dataclass(frozen=True)
class DemoAdmin:
    """What loading the demo did to the `admin` account: "created", "reset" or "kept"; the
    password when one was generated (shown once)."""

    state: str
    generated_password: str | None = None


def load_demo(*, session: Session, admin_password: str | None) -> tuple[int, DemoAdmin]:
    """The demo county and an `admin` account (created, or reset to `admin_password` when given);
    returns how many areas were created and what happened to `admin`."""
    with transaction(session):
        result = regions.load_demo(session=session)
        created = getattr(result, "created", 0) if result is not None else 0
        if users.get_by_username(session=session, username="admin") is None:
            password = admin_password or secrets.token_urlsafe(12)
            users.create_user(session=session, username="admin", password=password, role=Role.admin)
            admin = DemoAdmin("created", None if admin_password else password)
        elif admin_password:
            users.set_password(session=session, username="admin", password=admin_password)
            admin = DemoAdmin("reset")
        else:
            admin = DemoAdmin("kept")
    return created, admin
