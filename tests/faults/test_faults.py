"""The fault suite: real processes (Mosquitto, `cunxiang serve`, speakers) killed at the named
moments, with exact figures: every speaker that played counts `played` once, nobody else does.

The server runs as its own process (`cunxiang serve --demo` on an external Mosquitto, SQLite in
its data dir); the speakers are the real agent code (devices.simulate) in this process, trusting
the server's key. Each test takes a few seconds of real time; together well under a minute.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from core.settings import Settings
from devices.simulate import SpeakerSpec
from tests.api.test_demo import LUCHENG, PASSWORD, _cunxiang, _env
from tests.fixtures_mqtt import MosquittoProcess
from tests.live import LiveSpeakers, free_port, server_keys

# Seconds the server gets to answer health ok after it was started.
START_TIMEOUT_S = 40.0
# Seconds the figures get to come out right.
FIGURES_TIMEOUT_S = 30.0
# espeak makes about three seconds of audio of it: time to kill the server while it plays.
TEXT = "村民请注意，测试。"


class Serve:
    """`cunxiang serve --demo` on an external broker, as a process that can be killed and restarted."""

    def __init__(self, work: Path, broker_url: str, **env: str) -> None:
        self.work = work
        self.data_dir = work / "var"
        self.port = free_port()
        self.env = _env(self.data_dir, free_port(), CUNXIANG_ADMIN_PASSWORD=PASSWORD,
                        CUNXIANG_MQTT_URL=broker_url, **env)  # fmt: skip
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.token = ""

    @property
    def log(self) -> Path:
        return self.work / f"serve-{self.starts}.log"

    def start(self) -> Serve:
        self.starts += 1
        cmd = [*_cunxiang(), "serve", "--demo", "--speakers-per-village", "0", "--port", str(self.port)]
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                cmd, cwd=self.work, env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.wait("health ok", lambda c: c.get("/api/v1/health").json()["status"] == "ok", START_TIMEOUT_S)
        with httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=10) as c:
            r = c.post("/api/v1/auth/token", data={"username": "admin", "password": PASSWORD})
            r.raise_for_status()
            self.token = r.json()["access_token"]
        return self

    def client(self) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.token}"}
        return httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=10, headers=headers)

    def wait(self, what: str, check: Callable[[httpx.Client], object], timeout: float) -> object:
        deadline = time.monotonic() + timeout
        last: object = None
        with httpx.Client(
            base_url=f"http://127.0.0.1:{self.port}", timeout=10,
            headers={"Authorization": f"Bearer {self.token}"} if self.token else {},
        ) as c:  # fmt: skip
            while time.monotonic() < deadline:
                assert self.proc is not None and self.proc.poll() is None, self.log.read_text()[-4000:]
                try:
                    last = check(c)
                    if last:
                        return last
                except httpx.TransportError as exc:
                    last = exc
                time.sleep(0.2)
        raise AssertionError(f"no {what} after {timeout} s (last: {last}):\n{self.log.read_text()[-4000:]}")

    def kill(self) -> None:
        """kill -9: no goodbye to the broker, nothing flushed."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc is not None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[MosquittoProcess]:
    broker = MosquittoProcess(tmp_path).start()
    try:
        yield broker
    finally:
        broker.stop()


def _register(serve: Serve, count: int, prefix: str) -> list[SpeakerSpec]:
    """`count` speakers in the villages of LUCHENG, registered over the API."""
    with serve.client() as c:
        villages = [a["code"] for a in c.get("/api/v1/regions", params={"parent": LUCHENG}).json()["items"]]
        specs = [SpeakerSpec(f"{prefix}-{i}", villages[i % len(villages)]) for i in range(count)]
        for spec in specs:
            r = c.post("/api/v1/devices", json={"id": spec.device_id, "name": spec.device_id,
                                                 "area_code": spec.area_code})  # fmt: skip
            assert r.status_code in (200, 201), r.text
    return specs


