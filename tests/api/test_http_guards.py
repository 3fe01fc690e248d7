"""Request size limits, security headers and the trusted proxy, against a real uvicorn server."""

from __future__ import annotations

import socket
from collections.abc import Iterable, Iterator

import pytest

from tests.api.conftest import ADMIN, make_settings, seed
from tests.live import LiveServer, free_port

MB = 1024 * 1024


def _live(tmp_path_factory, broker_url: str, upload_mb: int | None = None, **http) -> Iterator[LiveServer]:
    tmp = tmp_path_factory.mktemp("guards")
    url = f"sqlite:///{tmp / 'cunxiang.db'}"
    seed(url)
    port = free_port()
    settings = make_settings(tmp, url, broker_url, port)
    settings.http = settings.http.model_copy(update=http)
    if upload_mb is not None:
        settings.audio = settings.audio.model_copy(update={"max_upload_mb": upload_mb})
    with LiveServer(settings, port) as live:
        yield live


@pytest.fixture(scope="module")
def live(tmp_path_factory, embedded_broker_url) -> Iterator[LiveServer]:
    yield from _live(tmp_path_factory, embedded_broker_url, max_body_kb=1024)


@pytest.fixture(scope="module")
def small_uploads(tmp_path_factory, embedded_broker_url) -> Iterator[LiveServer]:
    yield from _live(tmp_path_factory, embedded_broker_url, upload_mb=1)


@pytest.fixture(scope="module")
def proxied(tmp_path_factory, embedded_broker_url) -> Iterator[LiveServer]:
    # 127.0.0.2 is no client of ours: the test's requests from 127.0.0.1 come from no trusted proxy.
    yield from _live(tmp_path_factory, embedded_broker_url, trusted_proxies="127.0.0.2")


@pytest.fixture(scope="module")
def behind_proxy(tmp_path_factory, embedded_broker_url) -> Iterator[LiveServer]:
    yield from _live(tmp_path_factory, embedded_broker_url, trusted_proxies="127.0.0.1")


def _raw(port: int, head: bytes, chunks: Iterable[bytes] = ()) -> tuple[int, bytes]:
    """Send `head` and then `chunks` until the server answers or stops reading; return
    (status, everything read)."""
    with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
        s.sendall(head)
        try:
            for chunk in chunks:
                s.sendall(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed before taking the rest: what we want
        data = b""
        try:
            while b"\r\n\r\n" not in data or len(data) < 12:
                part = s.recv(65536)
                if not part:
                    break
                data += part
            s.settimeout(1)
            while True:  # the rest of the (short) body, if it comes
                part = s.recv(65536)
                if not part:
                    break
                data += part
        except (TimeoutError, ConnectionResetError):
            pass
    return int(data.split(b" ", 2)[1]), data


def test_declared_oversized_json_is_refused_before_reading_or_login(live):
    # 100 MB declared, not one body byte sent: the answer must come at once, and be 413, not 401.
    head = (
        b"POST /api/v1/broadcasts HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {100 * MB}\r\n\r\n".encode()
    )
    status, data = _raw(live.port, head)
    assert status == 413
    assert b"body_too_large" in data


def test_chunked_oversized_json_is_refused_while_streaming(live):
    sent = 0

    def chunks() -> Iterator[bytes]:
        nonlocal sent
        piece = b"[" + b"1," * 32767 + b"1"  # 64 KiB of a JSON array, 2 MB in all
        for _ in range(32):
            sent += len(piece)
            yield f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
        yield b"0\r\n\r\n"

    head = (
        b"POST /api/v1/broadcasts HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    )
    status, data = _raw(live.port, head, chunks())
    assert status == 413, data[:300]


def test_form_login_over_the_limit_is_413_and_a_small_one_still_works(live):
    with live.client() as c:
        big = c.post("/api/v1/auth/token", data={"username": "admin", "password": "x" * (2 * MB)})
        assert big.status_code == 413
        assert big.json()["reason"] == "body_too_large"
        ok = c.post("/api/v1/auth/token", data={"username": ADMIN[0], "password": ADMIN[1]})
        assert ok.status_code == 200


def test_upload_route_takes_more_than_the_json_limit_but_not_more_than_its_own(live):
    token = live.login(*ADMIN)
    with live.client(token) as c:
        # 3 MB is over the JSON limit but under the upload limit: it reaches the route, which
        # refuses it for what it is (not audio), not for its size.
        for path in ("/api/v1/tts/upload", "/api/v1/playlists/audio"):
            r = c.post(path, files={"file": ("a.mp3", b"\0" * (3 * MB), "audio/mpeg")})
            assert r.status_code == 422, (path, r.text)
    limit = (live.settings.audio.max_upload_mb + 1) * MB
    head = (
        b"POST /api/v1/playlists/audio HTTP/1.1\r\nHost: x\r\n"
        b"Content-Type: multipart/form-data; boundary=b\r\n" + f"Content-Length: {limit}\r\n\r\n".encode()
    )
    assert _raw(live.port, head)[0] == 413


def test_both_upload_routes_stream_to_disk_and_refuse_a_file_over_the_audio_limit(small_uploads):
    live = small_uploads
    token = live.login(*ADMIN)
    staged = lambda: sorted(p.name for p in live.settings.audio_dir.rglob("*.upload"))  # noqa: E731
    with live.client(token) as c:
        for path in ("/api/v1/tts/upload", "/api/v1/playlists/audio"):
            # within the multipart room the body limit leaves, so it is the route that measures the file
            r = c.post(path, files={"file": ("a.mp3", b"\0" * (MB + 4096), "audio/mpeg")})
            assert r.status_code == 413, (path, r.text)
            assert "larger than 1 MB" in r.json()["detail"], path
            # exactly the limit is read whole and judged for what it is
            r = c.post(path, files={"file": ("a.mp3", b"\0" * MB, "audio/mpeg")})
            assert r.status_code == 422, (path, r.text)
    assert staged() == []  # no staging file is left behind either way


def test_security_headers_on_console_village_page_and_api(live):
    with live.client() as c:
        for path in ("/login", "/api/v1/health", "/static/app.js"):
            r = c.get(path)
            assert r.headers["x-content-type-options"] == "nosniff", path
            assert r.headers["referrer-policy"] == "same-origin", path
            csp = r.headers["content-security-policy"]
            assert "frame-ancestors 'none'" in csp, path
            assert "script-src 'self';" in csp, path  # no inline script on our pages
            assert "strict-transport-security" not in r.headers, path  # plain http: no HSTS
        docs = c.get("/docs")
        assert "cdn.jsdelivr.net" in docs.headers["content-security-policy"]
        assert "frame-ancestors 'none'" in docs.headers["content-security-policy"]


def test_forwarded_proto_from_an_untrusted_address_is_ignored(proxied):
    with proxied.client() as c:
        r = c.post(
            "/login",
            data={"username": ADMIN[0], "password": ADMIN[1]},
            headers={"X-Forwarded-Proto": "https"},
        )
        assert "strict-transport-security" not in r.headers
        cookie = r.headers.get("set-cookie", "")
        assert cookie and "secure" not in cookie.lower()


def test_forwarded_proto_from_the_trusted_proxy_gives_hsts_and_secure_cookie(behind_proxy):
    with behind_proxy.client() as c:
        r = c.post(
            "/login",
            data={"username": ADMIN[0], "password": ADMIN[1]},
            headers={"X-Forwarded-Proto": "https"},
        )
        assert r.headers["strict-transport-security"].startswith("max-age=")
        cookie = r.headers["set-cookie"]
        assert "secure" in cookie.lower()
