"""Administrative areas."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query

from api.deps import CurrentUser, SessionDep
from api.routes.common import Limit, Offset, Page
from core import regions
from core.schemas import RegionRead

router = APIRouter(prefix="/api/v1/regions", tags=["regions"])


@router.get("")
def list_regions(
    session: SessionDep,
    _user: CurrentUser,
    parent: Annotated[
        str | None, Query(pattern=r"^\d{12}$", description="Parent area code; absent = roots.")
    ] = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> Page[RegionRead]:
    """Children of an area (or the top-level areas)."""
    if parent is not None and regions.get_by_code(session=session, code=parent) is None:
        raise HTTPException(status_code=404, detail=f"unknown area code {parent}")
    items, total = regions.list_children(session=session, parent_code=parent, limit=limit, offset=offset)
    return Page(items=[RegionRead.model_validate(r) for r in items], total=total)


@router.get("/{code}")
def get_region(code: str, session: SessionDep, _user: CurrentUser) -> RegionRead:
    """One area by its 12-digit code."""
    region = regions.get_by_code(session=session, code=code)
    if region is None:
        raise HTTPException(status_code=404, detail=f"unknown area code {code}")
    return RegionRead.model_validate(region)
