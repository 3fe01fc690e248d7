"""The fleet on a live server: health by area, operator commands with their outcome, alarms raised
and cleared, and 断网续播 — a broker stopped mid-programme while speakers keep airing and report later.

Everything is real: uvicorn, SQLite, the embedded broker and Mosquitto, signed commands, the speaker
agent code (null player), espeak-ng for the programme's speech.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import aiomqtt
import pytest

from core import users
from core.db import make_engine, make_session_factory, session_scope
from core.models import Role
from cunxiang_agent import speaker as speaker_module
from cunxiang_shared import protocol
from cunxiang_shared.signing import DOMAIN, Signer, b64url, canonical, key_id
from devices import keys as device_keys
from devices import service as device_service
from devices import simulate, transport
from reports import service as report_service
from tests.api.conftest import ADMIN, LUCHENG, make_settings, seed
from tests.fixtures_mqtt import MosquittoProcess
from tests.live import LiveServer, free_port

pytestmark = pytest.mark.slow

VILLAGE, NEIGHBOUR = "341225100201", "341225100202"
OPERATOR = ("caozuo", "operator-password")


class KeyedSpeakers:
    """Simulated speakers that trust the live server's signing keys, on their own loop in a thread."""

    def __init__(self, specs, broker_url: str, data_dir: Path, work: Path) -> None:
        self.specs, self.broker_url, self.work = specs, broker_url, work
        self.keys = [k for _, k in device_keys.load(data_dir).trusted()]
        self.sim: simulate.Simulator | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    async def _main(self) -> None:
        self.loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        async with simulate.Simulator(
            self.specs,
            self.broker_url,
            self.work / "cache",
            trusted_keys=self.keys,
            state_dir=self.work / "state",
        ) as sim:
            self.sim = sim
            try:
                await sim.wait_ready(30)
            finally:
                self._ready.set()
            await self._stop.wait()

    def call(self, fn, *args):
        """Run fn(*args) on the speakers' loop."""
        assert self.loop is not None
        self.loop.call_soon_threadsafe(fn, *args)

    def __enter__(self) -> KeyedSpeakers:
        self._thread.start()
        assert self._ready.wait(40) and self.sim is not None
        return self

    def __exit__(self, *exc) -> None:
        if self.loop is not None and self._stop is not None:
            self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)


def _wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def _register(database_url: str, devices: dict[str, str]) -> None:
    engine = make_engine(database_url)
    with session_scope(make_session_factory(engine)) as s:
        users.create_user(session=s, username=OPERATOR[0], password=OPERATOR[1], role=Role.operator,
                          area_code=LUCHENG)  # fmt: skip
        for device, area in devices.items():
            device_service.register(session=s, device_id=device, name=device, area_code=area)
    engine.dispose()


@pytest.fixture(autouse=True)
def fast_speakers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(speaker_module, "HEARTBEAT_INTERVAL_S", 0.3)
    monkeypatch.setattr(speaker_module, "STATUS_MIN_INTERVAL_S", 0.05)
    monkeypatch.setattr(speaker_module, "RECONNECT_MIN_S", 0.2)
    monkeypatch.setattr(speaker_module, "RECONNECT_MAX_S", 1.0)


