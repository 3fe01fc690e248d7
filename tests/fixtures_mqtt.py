"""Real MQTT brokers for tests: the embedded amqtt one and a throwaway Mosquitto, each on a free port."""

from __future__ import annotations

import asyncio
import hashlib
import http.server
import os
import shutil
import socket
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiomqtt
import pytest

from cunxiang_shared import protocol
from cunxiang_shared.broker import parse_broker_url
from devices.broker import EmbeddedBroker, start_embedded_broker
from devices.credentials import MAX_INFLIGHT_MESSAGES, MAX_QUEUED_MESSAGES

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
# Seconds a broker gets to accept connections after it was started.
BROKER_START_TIMEOUT_S = 10.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(host: str, port: int, timeout: float = BROKER_START_TIMEOUT_S) -> None:
    """Block until host:port accepts a TCP connection, or fail the test."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    pytest.fail(f"nothing accepted connections on {host}:{port} within {timeout} s")


class BrokerThread:
    """The embedded broker on its own event loop in a daemon thread, so sync and async tests can use it."""

    def __init__(self, host: str = "127.0.0.1", port: int | None = None) -> None:
        self.host = host
        self.port = port or free_port()
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="amqtt-broker", daemon=True)
        self._broker: EmbeddedBroker | None = None

    @property
    def url(self) -> str:
        """mqtt://host:port of the running broker."""
        assert self._broker is not None
        return self._broker.url

    def start(self) -> BrokerThread:
        """Start the loop thread and the broker in it; wait until it listens."""
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(start_embedded_broker(self.host, self.port), self.loop)
        self._broker = future.result(BROKER_START_TIMEOUT_S)
        return self

    def stop(self) -> None:
        """Shut the broker down and end the thread."""
        if self._broker is not None:
            asyncio.run_coroutine_threadsafe(self._broker.stop(), self.loop).result(BROKER_START_TIMEOUT_S)
            self._broker = None
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(BROKER_START_TIMEOUT_S)
        self.loop.close()


class MosquittoProcess:
    """A throwaway Mosquitto listening on 127.0.0.1 only, persistence off, Nagle off."""

    def __init__(self, work_dir: Path, port: int | None = None, *, config: str = "") -> None:
        """`config` replaces `allow_anonymous true` (e.g. password_file, acl_file, TLS lines)."""
        self.port = port or free_port()
        self.config = config
        self.conf = work_dir / f"mosquitto-{self.port}.conf"
        self.log = work_dir / f"mosquitto-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """mqtt://127.0.0.1:port."""
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> MosquittoProcess:
        """Write the config, start mosquitto and wait until it accepts connections."""
        if not Path(MOSQUITTO).exists():
            pytest.fail(
                f"mosquitto not found at {MOSQUITTO}: install it (apt-get install mosquitto) — "
                "the Mosquitto half of the broker tests cannot be skipped"
            )
        # Run as root, mosquitto drops to the `mosquitto` user, which cannot read pytest's 0700
        # directories (password file, ACL, log): keep the user we are.
        user = "user root\n" if os.geteuid() == 0 else ""
        self.conf.write_text(
            user
            + f"listener {self.port} 127.0.0.1\n"
            + (self.config or "allow_anonymous true\n")
            # the queue and in-flight window cunxiang ships (devices/credentials.py), so a burst
            # to a slow subscriber is queued, not dropped at Mosquitto's default of 1,000
            + "set_tcp_nodelay true\n"
            f"max_queued_messages {MAX_QUEUED_MESSAGES}\nmax_inflight_messages {MAX_INFLIGHT_MESSAGES}\n"
            "persistence false\n"
            "max_keepalive 65535\n"
            "log_type error\nlog_type warning\n"
            f"log_dest file {self.log}\n"
        )
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)], stderr=subprocess.PIPE)
        try:
            wait_for_port("127.0.0.1", self.port)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Terminate mosquitto and reap it."""
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stderr is not None:
            self.proc.stderr.close()
        self.proc = None


async def clear_retained(broker_url: str, device_ids: Iterable[str]) -> None:
    """Delete these devices' retained `online` and `status`, so later tests on a shared broker see none."""
    address = parse_broker_url(broker_url)
    async with aiomqtt.Client(address.host, address.port, protocol=aiomqtt.ProtocolVersion.V311) as client:
        for device_id in device_ids:
            for leaf in ("online", "status"):
                await client.publish(protocol.device_topic(device_id, leaf), b"", qos=1, retain=True)


@pytest.fixture(scope="session")
def embedded_broker_url() -> Iterator[str]:
    """URL of an embedded amqtt broker on a free 127.0.0.1 port, shared by the session."""
    broker = BrokerThread().start()
    try:
        yield broker.url
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def mosquitto_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of a throwaway Mosquitto on a free 127.0.0.1 port, shared by the session."""
    broker = MosquittoProcess(tmp_path_factory.mktemp("mosquitto")).start()
    try:
        yield broker.url
    finally:
        broker.stop()


@pytest.fixture(params=["embedded", pytest.param("mosquitto", marks=pytest.mark.mosquitto)])
def broker_url(request: pytest.FixtureRequest) -> str:
    """The URL of each real broker in turn, shared by the session.

    Tests use unique device ids and delete the retained messages they leave (clear_retained), so
    a test that subscribes to `cx/v1/dev/+/status` sees only its own devices.
    """
    return request.getfixturevalue(_BROKER_FIXTURES[request.param])


_BROKER_FIXTURES = {"embedded": "embedded_broker_url", "mosquitto": "mosquitto_url"}


@dataclass
class AudioServer:
    """A small real MP3 served over HTTP from a local directory, with a count of GETs per path."""

    directory: Path
    base_url: str
    sha256: str
    size_bytes: int
    duration_s: float
    hits: Counter[str] = field(default_factory=Counter)

    @property
    def url(self) -> str:
        """URL of the MP3."""
        return f"{self.base_url}/tone.mp3"


def make_mp3(path: Path, seconds: float = 0.5) -> None:
    """Encode a sine tone to MP3 with the real ffmpeg (24 kHz mono 48 kbit/s, like edge-tts output)."""
    subprocess.run(
        [
            "ffmpeg",
            "-nostdin",
            "-v",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            f"sine=frequency=440:duration={seconds}",
            "-ac",
            "1",
            "-ar",
            "24000",
            "-b:a",
            "48k",
            str(path),
        ],
        check=True,
    )


@pytest.fixture(scope="session")
def audio_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AudioServer]:
    """Serve a freshly encoded MP3 (and anything else put in its directory) on a free local port."""
    directory = tmp_path_factory.mktemp("audio")
    mp3 = directory / "tone.mp3"
    make_mp3(mp3)
    data = mp3.read_bytes()
    hits: Counter[str] = Counter()

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, directory=str(directory), **kwargs)  # type: ignore[arg-type]

        def do_GET(self) -> None:  # noqa: N802
            hits[self.path] += 1
            super().do_GET()

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, name="audio-http", daemon=True)
    thread.start()
    try:
        yield AudioServer(
            directory=directory,
            base_url=f"http://127.0.0.1:{server.server_address[1]}",
            sha256=hashlib.sha256(data).hexdigest(),
            size_bytes=len(data),
            duration_s=0.5,
            hits=hits,
        )
    finally:
        server.shutdown()
        server.server_close()
