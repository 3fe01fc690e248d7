"""Typed dependencies, defined once: settings, services, database session, current user, and what
use cases need from the running server (the job planner, the command sender)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import OAuth2PasswordBearer
from sqlalchemy import event
from sqlalchemy.orm import Session

from api.services import Services
from core import access, auth
from core.errors import NotFound, Unavailable
from core.models import Role, User
from core.settings import Settings
from core.throttle import LoginThrottle
from devices import service as device_service
from devices.commands import CommandSender
from devices.models import Device
from scheduler.planner import JobPlanner

log = logging.getLogger(__name__)

oauth2_scheme = OAuth2PasswordBearer(tokenUrl="/api/v1/auth/token")


def get_services(request: Request) -> Services:
    return request.app.state.services


ServicesDep = Annotated[Services, Depends(get_services)]


def get_settings(services: ServicesDep) -> Settings:
    return services.settings


SettingsDep = Annotated[Settings, Depends(get_settings)]


def get_session(services: ServicesDep) -> Iterator[Session]:
    """One session per request. It never commits: the use case (a `flows` function) owns the
    transaction; what is left uncommitted when the request ends is rolled back, and said so."""
    session = services.session_factory()
    written: list[bool] = []  # flushed since the last commit
    event.listen(session, "after_flush", lambda *_: written.append(True))
    event.listen(session, "after_commit", lambda *_: written.clear())
    try:
        yield session
        if written or session.new or session.dirty or session.deleted:
            log.warning("request left uncommitted changes; rolled back (a door changed data outside a flow)")
    finally:
        session.close()


# scope="function": the session is closed before the response is sent.
SessionDep = Annotated[Session, Depends(get_session, scope="function")]


def get_planner(services: ServicesDep) -> JobPlanner:
    return services.runner


def get_sender(services: ServicesDep) -> CommandSender:
    if services.sender is None:
        raise Unavailable("the speaker link is not up yet", reason="link")
    return services.sender


PlannerDep = Annotated[JobPlanner, Depends(get_planner)]
SenderDep = Annotated[CommandSender, Depends(get_sender)]

_UNAUTHORIZED = HTTPException(
    status_code=status.HTTP_401_UNAUTHORIZED,
    detail="not authenticated: get a token at POST /api/v1/auth/token",
    headers={"WWW-Authenticate": "Bearer"},
)


def get_current_user(
    token: Annotated[str, Depends(oauth2_scheme)], services: ServicesDep, session: SessionDep
) -> User:
    try:
        claims = auth.decode_access_token(token, services.token_secret)
    except auth.InvalidToken:
        raise _UNAUTHORIZED from None
    user = session.get(User, int(claims.subject)) if claims.subject.isdigit() else None
    # A token issued before the user's last logout, password change or disabling is revoked.
    if user is None or not user.is_active or claims.version != user.token_version:
        raise _UNAUTHORIZED
    return user


CurrentUser = Annotated[User, Depends(get_current_user)]


def require_roles(*roles: Role):
    """A dependency that lets only these roles (and admin) through (core.access, as the flows do)."""

    def check(user: CurrentUser) -> User:
        access.require_role(user, *roles)
        return user

    return check


# ---------------------------------------------------------------- areas
# A user bound to an area (users.area_code) reads and acts only inside it; an unbound user
# (county-wide admin) everywhere. Outside is a 403 naming both areas, never an empty answer.


def area_in_scope(user: User, area: str | None) -> str | None:
    """The area a request looks at: `area` if it lies in the user's area (403 otherwise); when
    absent, the user's own area (None for an unbound user: everywhere)."""
    if area is None:
        return user.area_code
    access.require_area(user, area)
    return area


def device_in_scope(session: Session, user: User, device_id: str) -> Device:
    """The speaker (404 if unknown) if it lies in the user's area (403 otherwise)."""
    device = device_service.get(session=session, device_id=device_id)
    if device is None:
        raise NotFound(f"no device {device_id}")
    access.require_area(user, device.area_code, what="device", name=device_id)
    return device


# ---------------------------------------------------------------- login throttling

_throttle_lock = threading.Lock()


def get_login_throttle(request: Request) -> LoginThrottle:
    """The server's one login throttle (in memory; shared by the API and the console)."""
    with _throttle_lock:
        throttle = getattr(request.app.state, "login_throttle", None)
        if throttle is None:
            throttle = request.app.state.login_throttle = LoginThrottle()
    return throttle


LoginThrottleDep = Annotated[LoginThrottle, Depends(get_login_throttle)]


def client_address(request: Request) -> str:
    """The address a request came from (the proxy's, unless uvicorn is told to trust its headers)."""
    return request.client.host if request.client else "unknown"