def test_fleet_view_commands_and_offline_alarm(tmp_path, sqlite_url, embedded_broker_url) -> None:
    devices = {"fv-1": VILLAGE, "fv-2": VILLAGE, "fv-3": VILLAGE, "fv-4": NEIGHBOUR, "fv-5": NEIGHBOUR}
    seed(sqlite_url)
    _register(sqlite_url, devices)
    behaviour = {"fv-4": "fail", "fv-5": "drift"}
    specs = [
        simulate.SpeakerSpec(device_id=d, area_code=a, behaviour=behaviour.get(d, "ok"))
        for d, a in devices.items() if d != "fv-3"  # fv-3 is installed but never switched on
    ]  # fmt: skip
    port = free_port()
    settings = make_settings(tmp_path, sqlite_url, embedded_broker_url, port)
    settings = settings.model_copy(
        update={"devices": settings.devices.model_copy(
            update={"monitor_interval_s": 0.3, "offline_alarm_s": 1.0, "sync_interval_s": 0}
        )}
    )  # fmt: skip
    with (
        LiveServer(settings, port) as server,
        KeyedSpeakers(specs, embedded_broker_url, settings.data_dir, tmp_path / "speakers") as sp,
        server.client(server.login(*OPERATOR)) as op,
        server.client(server.login(*ADMIN)) as admin,
    ):
        health = _wait(
            lambda: (h := op.get("/api/v1/devices/health").json())["area"]["online"] == 4 and h, 20, "online"
        )
        assert health["area"]["code"] == LUCHENG  # the operator's own area by default
        lines = {c["code"]: c for c in health["children"]}
        assert (lines[VILLAGE]["devices"], lines[VILLAGE]["online"], lines[VILLAGE]["never_connected"]) == (
            3,
            2,
            1,
        )
        assert lines[VILLAGE]["online_rate"] == 0.6667 and lines[NEIGHBOUR]["online_rate"] == 1.0
        assert op.get("/api/v1/devices/health", params={"area": "341225101000"}).status_code == 403

        # set the volume of a village: one signed publish, every speaker answers
        sent = op.post("/api/v1/devices/commands", json={"area": VILLAGE, "type": "set_volume", "volume": 40})
        assert sent.status_code == 202, sent.text
        assert sent.json()["targeted"] == 3 and sent.json()["sent"] is True
        cmd_id = sent.json()["id"]
        outcome = _wait(
            lambda: (o := op.get(f"/api/v1/devices/commands/{cmd_id}").json())["answered"] == 2 and o,
            10, "volume answers",
        )  # fmt: skip
        assert outcome["succeeded"] == 2 and {r["device_id"] for r in outcome["results"]} == {"fv-1", "fv-2"}
        assert outcome["no_answer"] is None  # fv-3 may still answer until the command expires

        def volumes() -> list:
            return [d["volume"] for d in op.get("/api/v1/devices", params={"area": VILLAGE}).json()["items"]]

        _wait(lambda: volumes() == [40, 40, None], 10, "volumes in the device list")

        # a test tone on a speaker whose player is broken: the failure and its error come back
        tone = op.post("/api/v1/devices/fv-4/commands", json={"type": "test_tone", "duration_s": 0.2}).json()
        result = _wait(lambda: op.get(f"/api/v1/devices/commands/{tone['id']}").json()["results"], 10, "tone")
        assert result == [
            {"device_id": "fv-4", "ok": False, "error": "simulated playback failure", "at": result[0]["at"]}
        ]
        assert op.post("/api/v1/devices/fv-1/commands", json={"type": "set_volume"}).status_code == 422
        assert op.post("/api/v1/devices/fv-1/commands", json={"type": "reboot"}).status_code == 422
        assert op.post("/api/v1/devices/nope/commands", json={"type": "sync"}).status_code == 404

        # the drifting speaker's clock is measured from the signed command and alarmed
        op.post("/api/v1/devices/fv-5/commands", json={"type": "sync"})
        active = {"area": NEIGHBOUR, "active": True}
        drift = _wait(
            lambda: op.get("/api/v1/devices/alarms", params=active).json()["items"], 10, "clock drift alarm"
        )
        assert [(a["device_id"], a["kind"]) for a in drift] == [("fv-5", "clock_drift")]
        fv5 = admin.get("/api/v1/devices/fv-5").json()
        assert fv5["clock_offset_s"] == pytest.approx(-speaker_module.SIM_DRIFT_S, abs=2)

        # a speaker drops off the network for 3 s: offline alarm raised, then cleared when it is back
        sp.call(sp.sim.speakers["fv-2"].cut_link, 3.0)
        alarm = _wait(
            lambda: [a for a in op.get("/api/v1/devices/alarms", params={"area": VILLAGE}).json()["items"]
                     if a["kind"] == "offline"], 10, "offline alarm",
        )[0]  # fmt: skip
        assert alarm["device_id"] == "fv-2" and alarm["active"] is True
        assert op.get("/api/v1/devices/fv-2").json()["online"] is False
        cleared = _wait(
            lambda: [a for a in op.get("/api/v1/devices/alarms", params={"active": False}).json()["items"]
                     if a["id"] == alarm["id"]], 15, "offline alarm cleared",
        )[0]  # fmt: skip
        assert cleared["cleared_at"] > cleared["raised_at"] and cleared["active"] is False
        history = op.get("/api/v1/devices/fv-2/status-history").json()
        assert [h["online"] for h in history["items"]].count(False) == 1
        # heartbeats every 0.3 s; history only on change
        assert history["total"] < server.services.ingestor.counts["status"] / 4

        staff = server.client(server.login("luchengstaff", "staff-password"))
        assert staff.post("/api/v1/devices/fv-1/commands", json={"type": "sync"}).status_code == 403
        staff.close()


