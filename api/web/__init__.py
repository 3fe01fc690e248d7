"""The web console (Jinja2 pages for staff, approvers and operators) and the public village pages."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

from api.web import render
from api.web.session import LoginRequired, PageError, login_url


def _wants_json(request: Request) -> bool:
    return "application/json" in request.headers.get("accept", "") or request.url.path.endswith(".json")


async def _login_required(request: Request, exc: LoginRequired):
    target = login_url(exc.next_url, expired=exc.expired)
    if _wants_json(request):
        return JSONResponse({"detail": "登录已过期，请重新登录。", "login": target}, status_code=401)
    return RedirectResponse(target, status_code=303)


async def _page_error(request: Request, exc: PageError):
    if _wants_json(request):
        return JSONResponse({"detail": exc.message}, status_code=exc.status_code)
    user = None
    try:  # the header shows who is logged in, if anyone; never fail the error page itself
        from api.web.session import read
        from core.models import User

        uid = read(request).data.get("uid")
        if isinstance(uid, int):
            with request.app.state.services.session_factory() as s:
                user = s.get(User, uid)
                if user is not None:
                    s.expunge(user)
    except Exception:  # noqa: BLE001
        user = None
    return render.page(
        request, "error.html", user, status_code=exc.status_code, code=exc.status_code, message=exc.message
    )


def install(app: FastAPI) -> None:
    """Add the console and public pages, their static files and error pages to the app."""
    from api.web import console, fleet, login, public, reports, users

    app.mount("/static", StaticFiles(directory=str(render.STATIC)), name="static")
    for module in (login, console, fleet, reports, public, users):
        app.include_router(module.router)
    app.add_exception_handler(LoginRequired, _login_required)
    app.add_exception_handler(PageError, _page_error)
