"""Fan-out, report ingestion, connections and memory: one county-wide broadcast to N speakers.

    python bench/fanout.py [--speakers 5000] [--connect 10000] [--status-interval 30] [--smoke]
                           [--broker mqtt://host:port]

Runs the real server (`cunxiang serve`, a subprocess, SQLite in a fresh data dir) against
Mosquitto (a throwaway one started with the settings cunxiang ships, `set_tcp_nodelay true`, unless
--broker names one), and N lean speakers (bench/swarm.py: one MQTT connection each, real wire
protocol, signatures verified) in another process. Then:

1. Memory: server resident memory (VmRSS) idle, then with 1/5, 1/2 and all N speakers online,
   each step after one full status interval (every speaker sends a retained status every
   --status-interval seconds). Baseline: the idle server. Goal: < 300 MB with N = 5,000.
2. Baseline for ingestion: every speaker publishes one QoS 1 played report (built as in a broadcast,
   so the speakers' side costs the same) at once, through the same broker, to a bare paho
   subscriber on another topic that only counts them.
3. The broadcast: created over the HTTP API for the whole county; the server synthesises it,
   snapshots N deliveries and publishes ONE signed play command on the county topic; every speaker
   reports received, playing at start_at and played at the end. Measured: from the end of
   playback to the last `played` stored in the database (polled), and the ingestion rate of that
   burst, against the bare subscriber's rate. Goals: all stored within 1 s; rate >= 0.6x. Checked
   by count: N deliveries played, exactly 3N report rows, no (device, state) twice.
4. Connections: a fresh swarm of --connect speakers connects and subscribes (SUBACK) from zero,
   each publishing its retained online flag (which the server ingests). Baseline: the same number
   of bare MQTT connections (CONNECT/CONNACK, no subscriptions, no flag). Goal: < 10 s.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import paho.mqtt.client as mqtt
from common import ROOT, Result, Unavailable, print_results, run_main
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from devices.credentials import MAX_INFLIGHT_MESSAGES, MAX_QUEUED_MESSAGES

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
ADMIN = ("admin", "bench-admin-password")
COUNTY = "341225000000"
NOTICE = "各位村民请注意，今天下午三点在村委会召开医保缴费说明会。"
SMOKE_NOTICE = "请注意。"  # the smoke run's speakers play in real time: a short notice keeps it short
LEAD_S, SMOKE_LEAD_S = 12.0, 6.0  # broadcast created this long before it starts (synthesis, dispatch)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise Unavailable(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


class Mosquitto:
    """A throwaway Mosquitto with the settings cunxiang ships (docs/fleet.md), anonymous, loopback."""

    def __init__(self, work: Path) -> None:
        if not Path(MOSQUITTO).exists():
            raise Unavailable("mosquitto not found (apt-get install mosquitto), or pass --broker")
        self.port = free_port()
        self.url = f"mqtt://127.0.0.1:{self.port}"
        conf = work / "mosquitto.conf"
        user = "user root\n" if os.geteuid() == 0 else ""
        conf.write_text(
            f"{user}listener {self.port} 127.0.0.1\nallow_anonymous true\n"
            "set_tcp_nodelay true\npersistence false\nmax_keepalive 65535\nmax_connections -1\n"
            f"max_queued_messages {MAX_QUEUED_MESSAGES}\nmax_inflight_messages {MAX_INFLIGHT_MESSAGES}\n"
            f"log_type error\nlog_dest file {work / 'mosquitto.log'}\n"
        )
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(conf)])
        wait_port(self.port)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def broker_reachable(url: str) -> None:
    from devices.transport import parse_broker_url

    host, port, _, _ = parse_broker_url(url)
    try:
        socket.create_connection((host, port), timeout=3).close()
    except OSError as exc:
        raise Unavailable(f"cannot reach the MQTT broker at {url}: {exc}") from exc


def village_codes() -> list[str]:
    """Every village of the demo county."""
    from core import regions

    rows = json.loads(regions.DEMO_FILE.read_text(encoding="utf-8"))
    return sorted(r["code"] for r in rows if r["level"] == "village")


def prepare_database(data_dir: Path) -> str:
    """Migrated SQLite with the demo county, an admin and a signing key; return its URL."""
    from api import migrate
    from core import regions, users
    from core.db import make_engine, make_session_factory, session_scope
    from core.models import Role
    from devices import keys as device_keys

    url = f"sqlite:///{data_dir / 'cunxiang.db'}"
    migrate.upgrade(url)
    engine = make_engine(url)
    with session_scope(make_session_factory(engine)) as session:
        regions.load_demo(session=session)
        users.create_user(session=session, username=ADMIN[0], password=ADMIN[1], role=Role.admin)
    engine.dispose()
    device_keys.load_or_create(data_dir)
    return url


def register(url: str, devices: list[tuple[str, str]]) -> None:
    """Register speakers (as `cunxiang simulate` does, in bulk)."""
    if not devices:
        return
    from sqlalchemy import insert

    from core.db import make_engine, make_session_factory, session_scope
    from devices.models import Device

    engine = make_engine(url)
    with session_scope(make_session_factory(engine)) as session:
        session.execute(
            insert(Device), [{"id": d, "name": d, "area_code": a, "model": "bench"} for d, a in devices]
        )
    engine.dispose()


class Server:
    """`cunxiang serve` in a subprocess."""

    def __init__(self, data_dir: Path, broker_url: str) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        env = {
            **os.environ,
            "CUNXIANG_DATA_DIR": str(data_dir),
            "CUNXIANG_MQTT_URL": broker_url,
            "CUNXIANG_PUBLIC_URL": self.base,
            "CUNXIANG_TTS_ENGINE": "espeak",
            "CUNXIANG_TTS_FALLBACK": "[]",
            # the benchmark runs at any hour: no quiet hours
            "CUNXIANG_SCHEDULER_QUIET_START": "00:00",
            "CUNXIANG_SCHEDULER_QUIET_END": "00:00",
        }
        env.pop("CUNXIANG_DATABASE_URL", None)
        self.log = (data_dir / "server.log").open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "api.cli", "--log-level", "warning", "serve", "--port", str(self.port)],
            cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise Unavailable(f"the server exited ({self.proc.returncode}):\n{self.tail()}")
            try:
                health = httpx.get(f"{self.base}/api/v1/health", timeout=2).json()
                if health.get("status") == "ok":
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        else:
            raise Unavailable(f"the server did not become healthy in 60 s:\n{self.tail()}")
        token = httpx.post(
            f"{self.base}/api/v1/auth/token", data={"username": ADMIN[0], "password": ADMIN[1]}
        ).json()["access_token"]
        self.http = httpx.Client(base_url=self.base, headers={"Authorization": f"Bearer {token}"}, timeout=60)

    def tail(self, lines: int = 20) -> str:
        """The end of the server's log."""
        self.log.flush()
        return "\n".join(Path(self.log.name).read_text(errors="replace").splitlines()[-lines:])

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        self.http.close()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