def test_link_cut_mid_programme_speakers_air_and_report_later(tmp_path, sqlite_url, monkeypatch) -> None:
    """Stop the broker after the programme was sent: every speaker still airs it on time, and once
    the broker is back the server's figures match what the speakers did."""
    monkeypatch.setattr(transport, "RECONNECT_MIN_S", 1)
    monkeypatch.setattr(transport, "RECONNECT_MAX_S", 2)
    devices = {f"cut-{n}": VILLAGE if n <= 2 else NEIGHBOUR for n in range(1, 5)}
    seed(sqlite_url)
    _register(sqlite_url, devices)
    broker = MosquittoProcess(tmp_path).start()
    port = free_port()
    settings = make_settings(tmp_path, sqlite_url, broker.url, port, lead_time_s=4.0, report_grace_s=12.0)
    settings = settings.model_copy(
        update={"tts": settings.tts.model_copy(update={"engine": "espeak", "fallback": []})}
    )
    specs = [simulate.SpeakerSpec(device_id=d, area_code=a) for d, a in devices.items()]
    try:
        with (
            LiveServer(settings, port) as server,
            KeyedSpeakers(specs, broker.url, settings.data_dir, tmp_path / "speakers") as sp,
            server.client(server.login(*ADMIN)) as c,
        ):
            start = datetime.now(UTC) + timedelta(seconds=6)
            body = {
                "title": "停电通知",
                "text": "明天停电。",
                "areas": [LUCHENG],
                "start_at": start.isoformat(),
            }
            r = c.post("/api/v1/broadcasts", json=body)
            assert r.status_code == 201, r.text
            broadcast = r.json()
            occ = broadcast["occurrences"][0]["id"]
            # the programme reached every speaker (received), then the broker goes down before air time
            _wait(
                lambda: all(s._pending.get(occ) for s in sp.sim.speakers.values()), 15, "programme received"
            )

            def states() -> set[str]:
                items = c.get(f"/api/v1/broadcasts/{broadcast['id']}/deliveries").json()["items"]
                return {item["state"] for item in items}

            _wait(lambda: states() == {"received"}, 10, "received reports")
            broker.stop()
            cut_at = datetime.now(UTC)
            assert cut_at < start
            _wait(lambda: sp.sim.finished(occ) == 4, 30, "airings during the outage")
            outcomes = {d: s.outcomes[occ] for d, s in sp.sim.speakers.items()}
            assert {o.state for o in outcomes.values()} == {"played"}
            assert all(o.at >= start for o in outcomes.values())  # on time, not when the link returned
            assert all(not s.ready.is_set() for s in sp.sim.speakers.values())  # still cut off
            broker = MosquittoProcess(tmp_path, port=broker.port).start()
            reach = _wait(
                lambda: (x := c.get(f"/api/v1/broadcasts/{broadcast['id']}/reach").json())["final"] and x,
                40, "reach to be final",
            )  # fmt: skip
            assert (reach["targeted"], reach["played"], reach["no_report"]) == (4, 4, 0)
            items = c.get(f"/api/v1/broadcasts/{broadcast['id']}/deliveries").json()["items"]
            for item in items:
                spoken = outcomes[item["device_id"]]
                finished = datetime.fromisoformat(item["finished_at"].replace("Z", "+00:00"))
                assert item["state"] == "played"
                assert abs((finished - spoken.at).total_seconds()) < 0.001  # the wire carries milliseconds
                assert item["seconds_played"] == spoken.seconds_played
    finally:
        broker.stop()


