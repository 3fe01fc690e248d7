"""Shapes shared by every endpoint: bounded integer parameters, pages, and the documented errors."""

from __future__ import annotations

from typing import Annotated, Any, Generic, TypeVar

from fastapi import Path, Query
from pydantic import BaseModel
from sqlalchemy.orm import Session

from core import access, regions
from core.errors import NotFound
from core.models import Region, User

T = TypeVar("T")

# Row ids are INTEGER columns (32-bit on PostgreSQL, 64-bit on SQLite): a larger number in a path is
# refused with 422 before it reaches the database (SQLite raises OverflowError beyond 64 bits,
# PostgreSQL "integer out of range" beyond 32).
MAX_ID = 2**31 - 1
# No page lies this far; a bound keeps offset + limit inside 64 bits on every database.
MAX_OFFSET = 2**31 - 1
MAX_PAGE = 10**6  # console list pages: (page - 1) * page size stays far inside MAX_OFFSET

Id = Annotated[int, Path(ge=1, le=MAX_ID, description="Row id.")]
Limit = Annotated[int, Query(ge=1, le=1000, description="Page size.")]
Offset = Annotated[int, Query(ge=0, le=MAX_OFFSET, description="Items to skip.")]


class Page(BaseModel, Generic[T]):
    items: list[T]
    total: int


# ---------------------------------------------------------------- documented errors
# The bodies api/errors.py (and FastAPI's HTTPException / validation) produce, for the OpenAPI spec.


class FieldError(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class ErrorRead(BaseModel):
    """An error: `detail` is a message, a list of field errors (422), or an object (a synthesis
    failure with each engine's reason); `reason` a stable word when the error has one."""

    detail: str | list[FieldError] | dict[str, Any]
    reason: str | None = None


def _error(description: str) -> dict[str, Any]:
    return {"model": ErrorRead, "description": description}


BAD_BODY = {400: _error("The body could not be parsed (not JSON, or not UTF-8).")}
UNAUTHORIZED = {401: _error("Not logged in, or the token is invalid or expired.")}
FORBIDDEN = {403: _error("Your role or area does not allow this.")}
NOT_FOUND = {404: _error("No such object (or area).")}
CONFLICT = {409: _error("The object's state does not allow this now.")}
INVALID = {422: _error("A parameter or a field of the body is refused; `detail` names it.")}
TOO_LARGE = {413: _error("The upload is larger than allowed.")}
TOO_MANY = {429: _error("Too many failed logins: wait for the time in `Retry-After`.")}
UNAVAILABLE = {503: _error("A service this needs (speech engine, broker) is unavailable.")}

# What every endpoint behind a login can answer.
AUTHED: dict[int | str, dict[str, Any]] = {**UNAUTHORIZED, **FORBIDDEN, **NOT_FOUND, **INVALID}


# ---------------------------------------------------------------- areas


def area_param(session: Session, user: User, code: str | None) -> str | None:
    """The area a request names, checked alike on every endpoint: 422 if `code` is no valid area
    code (e.g. 000000000000), 404 if no such area was imported, 403 if it lies outside the user's
    area. Absent: the user's own area (None for an unbound user: everywhere)."""
    if code is None:
        return user.area_code
    known_area(session, code)
    access.require_area(user, code)
    return code


def known_area(session: Session, code: str) -> Region:
    """The imported area `code` (422 if it is no valid area code, 404 if unknown)."""
    regions.validate_code(code)
    region = regions.get_by_code(session=session, code=code)
    if region is None:
        raise NotFound(f"unknown area code {code}", reason="unknown_area")
    return region
