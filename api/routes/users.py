"""Accounts: disabling and enabling a user (admins only; the CLI does the same for the operator)."""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import CurrentUser, SessionDep
from api.routes.common import AUTHED, CONFLICT
from core import flows as core_flows
from core.schemas import UserRead

router = APIRouter(prefix="/api/v1/users", tags=["users"])


@router.post("/{username}/disable", responses={**AUTHED, **CONFLICT})
def disable(username: str, user: CurrentUser, session: SessionDep) -> UserRead:
    """Disable an account: it can no longer log in, and its tokens and console sessions stop at once."""
    return UserRead.model_validate(
        core_flows.set_user_active(session=session, actor=user, username=username, active=False)
    )


@router.post("/{username}/enable", responses={**AUTHED, **CONFLICT})
def enable(username: str, user: CurrentUser, session: SessionDep) -> UserRead:
    """Enable a disabled account again (it logs in afresh; old tokens stay revoked)."""
    return UserRead.model_validate(
        core_flows.set_user_active(session=session, actor=user, username=username, active=True)
    )
