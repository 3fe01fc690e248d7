"""User accounts: creation with validation, lookup, password authentication and reset."""

from __future__ import annotations

import logging
import re

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from core import auth, errors, passwords
from core.models import Region, Role, User

log = logging.getLogger(__name__)

USERNAME_RE = re.compile(r"[A-Za-z0-9_.-]{3,64}")
PASSWORD_MIN = 8
# Verified against when the user does not exist, so a miss costs as long as a wrong password.
_DUMMY_HASH = auth.hash_password("cunxiang-no-such-user")


class UserError(errors.CunxiangError):
    """A user could not be created or changed as asked; the subclass says why."""


class InvalidUser(UserError, errors.InvalidInput):
    """A bad username, password, role or area; `field` names it."""


class UsernameTaken(UserError, errors.Conflict):
    """Another user has this username."""


class UnknownUser(UserError, errors.NotFound):
    """No user has this username."""


def get_by_username(*, session: Session, username: str) -> User | None:
    """Return the user with this username, or None."""
    return session.scalar(select(User).where(User.username == username))


def create_user(
    *, session: Session, username: str, password: str, role: Role | str, area_code: str | None = None
) -> User:
    """Validate and store a new user with a hashed password, and commit."""
    if not USERNAME_RE.fullmatch(username or ""):
        raise InvalidUser("username", "must be 3-64 characters of letters, digits, '_', '.' or '-'")
    _check_password(password, username=username)
    try:
        role = Role(role)
    except ValueError:
        roles = ", ".join(r.value for r in Role)
        raise InvalidUser("role", f"unknown role {role!r}; one of {roles}") from None
    if area_code is not None and session.get(Region, area_code) is None:
        raise InvalidUser("area_code", f"area {area_code!r} does not exist")
    if get_by_username(session=session, username=username) is not None:
        raise UsernameTaken(f"username {username!r} is taken")
    user = User(username=username, password_hash=auth.hash_password(password), role=role, area_code=area_code)
    session.add(user)
    try:
        # TODO(issue 17): flush, and let the caller commit, once every caller does (the people
        # fixture of tests/scheduler/test_approval.py rolls back after creating its users).
        session.commit()
    except IntegrityError:  # created concurrently between the check and the commit
        session.rollback()
        raise UsernameTaken(f"username {username!r} is taken") from None
    log.info("created user %s (%s)", username, role.value)
    return user


def set_password(*, session: Session, username: str, password: str) -> User:
    """Replace the password of an existing user (flushed; the caller commits)."""
    _check_password(password, username=username)
    user = get_by_username(session=session, username=username)
    if user is None:
        raise UnknownUser(f"no user {username!r}")
    user.password_hash = auth.hash_password(password)
    revoke_tokens(user)
    session.flush()
    log.info("password of user %s reset; its tokens and sessions revoked", username)
    return user


def get_existing(*, session: Session, username: str) -> User:
    """The user with this username; UnknownUser otherwise."""
    user = get_by_username(session=session, username=username)
    if user is None:
        raise UnknownUser(f"no user {username!r}")
    return user


def revoke_tokens(user: User) -> None:
    """Invalidate every API token and console session issued to `user` so far (flushed by the caller)."""
    user.token_version = (user.token_version or 0) + 1


def set_active(*, session: Session, user: User, active: bool) -> User:
    """Enable or disable `user`; disabling also revokes its tokens and sessions (flushed)."""
    if user.is_active != active:
        user.is_active = active
        revoke_tokens(user)
        session.flush()
        log.info(
            "user %s %s", user.username, "enabled" if active else "disabled; its tokens and sessions revoked"
        )
    return user


def authenticate(*, session: Session, username: str, password: str) -> User | None:
    """Return the active user whose password matches, or None."""
    user = get_by_username(session=session, username=username)
    if user is None:
        auth.verify_password(password, _DUMMY_HASH)
        return None
    ok, new_hash = auth.verify_and_update(password, user.password_hash)
    if not ok or not user.is_active:
        return None
    if new_hash is not None:  # a stronger hash of the same password, kept when the caller commits
        user.password_hash = new_hash
        session.flush()
    return user


def _check_password(password: str | None, *, username: str) -> None:
    if len(password or "") < PASSWORD_MIN:
        raise InvalidUser("password", f"must be at least {PASSWORD_MIN} characters")
    if passwords.is_common(password or "", username=username):
        raise InvalidUser("password", "is one of the most common passwords (or the username); choose another")
