"""Browser sessions: a signed cookie (itsdangerous, keyed by the server secret) with a CSRF token.

The cookie holds the user id, the user's token version, the login time and a per-session CSRF
token; nothing else. A cookie whose version is not the user's current one (after a logout, a
password change or disabling) is refused at once, like the API tokens. It is
HttpOnly, SameSite=Lax, Secure when the page was served over https, and expires with the API
tokens (`settings.auth.token_minutes`). Every state-changing form carries the CSRF token (a hidden
field, or the X-CSRF-Token header for fetch calls) and is refused without it.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from typing import Annotated
from urllib.parse import quote, urlsplit

from fastapi import Depends, Request
from fastapi.responses import Response
from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

from api.deps import ServicesDep, SessionDep
from core import regions
from core.models import Region, Role, User

COOKIE = "cx_session"
SALT = "cunxiang-web-session"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"


class LoginRequired(Exception):
    """No valid session: send the browser to the login page (and back to `next_url` after)."""

    def __init__(self, next_url: str, *, expired: bool) -> None:
        super().__init__(next_url)
        self.next_url = next_url
        self.expired = expired


class PageError(Exception):
    """An error shown as a page (403 outside your area, 404 unknown item ...), in Chinese."""

    def __init__(self, status_code: int, message: str) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message


@dataclass
class WebSession:
    """The decoded cookie (possibly anonymous) and whether it must be written back."""

    data: dict = field(default_factory=dict)
    state: str = "none"  # none | valid | expired | invalid
    dirty: bool = False

    @property
    def csrf(self) -> str:
        if "csrf" not in self.data:
            self.data["csrf"] = secrets.token_urlsafe(24)
            self.dirty = True
        return self.data["csrf"]


def _serializer(secret: str) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(secret, salt=SALT)


def read(request: Request) -> WebSession:
    """The request's session, decoded once per request."""
    cached = getattr(request.state, "web_session", None)
    if cached is not None:
        return cached
    services = request.app.state.services
    raw = request.cookies.get(COOKIE)
    web = WebSession()
    if raw:
        max_age = services.settings.auth.token_minutes * 60
        try:
            web.data = _serializer(services.token_secret).loads(raw, max_age=max_age)
            web.state = "valid"
        except SignatureExpired:
            web.state = "expired"
        except BadSignature:
            web.state = "invalid"
        if not isinstance(web.data, dict):
            web.data, web.state = {}, "invalid"
    request.state.web_session = web
    return web


def write(request: Request, response: Response, web: WebSession) -> Response:
    """Set the session cookie on a response."""
    services = request.app.state.services
    value = _serializer(services.token_secret).dumps(web.data)
    response.set_cookie(
        COOKIE,
        value,
        max_age=services.settings.auth.token_minutes * 60,
        path="/",
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https",
    )
    return response


def start(request: Request, response: Response, user: User) -> Response:
    """Log `user` in: a fresh session (new CSRF token, no carry-over from before)."""
    web = WebSession(
        data={
            "uid": user.id,
            "ver": user.token_version,
            "at": int(time.time()),
            "csrf": secrets.token_urlsafe(24),
        }
    )
    request.state.web_session = web
    return write(request, response, web)


def end(response: Response) -> Response:
    """Log out: drop the cookie."""
    response.delete_cookie(COOKIE, path="/")
    return response


def next_url_of(request: Request) -> str:
    """Where to come back after logging in: this page, or for a form post the page it came from."""
    if request.method == "GET":
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    else:
        referer = urlsplit(request.headers.get("referer", ""))
        same_site = not referer.netloc or referer.netloc == request.url.netloc
        target = (referer.path or "/console") if same_site else "/console"
        if referer.query and same_site:
            target += f"?{referer.query}"
    return target if target.startswith("/") and not target.startswith("//") else "/console"


def login_url(next_url: str, *, expired: bool) -> str:
    return f"/login?next={quote(next_url, safe='/')}" + ("&expired=1" if expired else "")


def user_of(request: Request, session) -> User | None:
    """The active user this browser's cookie names, if the cookie is valid and not revoked."""
    web = read(request)
    uid, version = web.data.get("uid"), web.data.get("ver")
    if web.state != "valid" or not isinstance(uid, int) or not isinstance(version, int):
        return None
    user = session.get(User, uid)
    if user is None or not user.is_active or user.token_version != version:
        return None
    return user


def current_user(request: Request, session: SessionDep, services: ServicesDep) -> User:
    """The logged-in user of this browser; LoginRequired otherwise."""
    user = user_of(request, session)
    if user is None:
        raise LoginRequired(next_url_of(request), expired=read(request).state in ("valid", "expired"))
    return user


WebUser = Annotated[User, Depends(current_user)]


async def check_csrf(request: Request) -> None:
    """Refuse a state-changing request without this session's CSRF token (403)."""
    web = read(request)
    sent = request.headers.get(CSRF_HEADER)
    if sent is None and request.headers.get("content-type", "").startswith(
        ("application/x-www-form-urlencoded", "multipart/form-data")
    ):
        sent = (await request.form()).get(CSRF_FIELD)
    expected = web.data.get("csrf") if web.state == "valid" else None
    if not expected or not isinstance(sent, str) or not secrets.compare_digest(sent, expected):
        if web.state != "valid" or "uid" not in web.data:
            raise LoginRequired(next_url_of(request), expired=True)
        raise PageError(403, "表单已失效（安全校验未通过），请刷新页面后重新提交。")


Csrf = Depends(check_csrf)

# ---------------------------------------------------------------- roles and areas

ROLE_LABELS = {
    Role.admin: "管理员",
    Role.approver: "审核员",
    Role.staff: "宣传员",
    Role.operator: "运维员",
    Role.viewer: "查看员",
}


def require_role(user: User, *roles: Role) -> None:
    """PageError 403 unless the user has one of these roles (admin always passes)."""
    if user.role != Role.admin and user.role not in roles:
        allowed = "、".join(ROLE_LABELS[r] for r in (Role.admin, *roles))
        raise PageError(403, f"您的角色（{ROLE_LABELS[user.role]}）不能使用此功能，需要：{allowed}。")


def check_area(session, user: User, code: str) -> Region:
    """The region, if it exists (404) and lies in the user's area (403)."""
    try:
        regions.validate_code(code)
    except regions.InvalidRegionCode:
        raise PageError(404, f"区域代码 {code} 无效，应为12位数字。") from None
    region = session.get(Region, code)
    if region is None:
        raise PageError(404, f"没有区域 {code}。")
    if user.area_code is not None and not regions.is_under(code, user.area_code):
        raise PageError(403, f"区域“{region.name}”不在您的管辖范围内。")
    return region


def home_area(session, user: User) -> str:
    """The user's own area, or for an unbound user the first county."""
    if user.area_code:
        return user.area_code
    roots, _ = regions.list_children(session=session, parent_code=None, limit=1)
    if not roots:
        raise PageError(404, "还没有导入任何区域。")
    return roots[0].code
