"""Pure ASGI middleware that guards every door: request size limits and security headers.

Pure ASGI (not `BaseHTTPMiddleware`) so that a body is counted as it streams, before FastAPI,
the form parser or authentication buffer it, and so that nothing here buffers a response.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core.settings import Settings

# Room for the multipart envelope (boundaries, part headers, the other form fields) on top of
# the audio file itself, so a file of exactly audio.max_upload_mb still fits.
MULTIPART_ENVELOPE_BYTES = 256 * 1024

# The routes that take a recorded audio file; every other route gets the small JSON/form limit.
UPLOAD_PATHS = frozenset({"/api/v1/tts/upload", "/api/v1/playlists/audio"})

TOO_LARGE_DETAIL = "请求内容过大"


class BodyTooLarge(HTTPException):
    """The body crossed its limit while streaming (an HTTPException, so FastAPI's body parsing
    lets it through instead of turning it into a 400)."""

    def __init__(self, limit: int) -> None:
        super().__init__(status_code=413, detail=TOO_LARGE_DETAIL)
        self.limit = limit


def body_limits(settings: Settings) -> tuple[int, int]:
    """(JSON/form limit, upload-route limit) in bytes."""
    upload_mb = settings.http.max_upload_mb or settings.audio.max_upload_mb
    return settings.http.max_body_kb * 1024, upload_mb * 1024 * 1024 + MULTIPART_ENVELOPE_BYTES


class BodySizeLimit:
    """Refuse a request body over its limit with 413: at once when Content-Length says so, or as
    soon as the streamed (e.g. chunked) body crosses it, whatever the app was doing with it."""

    def __init__(self, app: ASGIApp, *, max_body: int, max_upload: int) -> None:
        self.app = app
        self.max_body = max_body
        self.max_upload = max_upload

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_upload if scope["path"] in UPLOAD_PATHS else self.max_body
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await _send_413(send, limit)  # before a single body byte is read
            return

        received = 0
        exceeded = False
        started = False

        async def limited_receive() -> Message:
            nonlocal received, exceeded
            if exceeded:
                raise BodyTooLarge(limit)
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    exceeded = True
                    raise BodyTooLarge(limit)
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if exceeded:
                # Whatever the app made of the interrupted body (a 400, its own 413), the answer
                # is ours, once.
                if message["type"] == "http.response.start" and not started:
                    started = True
                    await _send_413(send, limit)
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except BodyTooLarge:
            if not started:
                await _send_413(send, limit)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # the server (h11/httptools) refuses a malformed length itself
    return None


async def _send_413(send: Send, limit: int) -> None:
    body = json.dumps(
        {"detail": TOO_LARGE_DETAIL, "reason": "body_too_large", "limit_bytes": limit},
        ensure_ascii=False,
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


# The console and the village pages: scripts only from our own /static (no inline script, no
# handlers in attributes, no javascript: URLs), nothing may frame us. Inline *styles* stay allowed:
# the fleet meters set their width in a style attribute and the QR codes are inline SVG.
CSP = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data:",
        "media-src 'self' blob:",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)
# FastAPI's /docs and /redoc pages load Swagger UI / ReDoc from jsDelivr and start them with an
# inline script: on those paths only, that CDN and inline script are allowed.
DOCS_CSP = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net",
        "style-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net https://fonts.googleapis.com",
        "font-src 'self' https://fonts.gstatic.com",
        "img-src 'self' data: https://fastapi.tiangolo.com https://cdn.redoc.ly",
        "worker-src 'self' blob:",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'self'",
        "frame-ancestors 'none'",
    )
)
DOCS_PATHS = frozenset({"/docs", "/docs/oauth2-redirect", "/redoc"})
HSTS = "max-age=31536000"  # one year; no includeSubDomains: the county's other hosts are not ours

_COMMON = (
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"x-frame-options", b"DENY"),  # for browsers that predate frame-ancestors
)


class SecurityHeaders:
    """Add CSP, nosniff, Referrer-Policy and frame refusal to every response; HSTS when the
    request came over TLS (directly, or through a trusted proxy that said so)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        extra = list(_COMMON)
        csp = DOCS_CSP if scope["path"] in DOCS_PATHS else CSP
        extra.append((b"content-security-policy", csp.encode()))
        if scope.get("scheme") == "https":
            extra.append((b"strict-transport-security", HSTS.encode()))

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = _merge(message.get("headers", ()), extra)
            await send(message)

        await self.app(scope, receive, with_headers)


def _merge(headers: Iterable[tuple[bytes, bytes]], extra: list[tuple[bytes, bytes]]) -> list:
    headers = list(headers)
    have = {name.lower() for name, _ in headers}
    return [*headers, *((n, v) for n, v in extra if n not in have)]


def trusted_proxies(settings: Settings) -> list[str]:
    """The configured proxy addresses/networks, for uvicorn's ProxyHeadersMiddleware."""
    return [p.strip() for p in settings.http.trusted_proxies.split(",") if p.strip()]