def test_outage_past_the_deadline_late_reports_count_and_roll_ups_follow(
    tmp_path, sqlite_url, monkeypatch
) -> None:
    """The broker stays down past the airing's deadline: the server settles every delivery
    `no_report` (and a roll-up of the day says so), the speakers air on time anyway, and once the
    broker is back their late reports, made before the deadline by their own clocks, turn the
    figures into `played` — the roll-up of the day included."""
    monkeypatch.setattr(transport, "RECONNECT_MIN_S", 1)
    monkeypatch.setattr(transport, "RECONNECT_MAX_S", 2)
    devices = {f"late-{n}": VILLAGE if n <= 2 else NEIGHBOUR for n in range(1, 4)}
    seed(sqlite_url)
    _register(sqlite_url, devices)
    broker = MosquittoProcess(tmp_path).start()
    port = free_port()
    # deadline = start + late start 1 s + the audio (about 2 s) + grace 1 s
    settings = make_settings(
        tmp_path, sqlite_url, broker.url, port, lead_time_s=4.0, late_start_s=1.0, report_grace_s=1.0
    )
    settings = settings.model_copy(
        update={"tts": settings.tts.model_copy(update={"engine": "espeak", "fallback": []})}
    )
    zone = ZoneInfo(settings.scheduler.timezone)
    engine = make_engine(sqlite_url)
    factory = make_session_factory(engine)
    specs = [simulate.SpeakerSpec(device_id=d, area_code=a) for d, a in devices.items()]
    try:
        with (
            LiveServer(settings, port) as server,
            KeyedSpeakers(specs, broker.url, settings.data_dir, tmp_path / "speakers") as sp,
            server.client(server.login(*ADMIN)) as c,
        ):
            start = datetime.now(UTC) + timedelta(seconds=6)
            r = c.post(
                "/api/v1/broadcasts",
                json={
                    "title": "停水通知",
                    "text": "明天停水。",
                    "areas": [LUCHENG],
                    "start_at": start.isoformat(),
                },
            )
            assert r.status_code == 201, r.text
            bid, occ = r.json()["id"], r.json()["occurrences"][0]["id"]

            def reach() -> dict:
                return c.get(f"/api/v1/broadcasts/{bid}/reach").json()

            _wait(lambda: reach()["received"] == 3, 15, "the programme on every speaker")
            broker.stop()
            _wait(lambda: sp.sim.finished(occ) == 3, 30, "airings during the outage")
            outcomes = {d: s.outcomes[occ] for d, s in sp.sim.speakers.items()}
            assert {o.state for o in outcomes.values()} == {"played"}
            settled = _wait(lambda: (x := reach())["final"] and x, 20, "the deadline")
            assert (settled["played"], settled["no_report"]) == (0, 3)
            deadline = datetime.fromisoformat(
                c.get(f"/api/v1/broadcasts/{bid}/occurrences").json()["items"][0]["deadline_at"]
            )
            assert datetime.now(UTC) > deadline and all(o.at <= deadline for o in outcomes.values())
            assert all(not s.ready.is_set() for s in sp.sim.speakers.values())  # still cut off

            # The day is rolled up as it would be once it has ended (the nightly figures).
            day = start.astimezone(zone).date()
            after_day = report_service.day_bounds(day, zone)[1] + timedelta(minutes=1)

            def day_figures(now: datetime | None) -> tuple:
                if now is None:  # what the console and the API show
                    got = c.get("/api/v1/reports/reach", params={"area": LUCHENG, "date": day.isoformat()})
                    figures = got.json()
                else:
                    period = report_service.period_of(kind="day", day=day)
                    with session_scope(factory) as s:
                        figures = report_service.period_report(
                            session=s, area_code=LUCHENG, period=period, zone=zone, now=now
                        )
                return figures["targeted"], figures["played"], figures["no_report"], figures["rolled_up_days"]

            assert day_figures(after_day) == (3, 0, 3, [day.isoformat()])
            assert day_figures(None) == (3, 0, 3, [day.isoformat()])  # read from the roll-up

            broker = MosquittoProcess(tmp_path, port=broker.port).start()
            back = _wait(lambda: (x := reach())["played"] == 3 and x, 40, "late reports after reconnect")
            assert (back["targeted"], back["played"], back["no_report"], back["final"]) == (3, 3, 0, True)
            for item in c.get(f"/api/v1/broadcasts/{bid}/deliveries").json()["items"]:
                spoken = outcomes[item["device_id"]]
                finished = datetime.fromisoformat(item["finished_at"].replace("Z", "+00:00"))
                assert item["state"] == "played" and abs((finished - spoken.at).total_seconds()) < 0.001
            assert server.services.ingestor.counts["revised"] == 3

            # The rolled-up day follows: rolled up again with the late reports, on both paths.
            assert day_figures(after_day) == (3, 3, 0, [day.isoformat()])
            assert day_figures(None) == (3, 3, 0, [day.isoformat()])
    finally:
        broker.stop()
        engine.dispose()


