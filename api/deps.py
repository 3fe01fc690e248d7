"""Typed dependencies, defined once: settings, services, database session, current user."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import OAuth2PasswordBearer
from sqlalchemy.orm import Session

from api.services import Services
from core import auth, regions
from core.models import Role, User
from core.settings import Settings
from devices import service as device_service
from devices.models import Device

oauth2_scheme = OAuth2PasswordBearer(tokenUrl="/api/v1/auth/token")


def get_services(request: Request) -> Services:
    return request.app.state.services


ServicesDep = Annotated[Services, Depends(get_services)]


def get_settings(services: ServicesDep) -> Settings:
    return services.settings


SettingsDep = Annotated[Settings, Depends(get_settings)]


def get_session(services: ServicesDep) -> Iterator[Session]:
    session = services.session_factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


# scope="function": commit before the response is sent, so a client's next request sees the change
# (the default, "request", would commit only after the response has gone out).
SessionDep = Annotated[Session, Depends(get_session, scope="function")]

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
    if user is None or not user.is_active:
        raise _UNAUTHORIZED
    return user


CurrentUser = Annotated[User, Depends(get_current_user)]


def require_roles(*roles: Role):
    """A dependency that lets only these roles (and admin) through."""

    def check(user: CurrentUser) -> User:
        if user.role != Role.admin and user.role not in roles:
            raise HTTPException(
                status_code=status.HTTP_403_FORBIDDEN,
                detail=f"role {user.role} may not do this; needs one of: admin, {', '.join(roles)}",
            )
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
    if user.area_code and not regions.is_under(area, user.area_code):
        raise HTTPException(
            status_code=status.HTTP_403_FORBIDDEN, detail=f"area {area} is outside your area {user.area_code}"
        )
    return area


def device_in_scope(session: Session, user: User, device_id: str) -> Device:
    """The speaker (404 if unknown) if it lies in the user's area (403 otherwise)."""
    device = device_service.get(session=session, device_id=device_id)
    if device is None:
        raise HTTPException(status_code=status.HTTP_404_NOT_FOUND, detail=f"no device {device_id}")
    if user.area_code and not regions.is_under(device.area_code, user.area_code):
        raise HTTPException(
            status_code=status.HTTP_403_FORBIDDEN,
            detail=f"device {device_id} is outside your area {user.area_code}",
        )
    return device
