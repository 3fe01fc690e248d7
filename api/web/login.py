"""Logging in and out of the console."""

from __future__ import annotations

import math
import secrets
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse

from api.deps import LoginThrottleDep, SessionDep, client_address
from api.web import render
from api.web import session as web_session
from core import flows as core_flows
from scheduler import login_flows

router = APIRouter(include_in_schema=False)


def _safe_next(value: str | None) -> str:
    if value and value.startswith("/") and not value.startswith("//"):
        return value
    return "/console"


@router.get("/")
def root() -> RedirectResponse:
    return RedirectResponse("/console", status_code=303)


@router.get("/login")
def login_page(request: Request, next: str | None = None, expired: int = 0):
    return render.page(request, "login.html", next=_safe_next(next), expired=bool(expired), error=None)


@router.post("/login")
def login(
    request: Request,
    session: SessionDep,
    throttle: LoginThrottleDep,
    username: Annotated[str, Form()] = "",
    password: Annotated[str, Form()] = "",
    csrf_token: Annotated[str, Form()] = "",
    next: Annotated[str, Form()] = "/console",
):
    web = web_session.read(request)
    expected = web.data.get("csrf") if web.state == "valid" else None
    error, status_code, headers = None, 400, {}
    if not expected or not secrets.compare_digest(csrf_token, expected):
        error = "登录页面已过期，请再输入一次。"
    elif not username.strip() or not password:
        error = "请输入用户名和密码。"
    else:
        result = login_flows.log_in(
            session=session, throttle=throttle, username=username.strip(), password=password,
            address=client_address(request), door="console",
        )  # fmt: skip
        if result.retry_after is not None:
            minutes = math.ceil(result.retry_after / 60)
            error = f"密码错误次数过多，登录已暂时锁定，请 {minutes} 分钟后再试。"
            status_code, headers = 429, {"Retry-After": str(result.retry_after)}
        elif result.user is None:
            error = "用户名或密码错误。"
        else:
            response = RedirectResponse(_safe_next(next), status_code=303)
            return web_session.start(request, response, result.user)
    response = render.page(
        request, "login.html", next=_safe_next(next), expired=False, error=error, username=username,
        status_code=status_code,
    )  # fmt: skip
    response.headers.update(headers)
    return response


@router.post("/logout", dependencies=[web_session.Csrf])
def logout(request: Request, session: SessionDep):
    """Log out of every session and token of this user (a stolen copy of the cookie dies too)."""
    user = web_session.user_of(request, session)
    if user is not None:
        core_flows.logout(session=session, user=user)
    return web_session.end(RedirectResponse("/login", status_code=303))
