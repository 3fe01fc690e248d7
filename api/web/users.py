"""The accounts page for admins: who may log in, and disabling or enabling an account
(`core.flows.set_user_active`: a disabled account's tokens and console sessions stop at once)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse
from sqlalchemy import select

from api.deps import SessionDep
from api.routes.common import Id
from api.web import render
from api.web.messages import page_error
from api.web.session import ROLE_LABELS, Csrf, WebUser, require_role
from core import flows as core_flows
from core.errors import Conflict, CunxiangError
from core.models import User

router = APIRouter(prefix="/console/users", include_in_schema=False)
DONE = {"disabled": "已停用该账号，它的登录已全部失效。", "enabled": "已启用该账号，请让其重新登录。"}


@router.get("")
def users_page(request: Request, session: SessionDep, user: WebUser, done: str | None = None):
    require_role(user)
    accounts = session.scalars(select(User).order_by(User.username)).all()
    return render.page(
        request, "users.html", user, accounts=accounts, roles=ROLE_LABELS, done=DONE.get(done or "")
    )


def _set_active(session, user: User, user_id: int, active: bool):
    require_role(user)
    target = session.get(User, user_id)
    username = target.username if target is not None else f"#{user_id}"
    try:
        core_flows.set_user_active(session=session, actor=user, username=username, active=active)
    except CunxiangError as exc:
        raise page_error(exc, {Conflict: "不能停用或启用自己的账号。"}) from None
    return RedirectResponse(f"/console/users?done={'enabled' if active else 'disabled'}", status_code=303)


@router.post("/{user_id}/disable", dependencies=[Csrf])
def disable(session: SessionDep, user: WebUser, user_id: Id):
    return _set_active(session, user, user_id, False)


@router.post("/{user_id}/enable", dependencies=[Csrf])
def enable(session: SessionDep, user: WebUser, user_id: Id):
    return _set_active(session, user, user_id, True)

