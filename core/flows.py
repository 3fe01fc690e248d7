"""The administration use cases run from the command line: accounts, areas, the demo county.

The command line acts as the machine's operator (it holds the database credentials), so these
check no role; each owns its transaction as every flow does: the services flush, the flow commits.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.orm import Session

from core import regions, users
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
