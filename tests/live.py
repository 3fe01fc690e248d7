"""Helpers that run the real server and real simulated speakers in background threads."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import httpx
import uvicorn

from api.app import create_app
from core.settings import Settings
from devices import keys as device_keys
from devices import simulate


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    """`cunxiang serve` in a thread: real uvicorn, real HTTP on a free port."""

    def __init__(self, settings: Settings, port: int) -> None:
        self.settings = settings
        self.port = port
        self.base_url = f"http://127.0.0.1:{port}"
        self.app = create_app(settings)
        self._server = uvicorn.Server(
            uvicorn.Config(
                self.app, host="127.0.0.1", port=port, log_level="warning", proxy_headers=False
            )  # as `cunxiang serve`: only CUNXIANG_HTTP_TRUSTED_PROXIES are believed
        )
        self._thread = threading.Thread(target=self._server.run, name="live-server", daemon=True)

    @property
    def services(self):
        return self.app.state.services

    def __enter__(self) -> LiveServer:
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("server did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=30)

    def client(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.base_url, headers=headers, timeout=30)

    def login(self, username: str, password: str) -> str:
        with self.client() as c:
            r = c.post("/api/v1/auth/token", data={"username": username, "password": password})
            r.raise_for_status()
            return r.json()["access_token"]


def server_keys(settings: Settings) -> list:
    """The public keys speakers trust: the server's, from its data dir (made now if new, as serve does)."""
    return [key for _, key in device_keys.load_or_create(settings.data_dir).trusted()]


class LiveSpeakers:
    """Simulated speakers (devices.simulate.Simulator) on their own event loop in a thread.

    They verify every command's signature against `trusted_keys` (see `server_keys`).
    """

    def __init__(
        self, specs: list[simulate.SpeakerSpec], broker_url: str, cache_dir: Path, *, trusted_keys: list
    ) -> None:
        if not trusted_keys:
            raise ValueError("simulated speakers in tests must verify signatures: pass server_keys(settings)")
        self.trusted_keys = trusted_keys
        self.specs = specs
        self.broker_url = broker_url
        self.cache_dir = cache_dir
        self.sim: simulate.Simulator | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(
            target=lambda: asyncio.run(self._main()), name="speakers", daemon=True
        )

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        try:
            async with simulate.Simulator(
                self.specs, self.broker_url, self.cache_dir, trusted_keys=self.trusted_keys
            ) as sim:
                await sim.wait_ready(60)
                self.sim = sim
                self._ready.set()
                await self._stop.wait()
        except BaseException as exc:
            self._error = exc
            self._ready.set()

    def __enter__(self) -> LiveSpeakers:
        self._thread.start()
        self._ready.wait(90)
        if self._error is not None:
            raise RuntimeError("simulated speakers did not start") from self._error
        return self

    def __exit__(self, *exc) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=30)
