"""Administrative areas, as far as the user's area reaches.

A user bound to an area sees that area, everything under it, and the areas above it (the county
their township lies in); listing the children of an area outside theirs is a 403, like every other
area-scoped endpoint.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from api.deps import CurrentUser, SessionDep, area_in_scope
from api.routes.common import AUTHED, Limit, Offset, Page, known_area
from core import regions
from core.schemas import RegionRead

router = APIRouter(prefix="/api/v1/regions", tags=["regions"], responses=AUTHED)


@router.get("")
def list_regions(
    session: SessionDep,
    user: CurrentUser,
    parent: Annotated[
        str | None,
        Query(
            pattern=r"^\d{12}$",
            description="Parent area code; absent = roots (your own area if you have one).",
        ),
    ] = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> Page[RegionRead]:
    """Children of an area (or the top-level areas; for a user bound to an area, that area)."""
    if parent is not None:
        known_area(session, parent)
    if parent is None and user.area_code is not None:
        own = regions.get_by_code(session=session, code=user.area_code)
        items = [own] if own is not None else []
        return Page(
            items=[RegionRead.model_validate(r) for r in items[offset : offset + limit]], total=len(items)
        )
    area_in_scope(user, parent)
    items, total = regions.list_children(session=session, parent_code=parent, limit=limit, offset=offset)
    return Page(items=[RegionRead.model_validate(r) for r in items], total=total)


@router.get("/{code}")
def get_region(
    code: Annotated[str, Path(pattern=r"^\d{12}$", description="12-digit area code.")],
    session: SessionDep,
    user: CurrentUser,
) -> RegionRead:
    """One area by its 12-digit code: yours, one under it, or one above it."""
    region = known_area(session, code)
    if user.area_code is not None and code not in regions.chain(user.area_code):
        area_in_scope(user, code)
    return RegionRead.model_validate(region)
