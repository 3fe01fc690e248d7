"""The error family mapped to HTTP, once, for every JSON door (the console maps it to pages by type).

    NotFound 404 · Forbidden 403 · Conflict 409 · InvalidInput 422 · Unavailable 503

An InvalidInput answers in FastAPI's own validation shape, naming the field, so a client reads a
refused value the same way whether pydantic or a service refused it. `reason`, when the error has
one, is added beside `detail`.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from core.errors import Conflict, CunxiangError, Forbidden, InvalidInput, NotFound, Unavailable
from tts.exceptions import SynthesisFailed

log = logging.getLogger(__name__)

STATUS: dict[type[CunxiangError], int] = {
    NotFound: 404,
    Forbidden: 403,
    Conflict: 409,
    InvalidInput: 422,
    Unavailable: 503,
}


def status_of(exc: CunxiangError) -> int:
    """The HTTP status of an error of the family (by its class)."""
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 400


def body_of(exc: CunxiangError) -> dict:
    """The JSON body: `detail` (FastAPI's shape for a field error), and `reason` when given."""
    if isinstance(exc, SynthesisFailed):  # every engine tried, each with its reason
        body: dict = {
            "detail": {"msg": exc.message, "reasons": [{"engine": e, "reason": r} for e, r in exc.reasons]}
        }
    elif isinstance(exc, InvalidInput):
        loc = ["body", *exc.field.split(".")] if exc.field else ["body"]
        body = {"detail": [{"loc": loc, "msg": exc.message, "type": "value_error"}]}
    else:
        body = {"detail": exc.message}
    if exc.reason:
        body["reason"] = exc.reason
    return body


async def _handle(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, CunxiangError)
    status = status_of(exc)
    if status >= 500:
        log.warning("%s %s: %s", request.method, request.url.path, exc.message)
    return JSONResponse(body_of(exc), status_code=status)


def install(app: FastAPI) -> None:
    """Answer every CunxiangError a route lets out with its status and body."""
    app.add_exception_handler(CunxiangError, _handle)
