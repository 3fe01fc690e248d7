"""Typed dependencies, defined once: settings, services, database session, current user."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import OAuth2PasswordBearer
from sqlalchemy.orm import Session

from api.services import Services
from core import auth
from core.models import Role, User
from core.settings import Settings

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