def _speakers(serve: Serve, specs: list[SpeakerSpec], broker_url: str, tmp: Path) -> LiveSpeakers:
    keys = server_keys(Settings(data_dir=serve.data_dir))
    return LiveSpeakers(specs, broker_url, tmp / "cache", trusted_keys=keys)


def _broadcast(serve: Serve, devices: list[str], start_at: datetime | None = None) -> int:
    body: dict[str, object] = {"title": "故障测试", "text": TEXT, "devices": devices}
    if start_at is not None:
        body["start_at"] = start_at.isoformat()
    with serve.client() as c:
        r = c.post("/api/v1/broadcasts", json=body)
        assert r.status_code == 201, r.text
        return r.json()["id"]


def _occurrence(c: httpx.Client, broadcast_id: int) -> dict:
    items = c.get(f"/api/v1/broadcasts/{broadcast_id}/occurrences").json()["items"]
    assert len(items) == 1, items
    return items[0]


def _wait_dispatched(serve: Serve, broadcast_id: int) -> dict:
    def check(c: httpx.Client) -> dict | None:
        occ = _occurrence(c, broadcast_id)
        return occ if occ["status"] == "dispatched" else None

    return serve.wait("dispatch", check, FIGURES_TIMEOUT_S)  # type: ignore[return-value]


def _reach(c: httpx.Client, broadcast_id: int) -> dict:
    return c.get(f"/api/v1/broadcasts/{broadcast_id}/reach").json()


class _NotYet:
    """Falsy, and shows what was seen (for the failure message)."""

    def __init__(self, seen: object) -> None:
        self.seen = seen

    def __bool__(self) -> bool:
        return False

    def __repr__(self) -> str:
        return repr(self.seen)


def _figures(c: httpx.Client, broadcast_id: int, *, played: int, no_report: int) -> dict | _NotYet:
    """The reach once it is final with these figures."""
    f = _reach(c, broadcast_id)
    ok = f["played"] == played and f["no_report"] == no_report and f["other"] == 0
    return f if ok else _NotYet({k: f.get(k) for k in ("played", "no_report", "failed", "other", "final")})


def _played_by_speakers(speakers: LiveSpeakers, occurrence_id: int) -> set[str]:
    assert speakers.sim is not None
    return {d for d, outcomes in speakers.sim.all_outcomes().items() if (occurrence_id, "played") in outcomes}


def _wait_playing(speakers: LiveSpeakers, occurrence_id: int, timeout: float) -> None:
    """Until every speaker has reported `playing` (its audio fetched from the server)."""
    assert speakers.sim is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(
            any(r.occurrence_id == occurrence_id and r.state == "playing" for r in s.reports)
            for s in speakers.sim.speakers.values()
        ):
            return
        time.sleep(0.05)
    raise AssertionError("the speakers did not start playing")


