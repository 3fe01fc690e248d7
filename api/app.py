"""The FastAPI application."""

from __future__ import annotations

from contextlib import asynccontextmanager

from fastapi import FastAPI
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from api import errors
from api.middleware import BodySizeLimit, SecurityHeaders, body_limits, trusted_proxies
from api.routes import broadcasts, devices, fleet, playlists, regions, reports, schedule, system
from api.routes import tts as speech_routes
from api.routes import users as user_routes
from api.services import Services
from api.web import install as install_web
from core.settings import Settings


def create_app(
    settings: Settings, *, simulate_per_village: int = 0, simulate_args: list[str] | None = None
) -> FastAPI:
    """Build the app; its lifespan starts and stops the services."""
    services = Services(
        settings, simulate_per_village=simulate_per_village, simulate_args=simulate_args or []
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.services = services
        try:
            await services.start()
            yield
        finally:
            await services.stop()

    app = FastAPI(
        title="cunxiang 村响",
        version="0.1.0",
        description="Broadcast scheduling for village loudspeaker networks.",
        lifespan=lifespan,
    )
    for module in (system, regions, fleet, devices, broadcasts, playlists, schedule, reports):
        app.include_router(module.router)
    app.include_router(speech_routes.router)
    app.include_router(user_routes.router)
    errors.install(app)
    install_web(app)  # the console, public village pages and static files
    # Added innermost first: the proxy headers decide the scheme before the security headers
    # look at it, and a too-large body is refused before anything inside reads it.
    max_body, max_upload = body_limits(settings)
    app.add_middleware(BodySizeLimit, max_body=max_body, max_upload=max_upload)
    app.add_middleware(SecurityHeaders)
    proxies = trusted_proxies(settings)
    if proxies:  # `serve` runs uvicorn with proxy_headers off, so only these addresses count
        app.add_middleware(ProxyHeadersMiddleware, trusted_hosts=proxies)
    return app
