"""Health, login, and audio downloads."""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request, status
from fastapi.responses import FileResponse, JSONResponse
from fastapi.security import OAuth2PasswordRequestForm
from pydantic import BaseModel

from api.deps import CurrentUser, LoginThrottleDep, ServicesDep, SessionDep, SettingsDep, client_address
from api.routes.common import BAD_BODY, INVALID, NOT_FOUND, TOO_MANY, UNAUTHORIZED
from core import auth
from core import flows as core_flows
from core.schemas import UserRead
from scheduler import login_flows
from tts import store

router = APIRouter()
SHA256_RE = re.compile(r"[0-9a-f]{64}")  # whole name: used with fullmatch (`$` lets "\n" by)


@router.get(
    "/api/v1/health",
    tags=["system"],
    responses={503: {"model": dict, "description": "The database, broker or scheduler is down (same body)."}},
)
def health(services: ServicesDep) -> JSONResponse:
    """Database, broker and scheduler state (`role`: this process runs the scheduler, `active`, or
    stands by for it, `standby`); 503 when any is down. No token needed."""
    body = services.health()
    return JSONResponse(body, status_code=200 if body["status"] == "ok" else 503)


class Token(BaseModel):
    access_token: str
    token_type: str = "bearer"
    expires_in: int


@router.post(
    "/api/v1/auth/token", tags=["auth"], responses={**BAD_BODY, **UNAUTHORIZED, **INVALID, **TOO_MANY}
)
def login(
    form: Annotated[OAuth2PasswordRequestForm, Depends()],
    request: Request,
    session: SessionDep,
    services: ServicesDep,
    settings: SettingsDep,
    throttle: LoginThrottleDep,
) -> Token:
    """OAuth2 password flow: username and password in, bearer token out. After repeated wrong
    passwords for an account or from an address: 429 with Retry-After, even for the right one."""
    result = login_flows.log_in(
        session=session, throttle=throttle, username=form.username, password=form.password,
        address=client_address(request), door="api",
    )  # fmt: skip
    if result.retry_after is not None:
        raise HTTPException(
            status_code=status.HTTP_429_TOO_MANY_REQUESTS,
            detail=f"too many wrong passwords: try again in {result.retry_after} s",
            headers={"Retry-After": str(result.retry_after)},
        )
    user = result.user
    if user is None:
        raise HTTPException(
            status_code=status.HTTP_401_UNAUTHORIZED,
            detail="wrong username or password",
            headers={"WWW-Authenticate": "Bearer"},
        )
    minutes = settings.auth.token_minutes
    token = auth.create_access_token(
        subject=str(user.id), role=str(user.role), version=user.token_version, secret=services.token_secret,
        minutes=minutes,
    )  # fmt: skip
    return Token(access_token=token, expires_in=minutes * 60)


@router.post(
    "/api/v1/auth/logout", tags=["auth"], status_code=status.HTTP_204_NO_CONTENT, responses=UNAUTHORIZED
)
def logout(user: CurrentUser, session: SessionDep) -> None:
    """Revoke every token and console session of the logged-in user, this one included."""
    core_flows.logout(session=session, user=user)


@router.get("/api/v1/me", tags=["auth"], responses=UNAUTHORIZED)
def me(user: CurrentUser) -> UserRead:
    """The logged-in user."""
    return UserRead.model_validate(user)


@router.get("/media/{sha256}.mp3", tags=["media"], response_class=FileResponse, responses=NOT_FOUND)
def media(sha256: str, settings: SettingsDep) -> FileResponse:
    """An audio asset by content hash (speakers download here; the hash is the name)."""
    if not SHA256_RE.fullmatch(sha256):
        raise HTTPException(status_code=404, detail="no such audio")
    path = store.path_for(settings.audio_dir, sha256)
    if not path.is_file():
        raise HTTPException(status_code=404, detail="no such audio")
    return FileResponse(path, media_type="audio/mpeg", headers={"Cache-Control": "public, max-age=31536000"})
