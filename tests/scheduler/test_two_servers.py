"""Two `cunxiang serve` processes on one PostgreSQL database and one Mosquitto: one scheduler runner.

What a cluster behind a load balancer needs, seen from outside the processes: both answer
/api/v1/health with 200 and say which one runs the scheduler; a token from one works on the
other; a broadcast made on either airs exactly once (a bare subscriber counts the play commands
per area topic); and when the runner is killed the other takes over and later broadcasts still air.

The two processes share what a deployment shares: the database URL, the broker URL, the token
secret (CUNXIANG_AUTH_SECRET_KEY), the command-signing keys (the same `keys/` in each data dir)
and the audio store (each data dir's `audio/` is a link to one directory, as shared storage would
be mounted). Everything else (port, data dir, MQTT client id) is their own.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import httpx
import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from cunxiang_shared.broker import parse_broker_url
from cunxiang_shared.signing import Verifier
from devices import keys as device_keys
from tests.api.conftest import ADMIN, seed
from tests.fixtures_db import PgServer
from tests.live import free_port

pytestmark = [pytest.mark.postgres, pytest.mark.mosquitto, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
VILLAGES = ("341225100201", "341225100202")  # two villages of 鹿城镇: two area topics
START_TIMEOUT_S = 60.0  # both processes start at once on two cores: imports, migrations, broker
# The bound the test holds takeover to: the stand-by's retry interval (scheduler.runner.LOCK_RETRY_S,
# 2 s) plus planning and a loaded machine's slack.
TAKEOVER_BOUND_S = 8.0
# After the first play command of an airing is seen, how long a second one would have to show up.
SETTLE_S = 2.0

T = TypeVar("T")


def _wait(predicate: Callable[[], T], timeout: float, what: str, interval: float = 0.1) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@dataclass
class Serve:
    """One `cunxiang serve` child process with its own port, data dir and log file."""

    name: str
    data_dir: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.data_dir.parent / f"{self.name}.log"

    def start(self, env: dict[str, str]) -> None:
        cmd = [sys.executable, "-m", "api.cli", "serve", "--port", str(self.port)]
        cmd += ["--data-dir", str(self.data_dir)]
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def logged_at(self, text: str) -> float:
        """When (epoch seconds) the first log line containing `text` was written."""
        line = next(line for line in self.log().splitlines() if text in line)
        return datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()  # local time, as logged

    def health(self) -> dict[str, Any] | None:
        try:
            r = httpx.get(f"{self.url}/api/v1/health", timeout=5)
        except httpx.HTTPError:
            return None
        return r.json() | {"http_status": r.status_code}

    def role(self) -> str | None:
        body = self.health()
        return body["scheduler"]["role"] if body else None

    def wait_up(self) -> dict[str, Any]:
        def up() -> dict[str, Any] | None:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited ({self.proc.returncode}):\n{self.log()}")
            return self.health()

        return _wait(up, START_TIMEOUT_S, f"{self.name} to answer /api/v1/health", interval=0.2)

    def client(self, token: str) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {token}"}, timeout=30)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class PlayCounter:
    """A bare paho subscriber on every area command topic that keeps the play commands it gets."""

    def __init__(self, broker_url: str) -> None:
        address = parse_broker_url(broker_url)
        self.plays: list[tuple[str, dict[str, Any]]] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self._client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"count-{uuid.uuid4().hex[:8]}")
        self._client.on_connect = lambda c, *_: c.subscribe("cx/v1/area/+/cmd", qos=1)
        self._client.on_subscribe = lambda *_: self._subscribed.set()
        self._client.on_message = self._on_message
        self._client.connect(address.host, address.port)
        self._client.loop_start()
        assert self._subscribed.wait(10), "the counting subscriber was not subscribed"

    def _on_message(self, _client: paho.Client, _userdata: object, msg: paho.MQTTMessage) -> None:
        command = json.loads(msg.payload)
        if command.get("type") == "play":  # the fleet monitors' periodic `sync` goes here too
            with self._lock:
                self.plays.append((msg.topic, command))

    def of(self, occurrence_id: int) -> list[tuple[str, dict[str, Any]]]:
        with self._lock:
            return [(t, c) for t, c in self.plays if c["occurrence_id"] == occurrence_id]

    def close(self) -> None:
        self._client.loop_stop()
        self._client.disconnect()


@pytest.fixture
def pg_url(pg_server: PgServer) -> Iterator[str]:
    """An empty database on the session's throwaway PostgreSQL (this test is PostgreSQL only)."""
    dbname = f"cx_two_{uuid.uuid4().hex[:12]}"
    janitor = pg_server.janitor(dbname)
    janitor.init()
    try:
        yield pg_server.url(dbname)
    finally:
        janitor.drop()