class SwarmProcess:
    """bench/swarm.py in a subprocess, driven over its stdin/stdout."""

    def __init__(
        self, broker_url: str, devices: list[tuple[str, str]], work: Path, keys: Path | None, *, net: int
    ):
        path = work / f"swarm-{len(devices)}-{time.monotonic_ns()}.json"
        path.write_text(json.dumps(devices))
        cmd = [
            sys.executable,
            str(ROOT / "bench" / "swarm.py"),
            "--broker",
            broker_url,
            "--devices",
            str(path),
        ]
        if keys is not None:
            cmd += ["--keys", str(keys)]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
        self.events: list[dict] = []
        self._cond = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._cond:
                self.events.append(json.loads(line))
                self._cond.notify_all()

    def send(self, **cmd: object) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()

    def wait(self, ev: str, timeout: float, **match: object) -> dict:
        """The first event named ev (with these fields) the swarm sent, waiting up to timeout."""

        def matching() -> list[dict]:
            return [e for e in self.events if e["ev"] == ev and all(e.get(k) == v for k, v in match.items())]

        with self._cond:
            if not self._cond.wait_for(matching, timeout):
                raise RuntimeError(f"swarm: no {ev!r} event within {timeout} s (exit {self.proc.poll()})")
            event = matching()[0]
            self.events.remove(event)
            return event

    def connect(self, count: int, timeout: float = 120, *, subscribe: bool = True) -> float:
        self.send(cmd="connect", count=count, subscribe=subscribe)
        event = self.wait("connected", timeout)
        if event.get("errors"):
            print(f"  swarm errors: {event['errors']}", file=sys.stderr)
        return event["seconds"]

    def quit(self) -> None:
        try:
            self.send(cmd="quit")
            self.proc.wait(30)
        except (BrokenPipeError, subprocess.TimeoutExpired):
            self.proc.kill()