def _wait_played(speakers: LiveSpeakers, occurrence_id: int, count: int, timeout: float) -> set[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        played = _played_by_speakers(speakers, occurrence_id)
        if len(played) >= count:
            return played
        time.sleep(0.2)
    return _played_by_speakers(speakers, occurrence_id)


def test_reports_sent_while_the_server_is_killed_count_once_after_its_restart(tmp_path, mosquitto):
    # A short late-start window and grace: the absent speaker's no_report comes within seconds.
    serve = Serve(tmp_path, mosquitto.url, CUNXIANG_SCHEDULER_LATE_START_S="3",
                  CUNXIANG_SCHEDULER_REPORT_GRACE_S="3").start()  # fmt: skip
    try:
        specs = _register(serve, 6, "kill")
        absent = _register(serve, 1, "kill-absent")[0]  # registered, never connects
        with _speakers(serve, specs, mosquitto.url, tmp_path) as speakers:
            broadcast_id = _broadcast(serve, [s.device_id for s in [*specs, absent]])
            occ = _wait_dispatched(serve, broadcast_id)
            _wait_playing(speakers, occ["id"], FIGURES_TIMEOUT_S)
            serve.kill()  # after dispatch, while they play: every `played` goes out while it is away
            played = _wait_played(speakers, occ["id"], len(specs), FIGURES_TIMEOUT_S)
            assert played == {s.device_id for s in specs}  # they played, to a server that is gone
            time.sleep(2)  # the reports sit at the broker (or nowhere) meanwhile
            serve.start()
            reach = serve.wait(
                "the figures",
                lambda c: _figures(c, broadcast_id, played=len(specs), no_report=1),
                FIGURES_TIMEOUT_S,
            )
        assert (reach["targeted"], reach["played"], reach["no_report"], reach["failed"]) == (7, 6, 1, 0)
    finally:
        serve.stop()


def test_speakers_that_connect_after_the_publish_but_before_the_start_play_once(tmp_path, mosquitto):
    serve = Serve(tmp_path, mosquitto.url, CUNXIANG_SCHEDULER_LEAD_TIME_S="6",
                  CUNXIANG_SCHEDULER_REPORT_GRACE_S="4").start()  # fmt: skip
    try:
        specs = _register(serve, 5, "late")
        start_at = datetime.now(UTC) + timedelta(seconds=8)
        broadcast_id = _broadcast(serve, [s.device_id for s in specs], start_at)
        occ = _wait_dispatched(serve, broadcast_id)
        assert datetime.now(UTC) < start_at - timedelta(seconds=3), "dispatched too late for the test"
        with _speakers(serve, specs, mosquitto.url, tmp_path) as speakers:  # connect after the publish
            played = _wait_played(speakers, occ["id"], len(specs), FIGURES_TIMEOUT_S)
            assert played == {s.device_id for s in specs}
            reach = serve.wait(
                "the figures",
                lambda c: _figures(c, broadcast_id, played=len(specs), no_report=0),
                FIGURES_TIMEOUT_S,
            )
            # once each: no speaker aired it twice
            assert speakers.sim is not None
            assert all(o.count((occ["id"], "played")) <= 1 for o in speakers.sim.all_outcomes().values())
        assert (reach["targeted"], reach["played"], reach["no_report"], reach["failed"]) == (5, 5, 0, 0)
    finally:
        serve.stop()


def test_a_broker_outage_over_the_dispatch_holds_the_command_and_every_speaker_plays(tmp_path):
    mosquitto = MosquittoProcess(tmp_path).start()
    serve = Serve(tmp_path, mosquitto.url, CUNXIANG_SCHEDULER_LEAD_TIME_S="3",
                  CUNXIANG_SCHEDULER_REPORT_GRACE_S="4").start()  # fmt: skip
    try:
        specs = _register(serve, 5, "outage")
        with _speakers(serve, specs, mosquitto.url, tmp_path) as speakers:
            start_at = datetime.now(UTC) + timedelta(seconds=10)
            broadcast_id = _broadcast(serve, [s.device_id for s in specs], start_at)
            time.sleep(max(0.0, (start_at - datetime.now(UTC)).total_seconds() - 5))
            mosquitto.stop()  # down from 5 s before the start: the dispatch (3 s before) finds no broker
            serve.wait("dispatch", lambda c: _occurrence(c, broadcast_id)["status"] != "scheduled", 10)
            time.sleep(1)
            mosquitto.start()
            with serve.client() as c:
                occ = _occurrence(c, broadcast_id)
            assert occ["status"] == "dispatched", occ
            assert occ["detail"].startswith("link down at dispatch"), occ
            played = _wait_played(speakers, occ["id"], len(specs), FIGURES_TIMEOUT_S)
            assert played == {s.device_id for s in specs}
            reach = serve.wait(
                "the figures",
                lambda c: _figures(c, broadcast_id, played=len(specs), no_report=0),
                FIGURES_TIMEOUT_S,
            )
        assert (reach["targeted"], reach["played"], reach["no_report"], reach["failed"]) == (5, 5, 0, 0)
    finally:
        serve.stop()
        mosquitto.stop()