def _env(pg_url: str, broker_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CUNXIANG_")}
    return env | {
        "CUNXIANG_DATABASE_URL": pg_url,
        "CUNXIANG_MQTT_URL": broker_url,
        "CUNXIANG_AUTH_SECRET_KEY": secrets.token_urlsafe(32),  # one secret: tokens valid on both
        "CUNXIANG_TTS_ENGINE": "espeak",  # offline speech: no test reaches the real edge-tts
        "CUNXIANG_TTS_FALLBACK": "[]",
        "CUNXIANG_SCHEDULER_LEAD_TIME_S": "1",
        "CUNXIANG_SCHEDULER_QUIET_START": "00:00",  # no quiet hours: passes at any time of day
        "CUNXIANG_SCHEDULER_QUIET_END": "00:00",
    }


def _provision(tmp_path: Path) -> tuple[Path, Path, list]:
    """Two data dirs with the same signing keys and one audio store; the keys speakers trust."""
    a, b, audio = tmp_path / "a", tmp_path / "b", tmp_path / "shared-audio"
    audio.mkdir()
    trusted = [key for _, key in device_keys.load_or_create(a).trusted()]
    shutil.copytree(device_keys.keys_dir(a), device_keys.keys_dir(b))
    for data_dir in (a, b):
        (data_dir / "audio").symlink_to(audio, target_is_directory=True)
    return a, b, trusted


def _login(server: Serve) -> str:
    r = httpx.post(
        f"{server.url}/api/v1/auth/token", data={"username": ADMIN[0], "password": ADMIN[1]}, timeout=30
    )
    r.raise_for_status()
    return r.json()["access_token"]


def _broadcast(client: httpx.Client, title: str) -> dict[str, Any]:
    """A notice for both villages for now (start = now + lead time); the admin's own is approved at once."""
    r = client.post("/api/v1/broadcasts", json={"title": title, "text": "请注意。", "areas": list(VILLAGES)})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["status"] == "scheduled" and len(body["occurrences"]) == 1, body
    return body


def _aired_once(
    counter: PlayCounter, occurrence_id: int, verifier: Verifier, within: float
) -> tuple[dict[str, Any], float]:
    """Wait for the airing's play commands; after a settle time, exactly one per area topic, signed.

    Returns a command and how long it took to arrive.
    """
    topics = {f"cx/v1/area/{code}/cmd" for code in VILLAGES}
    asked = time.monotonic()
    _wait(lambda: {t for t, _ in counter.of(occurrence_id)} >= topics, within, f"occurrence {occurrence_id}")
    arrived_s = time.monotonic() - asked
    time.sleep(SETTLE_S)
    plays = counter.of(occurrence_id)
    per_topic = Counter(t for t, _ in plays)
    assert per_topic == dict.fromkeys(topics, 1), f"play commands per topic: {dict(per_topic)}"
    for topic, command in plays:
        verifier.verify(command, topic)  # either runner signs with the one key the speakers trust
    return plays[0][1], arrived_s


def _audio_matches(command: dict[str, Any]) -> None:
    """The audio the command points at downloads and has the announced hash."""
    r = httpx.get(command["audio_url"], timeout=30)
    assert r.status_code == 200, (command["audio_url"], r.status_code)
    assert hashlib.sha256(r.content).hexdigest() == command["sha256"]


def test_two_servers_one_runner_each_airing_once_and_takeover_after_kill(
    tmp_path: Path, pg_url: str, mosquitto_url: str
) -> None:
    seed(pg_url)
    dir_a, dir_b, trusted = _provision(tmp_path)
    verifier = Verifier(trusted)
    env = _env(pg_url, mosquitto_url)
    servers = [Serve("a", dir_a), Serve("b", dir_b)]
    counter = PlayCounter(mosquitto_url)
    try:
        started = time.monotonic()
        for server in servers:  # at the same moment, as a cluster's replicas start
            server.start(env)
        for server in servers:
            server.wait_up()
        # (a) exactly one runs the scheduler; the other stands by and is healthy too (the load
        # balancer must keep sending it requests)
        health = {s.name: s.health() for s in servers}
        roles = sorted(h["scheduler"]["role"] for h in health.values())
        assert roles == ["active", "standby"], health
        assert all(h["http_status"] == 200 and h["status"] == "ok" for h in health.values()), health
        active = next(s for s in servers if health[s.name]["scheduler"]["role"] == "active")
        standby = next(s for s in servers if s is not active)
        assert "scheduler started" in active.log() and "scheduler started" not in standby.log()
        assert "standing by" in standby.log()
        up_s = time.monotonic() - started

        # (d) stateless API: a token from one is accepted by the other
        token = _login(active)
        with standby.client(token) as on_standby, active.client(token) as on_active:
            me = on_standby.get("/api/v1/me")
            assert me.status_code == 200 and me.json()["username"] == ADMIN[0], me.text

            # (b) made on the stand-by, read on the active one, aired once by the active runner:
            # at once (start = now + 1 s lead), not at the runner's next planner tick (60 s)
            first = _broadcast(on_standby, "备机上创建")
            occurrence = first["occurrences"][0]["id"]
            command, dispatch_s = _aired_once(counter, occurrence, verifier, within=5)
            assert command["audio_url"].startswith(active.url)
            seen = on_active.get(f"/api/v1/broadcasts/{first['id']}")
            assert seen.status_code == 200 and seen.json()["title"] == "备机上创建"
            _audio_matches(command)
            status = on_standby.get(f"/api/v1/broadcasts/{first['id']}/occurrences").json()["items"][0]
            assert status["status"] == "dispatched"

        # (c) the runner dies without a word; the stand-by takes the lock over
        assert active.proc is not None
        killed = time.time()
        active.proc.send_signal(signal.SIGKILL)
        active.proc.wait(10)
        with standby.client(token) as survivor:
            # made in the gap (before the takeover): the new runner plans it when it starts
            gap = _broadcast(survivor, "接管前创建")
            _wait(lambda: standby.role() == "active", TAKEOVER_BOUND_S, "the stand-by to take over")
            # from the kill to the survivor's runner started with its jobs planned, as it logged it
            takeover_s = standby.logged_at("scheduler started (") - killed
            assert "took over as the scheduler runner" in standby.log()
            assert 0 < takeover_s < TAKEOVER_BOUND_S
            command, _ = _aired_once(counter, gap["occurrences"][0]["id"], verifier, within=5)
            _audio_matches(command)
            after = _broadcast(survivor, "接管后创建")
            command, _ = _aired_once(counter, after["occurrences"][0]["id"], verifier, within=5)
            assert command["audio_url"].startswith(standby.url)
            health = standby.health()
            assert health is not None and health["status"] == "ok" and health["scheduler"]["role"] == "active"
        # every play command seen belongs to the three airings, one per area topic each
        assert len(counter.plays) == 3 * len(VILLAGES)
        print(
            f"\ntwo servers up in {up_s:.1f} s ({active.name} active, {standby.name} standby); "
            f"a broadcast made on the stand-by was on the broker {dispatch_s:.2f} s after its POST; "
            f"SIGKILL of the runner -> stand-by active after {takeover_s:.2f} s; "
            f"{len(counter.plays)} play commands for 3 airings x {len(VILLAGES)} area topics"
        )
    except BaseException:
        for server in servers:  # what the servers said, to see why
            if server.log_path.exists():
                sys.stderr.write(f"--- {server.name} ({server.url}) ---\n{server.log()[-6000:]}\n")
        raise
    finally:
        counter.close()
        for server in servers:
            server.stop()