class CountingSubscriber:
    """The baseline: a bare paho subscriber that only counts what arrives, and when the last came."""

    def __init__(self, broker_url: str, topic: str) -> None:
        from devices.transport import parse_broker_url

        host, port, user, password = parse_broker_url(broker_url)
        self.count = 0
        self.first = self.last = 0.0
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"bench-counter-{os.getpid()}",
            protocol=MQTTProtocolVersion.MQTTv311,
        )  # fmt: skip
        if user:
            self.client.username_pw_set(user, password)
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *a: subscribed.set()
        self.client.on_connect = lambda c, *a: c.subscribe(topic, qos=1)
        self.client.on_message = self._on_message
        self.client.connect(host, port)
        self.client.loop_start()
        if not subscribed.wait(10):
            raise Unavailable(f"the baseline subscriber could not subscribe on {broker_url}")

    def _on_message(self, _c, _u, _m) -> None:
        self.count += 1
        self.last = time.time()
        if self.count == 1:
            self.first = self.last

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def played_count(db: Path, occurrence_id: int) -> int:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return conn.execute(
            "SELECT count(*) FROM deliveries WHERE occurrence_id = ? AND state = 'played'", (occurrence_id,)
        ).fetchone()[0]


def broadcast_seconds(db: Path, asset_id: int) -> float:
    """How long the broadcast's audio plays."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return (
            conn.execute("SELECT duration_ms FROM audio_assets WHERE id = ?", (asset_id,)).fetchone()[0]
            / 1000
        )


def wait_stored(db: Path, occurrence_id: int, n: int, end: float, timeout: float = 60) -> float:
    """The time the last of the n `played` reports was stored (polled every 2 ms).

    The poll must cost next to nothing: on two cores a poll that counts rows takes CPU from the
    server it is timing. So it first waits (before the end of playback) until the n `received` and
    n `playing` rows are stored, notes the last report row id, and then only asks for the newest
    row id (an O(log n) look-up): report rows are inserted in the same transaction that settles
    their delivery, and only this occurrence's speakers report. The count is checked afterwards.
    """
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        while True:
            (before,) = conn.execute(
                "SELECT count(*) FROM reports WHERE occurrence_id = ?", (occurrence_id,)
            ).fetchone()
            if before >= 2 * n:
                break
            if time.time() > end - 0.5:
                raise RuntimeError(f"only {before} of {2 * n} received/playing reports stored by the end")
            time.sleep(0.05)
        (base,) = conn.execute("SELECT max(id) FROM reports").fetchone()
        if time.time() >= end:
            raise RuntimeError("could not note the last report row before the end of playback")
        deadline = time.monotonic() + timeout
        stored_at = None
        while time.monotonic() < deadline:
            if conn.execute("SELECT max(id) FROM reports").fetchone()[0] >= base + n:
                stored_at = time.time()
                break
            time.sleep(0.002)
        early, played = conn.execute(
            "SELECT sum(id <= ?), count(*) FROM reports WHERE occurrence_id = ? AND state = 'played'",
            (base, occurrence_id),
        ).fetchone()
    if stored_at is None or played != n or early:
        raise RuntimeError(
            f"{played} of {n} played reports stored in {timeout:.0f} s "
            f"({early or 0} before the end of playback)"
        )
    if played_count(db, occurrence_id) != n:
        raise RuntimeError(f"{played_count(db, occurrence_id)} of {n} deliveries played")
    return stored_at


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--speakers", type=int, default=5000, help="speakers for the broadcast")
    parser.add_argument("--connect", type=int, default=10000, help="speakers for the connection test")
    parser.add_argument("--status-interval", type=float, default=30.0, help="seconds between statuses")
    parser.add_argument("--broker", help="an MQTT broker to use instead of a throwaway Mosquitto")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (for the test suite)")
    parser.add_argument("--skip-memory", action="store_true", help="no memory steps (quicker, no RSS figure)")
    args = parser.parse_args(argv)
    if args.smoke:
        args.speakers, args.connect, args.status_interval = 40, 80, 1.0

    with tempfile.TemporaryDirectory(prefix="cx-fanout-") as tmp:
        work = Path(tmp)
        data_dir = work / "data"
        data_dir.mkdir()
        broker = None
        if args.broker:
            broker_reachable(args.broker)
            broker_url = args.broker
        else:
            broker = Mosquitto(work)
            broker_url = broker.url
        server = None
        try:
            total = max(args.speakers, args.connect)
            print(f"preparing: demo county, {args.speakers} registered speakers ...", flush=True)
            url = prepare_database(data_dir)
            villages = village_codes()
            devices = [(f"bench-{i:05d}", villages[i % len(villages)]) for i in range(total)]
            register(url, devices[: args.speakers])
            server = Server(data_dir, broker_url)
            keys = data_dir / "keys" / "trusted-keys.txt"
            results, notes = run_phases(args, server, url, broker_url, devices, work, keys)
        finally:
            if server is not None:
                server.stop()
            if broker is not None:
                broker.stop()
    print_results(f"fan-out: one county-wide broadcast to {args.speakers} speakers over Mosquitto", results,
                  notes=notes)  # fmt: skip
    return 0


def run_phases(args, server: Server, url: str, broker_url: str, devices, work: Path, keys: Path):
    n = args.speakers
    notes: list[str] = []
    time.sleep(1.0)
    rss_idle = rss_mb(server.pid)

    # 1. memory, speakers coming online in steps
    swarm = SwarmProcess(broker_url, devices[:n], work, keys, net=1)
    rss_steps: list[tuple[int, float]] = [(0, rss_idle)]
    online = 0
    steps = [n] if args.skip_memory else sorted({max(1, n // 5), max(1, n // 2), n})
    for target in steps:
        print(f"memory: {target} speakers online, one status interval ({args.status_interval:.0f} s) ...",
              flush=True)  # fmt: skip
        swarm.connect(target - online)
        if online == 0:
            swarm.send(cmd="status", interval=args.status_interval)
        online = target
        time.sleep(1.0 if args.skip_memory else args.status_interval + 1.0)
        rss_steps.append((online, rss_mb(server.pid)))
    growth = (rss_steps[-1][1] - rss_idle) / n * 1000
    notes.append(
        "server RSS by speakers online: "
        + ", ".join(f"{k}: {mb:.0f} MB" for k, mb in rss_steps)
        + f"; growth {growth:.1f} MB per 1,000 speakers"
    )

    # 2. baseline: the same number of QoS 1 messages through the broker to a bare counting subscriber
    counter = CountingSubscriber(broker_url, "bench/dev/+/report")
    swarm.send(cmd="burst", n=n, topic="bench/dev/{device_id}/report")
    burst = swarm.wait("burst", 60)
    deadline = time.monotonic() + 30
    while counter.count < n and time.monotonic() < deadline:
        time.sleep(0.001)
    counter.close()
    if counter.count != n:
        raise RuntimeError(f"baseline subscriber counted {counter.count} of {n} messages")
    bare_s = counter.last - burst["start"]
    bare_rate = n / bare_s
    t0 = burst["start"]
    notes.append(
        f"baseline burst handed to the sockets in {burst['sent'] - t0:.3f} s; arrived at the bare "
        f"subscriber {counter.first - t0:+.3f} .. {counter.last - t0:+.3f} s after the first was handed"
    )

    # 3. the broadcast
    print(f"broadcast: county-wide to {n} speakers ...", flush=True)
    start_at = datetime.now(UTC) + timedelta(seconds=SMOKE_LEAD_S if args.smoke else LEAD_S)
    text = SMOKE_NOTICE if args.smoke else NOTICE
    r = server.http.post(
        "/api/v1/broadcasts",
        json={"title": "基准测试", "text": text, "areas": [COUNTY], "start_at": start_at.isoformat()},
    )
    if r.status_code != 201:
        raise RuntimeError(f"creating the broadcast failed: {r.status_code} {r.text}")
    broadcast = r.json()
    occurrence_id = broadcast["occurrences"][0]["id"]
    db = work / "data" / "cunxiang.db"
    starts = datetime.fromisoformat(broadcast["occurrences"][0]["start_at"]).timestamp()
    end_of_playback = starts + broadcast_seconds(db, broadcast["asset_id"])
    stored_at = wait_stored(db, occurrence_id, n, end_of_playback)
    played = swarm.wait("played", 120, occurrence=occurrence_id)
    end = played["end"]
    lag_s = stored_at - end
    ingest_rate = n / (stored_at - played["first"])
    notes.append(
        f"played reports handed to the sockets {played['first'] - end:+.3f} .. "
        f"{played['last'] - end:+.3f} s after the end of playback; last stored {lag_s:.3f} s after it"
    )

    # checked by count: nothing lost, nothing counted twice
    time.sleep(0.5)
    reach = server.http.get(f"/api/v1/broadcasts/{broadcast['id']}/reach").json()
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        rows, distinct = conn.execute(
            "SELECT count(*), count(DISTINCT device_id || '/' || state) FROM reports WHERE occurrence_id = ?",
            (occurrence_id,),
        ).fetchone()
        first_in, last_in = conn.execute(
            "SELECT min(received_at), max(received_at) FROM reports WHERE occurrence_id = ? AND state = ?",
            (occurrence_id, "played"),
        ).fetchone()
    if (reach["targeted"], reach["played"]) != (n, n) or rows != 3 * n or distinct != 3 * n:
        raise RuntimeError(
            f"counts wrong: targeted {reach['targeted']}, played {reach['played']}, report rows {rows}, "
            f"distinct (device, state) {distinct}; expected {n}, {n}, {3 * n}, {3 * n}"
        )
    notes.append(
        f"checked: targeted {n}, played {n}, {rows} report rows, {distinct} distinct (device, state)"
    )
    # Where the time went: the broker handing reports to the server, or the server storing them.
    arrived = [datetime.fromisoformat(t).replace(tzinfo=UTC).timestamp() - end for t in (first_in, last_in)]
    notes.append(
        f"played reports arrived at the server (paho) {arrived[0]:+.3f} .. {arrived[1]:+.3f} s after the end "
        f"of playback; the last was stored {lag_s - arrived[1]:.3f} s after it arrived"
    )
    swarm.quit()

    # 4. connections from zero
    print(f"connections: {args.connect} speakers from zero ...", flush=True)
    register(url, devices[n : args.connect])
    big = SwarmProcess(broker_url, devices[: args.connect], work, keys, net=2)
    connect_s = big.connect(args.connect)
    big.quit()
    time.sleep(2.0)
    bare = SwarmProcess(broker_url, devices[: args.connect], work, None, net=3)
    bare_connect_s = bare.connect(args.connect, subscribe=False)
    bare.quit()

    results = [
        Result("played reports stored after the end of playback", lag_s, "s",
               "Mosquitto delivering the same burst to a bare subscriber", bare_s,
               higher_is_better=False, goal_figure=1.0),
        Result("report ingestion rate (stored in the database)", ingest_rate, "reports/s",
               "bare paho subscriber counting the same QoS 1 burst", bare_rate, goal_ratio=0.6),
        *([] if args.skip_memory else [
            Result(f"server resident memory, {n} speakers online, status every {args.status_interval:.0f} s",
                   rss_steps[-1][1], "MB", "the same server idle, no speakers", rss_idle,
                   higher_is_better=False, goal_figure=300.0),
        ]),
        Result(f"{args.connect} speakers connected and subscribed", connect_s, "s",
               f"{args.connect} bare MQTT connections (CONNECT/CONNACK only)", bare_connect_s,
               higher_is_better=False, goal_figure=10.0),
    ]  # fmt: skip
    return results, notes


if __name__ == "__main__":
    sys.exit(run_main(main))
