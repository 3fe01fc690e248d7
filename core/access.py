"""Who may act where: the two access rules every use case applies (role, then area).

A user bound to an area (``users.area_code``) reads and acts only inside it; an unbound user
(a county-wide admin) everywhere. Admin passes every role check. Refusals are `Forbidden` with a
stable `reason` ("role" or "area"), so every door answers them alike.
"""

from __future__ import annotations

from core import regions
from core.errors import Forbidden
from core.models import Role, User


def has_role(user: User, *roles: Role) -> bool:
    """Whether the user is an admin or has one of these roles."""
    return user.role == Role.admin or user.role in roles


def require_role(user: User, *roles: Role) -> None:
    """Raise Forbidden (reason "role") unless the user is an admin or has one of these roles."""
    if not has_role(user, *roles):
        raise Forbidden(
            f"role {user.role} may not do this; needs one of: admin, {', '.join(roles)}", reason="role"
        )


def in_area(user: User, code: str) -> bool:
    """Whether `code` lies inside the user's area (always, for an unbound user)."""
    return user.area_code is None or regions.is_under(code, user.area_code)


def require_area(user: User, code: str, *, what: str = "area", name: str | None = None) -> None:
    """Raise Forbidden (reason "area") unless `code` lies inside the user's area."""
    if not in_area(user, code):
        raise Forbidden(f"{what} {name or code} is outside your area {user.area_code}", reason="area")
