"""Who may see and act on a broadcast: area scope, approval rights, the two-person rule.

Every rule here is applied by the use cases (`scheduler.flows`), so no door can skip one; doors
may also ask (`may_cancel`, `approval_refusal`) to decide what buttons to show.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.orm import Session

from core import access, regions
from core.errors import Forbidden, NotFound
from core.models import Role, User
from devices.models import Device
from scheduler.models import OPEN_STATUSES, Broadcast

APPROVER_ROLES = frozenset({Role.admin, Role.approver})
# Who writes broadcasts (admin always may).
AUTHOR_ROLES = (Role.staff, Role.approver)


def check_scope(*, user: User, area_codes: Sequence[str], devices: Sequence[Device]) -> None:
    """Raise Forbidden unless every target lies inside the user's own area."""
    for code in area_codes:
        access.require_area(user, code)
    for device in devices:
        access.require_area(user, device.area_code, what="device", name=device.id)


def scope_of(codes: Sequence[str]) -> str | None:
    """The narrowest county, township or village code holding every code (None: several counties,
    which only unbound users see)."""
    return regions.narrowest_common(codes)


def can_see(*, user: User, broadcast: Broadcast) -> bool:
    """A user bound to an area sees broadcasts whose targets all lie inside it."""
    if user.area_code is None:
        return True
    return broadcast.scope_code is not None and regions.is_under(broadcast.scope_code, user.area_code)


def visible_broadcast(*, session: Session, user: User, broadcast_id: int) -> Broadcast:
    """The broadcast if the user may see it; NotFound or Forbidden otherwise."""
    broadcast = session.get(Broadcast, broadcast_id)
    if broadcast is None:
        raise NotFound(f"no broadcast {broadcast_id}")
    if not can_see(user=user, broadcast=broadcast):
        raise Forbidden(f"broadcast {broadcast_id} is outside your area {user.area_code}", reason="area")
    return broadcast


def approval_refusal(*, user: User, broadcast: Broadcast) -> Forbidden | None:
    """Why this user may not approve this broadcast (reason "role", "area" or
    "emergency_second_person"), or None when they may."""
    if user.role not in APPROVER_ROLES:
        return Forbidden(f"role {user.role} may not approve; needs approver or admin", reason="role")
    if user.area_code is not None and not can_see(user=user, broadcast=broadcast):
        return Forbidden(f"the targets are outside your area {user.area_code}", reason="area")
    if broadcast.priority.is_emergency and broadcast.created_by == user.id:
        return Forbidden(
            "an emergency broadcast needs a second person: its creator cannot approve it",
            reason="emergency_second_person",
        )
    return None


def may_cancel(*, user: User, broadcast: Broadcast) -> bool:
    """Its author, or an approver whose area holds its targets, may cancel an open broadcast."""
    if broadcast.status not in OPEN_STATUSES:
        return False
    if broadcast.created_by == user.id:
        return True
    return user.role in APPROVER_ROLES and can_see(user=user, broadcast=broadcast)