def test_forged_commands_on_the_broker_are_refused_and_raise_an_alarm(
    tmp_path, sqlite_url, embedded_broker_url
) -> None:
    """Someone on the broker publishes commands to a speaker's own topic: unsigned, and signed with a
    forger's key under the server's key id. The speaker obeys neither; the server records the
    refusals from its status and raises a `rejected_commands` alarm naming the last reason, which
    clears once no refusal came for the quiet period (the offline threshold). A hung speaker
    (online, no status) shows up as `silent` in the same fleet view."""
    devices = {"fc-1": VILLAGE, "fc-2": VILLAGE}
    seed(sqlite_url)
    _register(sqlite_url, devices)
    specs = [
        simulate.SpeakerSpec(device_id="fc-1", area_code=VILLAGE),
        simulate.SpeakerSpec(device_id="fc-2", area_code=VILLAGE, behaviour="silent"),
    ]
    port = free_port()
    settings = make_settings(tmp_path, sqlite_url, embedded_broker_url, port)
    quiet_s = 3.0
    settings = settings.model_copy(
        update={"devices": settings.devices.model_copy(
            update={"monitor_interval_s": 0.3, "offline_alarm_s": quiet_s, "sync_interval_s": 0}
        )}
    )  # fmt: skip
    topic = protocol.device_topic("fc-1", "cmd")
    address = speaker_module.parse_broker_url(embedded_broker_url)
    with (
        LiveServer(settings, port) as server,
        KeyedSpeakers(specs, embedded_broker_url, settings.data_dir, tmp_path / "speakers") as sp,
        server.client(server.login(*OPERATOR)) as op,
    ):
        _wait(lambda: op.get("/api/v1/devices/fc-1").json()["volume"] == 80, 10, "fc-1's first status")
        health = op.get("/api/v1/devices/health", params={"area": LUCHENG}).json()
        village = next(line for line in health["children"] if line["code"] == VILLAGE)
        assert (village["online"], village["silent"]) == (2, 1)  # fc-2 is up but says nothing

        now = datetime.now(UTC)
        forged = protocol.SetVolumeCommand(volume=100, issued_at=now, expires_at=now + timedelta(minutes=5))
        unsigned = protocol.encode(forged)
        server_key = key_id(device_keys.load(settings.data_dir).trusted()[0][1])
        message = json.loads(unsigned) | {"cmd_id": "forged-" + "0" * 24, "to": [topic], "key_id": server_key}
        message["sig"] = b64url(Signer.generate().private_key.sign(DOMAIN + canonical(message)))

        async def forge() -> None:
            async with aiomqtt.Client(address.host, address.port, identifier="forger") as forger:
                for payload in (unsigned, json.dumps(message).encode()):
                    await forger.publish(topic, payload, qos=1)

        asyncio.run(forge())

        def alarms(**params) -> list:
            items = op.get("/api/v1/devices/alarms", params={"area": VILLAGE, **params}).json()["items"]
            return [a for a in items if a["kind"] == "rejected_commands"]

        alarm = _wait(
            lambda: [a for a in alarms(active=True) if a["detail"].startswith("2 refused")], 10, "the alarm"
        )[0]
        assert alarm["device_id"] == "fc-1" and "bad_signature" in alarm["detail"]
        fc1 = op.get("/api/v1/devices/fc-1").json()
        assert fc1["rejected_total"] == 2 and "bad_signature: " in fc1["last_rejection"]
        assert fc1["volume"] == 80 and sp.sim.speakers["fc-1"].volume == 80  # nothing obeyed
        assert dict(sp.sim.speakers["fc-1"].rejected) == {"unsigned": 1, "bad_signature": 1}

        cleared = _wait(
            lambda: [a for a in alarms(active=False) if a["id"] == alarm["id"]], quiet_s + 10, "the all-clear"
        )[0]
        raised_at = datetime.fromisoformat(cleared["raised_at"])
        assert datetime.fromisoformat(cleared["cleared_at"]) - raised_at >= timedelta(seconds=quiet_s - 1)
        assert alarms(active=True) == []
