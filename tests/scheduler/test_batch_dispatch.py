"""Airings due at the same instant go out together, on a real broker, SQLite and PostgreSQL.

One APScheduler job per dispatch instant; one transaction prepares every airing of the batch and
one records it; the play commands leave highest priority first, each exactly once. Inside a batch
every airing keeps its own fate (too late: missed; quiet hours: refused, emergencies excepted;
cancelled meanwhile: stopped). And a runner killed after publishing but before recording leaves
the airing to be sent again, which speakers air once.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy import Engine, event, func, select, text

from core import regions, users
from core.clock import utcnow
from core.db import session_scope
from core.models import Region, RegionLevel, Role, User
from core.settings import Settings
from cunxiang_shared.broker import parse_broker_url
from cunxiang_shared.signing import Signer
from devices import keys as device_keys
from devices import service as device_service
from devices import simulate
from devices.commands import CommandSender
from devices.models import Delivery
from devices.transport import MqttLink
from scheduler import dispatch, lifecycle
from scheduler.jobs import JobContext
from scheduler.models import Broadcast, BroadcastStatus, Occurrence, OccurrenceStatus, Priority, QuietHours
from scheduler.runner import JOBS_TABLE, SchedulerRunner, instant_job_id
from tests.fixtures_mqtt import AudioServer
from tests.live import LiveSpeakers
from tts.models import AudioAsset

ROOT = Path(__file__).resolve().parents[2]
SH = ZoneInfo("Asia/Shanghai")
LEAD_S = 1.0
LATE_S = 60.0
GRACE_S = 30.0
# After the expected commands arrived, how long a second copy of any would have to show up.
SETTLE_S = 1.0

T = TypeVar("T")


def _wait(predicate: Callable[[], T], timeout: float, what: str) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


class Commands:
    """A bare subscriber on every area command topic, keeping (topic, command) in arrival order."""

    def __init__(self, broker_url: str) -> None:
        address = parse_broker_url(broker_url)
        self.seen: list[tuple[str, dict[str, Any]]] = []
        self._lock = threading.Lock()
        subscribed = threading.Event()
        self._client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"batch-{uuid.uuid4().hex[:8]}")
        self._client.on_connect = lambda c, *_: c.subscribe("cx/v1/area/+/cmd", qos=1)
        self._client.on_subscribe = lambda *_: subscribed.set()
        self._client.on_message = self._on_message
        self._client.connect(address.host, address.port)
        self._client.loop_start()
        assert subscribed.wait(10), "the subscriber was not subscribed"

    def _on_message(self, _client: paho.Client, _userdata: object, msg: paho.MQTTMessage) -> None:
        with self._lock:
            self.seen.append((msg.topic, json.loads(msg.payload)))

    def of(self, kind: str, occurrence_ids: set[int]) -> list[tuple[str, int]]:
        """(topic, occurrence id) of the `play` or `stop` commands for these occurrences."""
        with self._lock:
            return [
                (t, c["occurrence_id"])
                for t, c in self.seen
                if c.get("type") == kind and c.get("occurrence_id") in occurrence_ids
            ]

    def close(self) -> None:
        self._client.loop_stop()
        self._client.disconnect()


class OrderLink:
    """The real MQTT link, noting the order (and time) in which play commands are handed to it."""

    def __init__(self, broker_url: str, on_publish: Callable[[int], None] | None = None) -> None:
        self.inner = MqttLink(broker_url, client_id=f"batch-server-{uuid.uuid4().hex[:8]}")
        self.inner.connect()
        self.plays: list[tuple[int, int, float]] = []  # (occurrence id, priority, time)
        self._on_publish = on_publish

    @property
    def connected(self) -> bool:
        return self.inner.connected

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> None:
        command = json.loads(payload)
        if command.get("type") == "play":
            self.plays.append((command["occurrence_id"], command["priority"], time.time()))
            if self._on_publish is not None:
                self._on_publish(command["occurrence_id"])
        self.inner.publish(topic, payload, qos=qos, retain=retain)

    def subscribe(self, *args: Any, **kwargs: Any) -> None:
        self.inner.subscribe(*args, **kwargs)

    def close(self) -> None:
        self.inner.close()


@dataclass
class World:
    villages: list[str]
    asset_id: int
    settings: Settings
    signer: Signer


@pytest.fixture
def world(session_factory, tmp_path, monkeypatch) -> World:
    """Demo county, 2 speakers per village, one audio asset, the signing key the speakers trust."""
    with session_scope(session_factory) as s:
        regions.load_demo(session=s)
        device_service.ensure_simulated(session=s, per_village=2)
        villages = sorted(s.scalars(select(Region.code).where(Region.level == RegionLevel.village)).all())
        asset = AudioAsset(
            cache_key=f"batch-{uuid.uuid4().hex}", sha256="ab" * 32, size_bytes=8_000, duration_ms=2_000,
            engine="espeak", voice="cmn",
        )  # fmt: skip
        s.add(asset)
        s.flush()
        asset_id = asset.id
    settings = Settings(
        data_dir=tmp_path,
        scheduler={"lead_time_s": LEAD_S, "prefetch_s": 0, "quiet_start": "00:00", "quiet_end": "00:00"},
    )
    return World(
        villages=villages, asset_id=asset_id, settings=settings,
        signer=device_keys.load_or_create(tmp_path).signer(),
    )  # fmt: skip


def _airings(
    session_factory,
    world: World,
    specs: list[tuple[str, Priority, datetime]],
    *,
    status=OccurrenceStatus.scheduled,
) -> list[int]:
    """One approved one-off broadcast per (village, priority, start), with its occurrence."""
    tag = uuid.uuid4().hex[:6]
    ids = []
    with session_scope(session_factory) as s:
        for i, (village, priority, start) in enumerate(specs):
            broadcast = Broadcast(
                title=f"batch {tag} {i}", text="请注意。", priority=priority,
                status=BroadcastStatus.scheduled, target_areas=[village], target_devices=[],
                scope_code=village, asset_id=world.asset_id, start_at=start,
            )  # fmt: skip
            expires = start + timedelta(seconds=LATE_S)
            broadcast.occurrences.append(
                Occurrence(
                    start_at=start,
                    expires_at=expires,
                    deadline_at=expires + timedelta(seconds=2 + GRACE_S),
                    status=status,
                )  # fmt: skip
            )
            s.add(broadcast)
            s.flush()
            ids.append(broadcast.occurrences[0].id)
    return ids


def _statuses(session_factory, ids) -> dict[int, str]:
    with session_factory() as s:
        return dict(s.execute(select(Occurrence.id, Occurrence.status).where(Occurrence.id.in_(ids))).all())


def _deliveries(session_factory, ids) -> Counter[int]:
    with session_factory() as s:
        rows = s.execute(
            select(Delivery.occurrence_id, func.count())
            .where(Delivery.occurrence_id.in_(ids))
            .group_by(Delivery.occurrence_id)
        ).all()
    return Counter(dict(rows))


def _job_ids(engine: Engine) -> set[str]:
    with engine.connect() as conn:
        return set(conn.execute(text(f"SELECT id FROM {JOBS_TABLE}")).scalars())


@pytest.mark.slow
def test_thirty_airings_due_together_go_out_as_one_batch_highest_priority_first(
    engine, session_factory, broker_url, world
):
    start = utcnow().replace(microsecond=0) + timedelta(seconds=4)
    levels = [
        Priority.village,
        Priority.township,
        Priority.county,
        Priority.emergency_blue,
        Priority.emergency_red,
    ]
    ids = _airings(session_factory, world, [(world.villages[i], levels[i % 5], start) for i in range(30)])
    topic_of = {occ: f"cx/v1/area/{world.villages[i]}/cmd" for i, occ in enumerate(ids)}
    commands = Commands(broker_url)
    link = OrderLink(broker_url)
    commits: list[float] = []
    event.listen(session_factory, "after_commit", lambda _session: commits.append(time.monotonic()))
    rt = JobContext(
        settings=world.settings, session_factory=session_factory,
        sender=CommandSender(link=link, signer=world.signer),
    )  # fmt: skip

    async def scenario() -> tuple[set[str], set[str], int]:
        runner = SchedulerRunner(engine=engine, context=rt)
        runner.start()
        try:
            planned = _job_ids(engine)
            commits.clear()  # from here on, only the dispatch writes
            await asyncio.to_thread(
                _wait, lambda: len(commands.of("play", set(ids))) >= len(ids), 15, "the 30 play commands"
            )
            await asyncio.sleep(SETTLE_S)
            return planned, _job_ids(engine), len(commits)
        finally:
            runner.shutdown()

    try:
        planned, left, batch_commits = asyncio.run(scenario())
    finally:
        commands.close()
        link.close()
    deadline = start + timedelta(seconds=LATE_S + 2 + GRACE_S)
    dispatch_job = instant_job_id("dispatch", start - timedelta(seconds=LEAD_S))
    close_job = instant_job_id("close", deadline)
    assert planned == {dispatch_job, close_job}  # one dispatch job for all 30, one close job
    assert left == {close_job}
    assert batch_commits == 2  # one transaction prepared all 30, one recorded them

    # each airing exactly once, on its own village's topic
    plays = commands.of("play", set(ids))
    assert Counter(plays) == Counter({(topic_of[occ], occ): 1 for occ in ids})
    # handed to the link highest priority first (an emergency before routine), then by occurrence
    order = [(occ, priority) for occ, priority, _ in link.plays]
    assert sorted(occ for occ, _ in order) == sorted(ids)
    assert order == sorted(order, key=lambda o: (-o[1], o[0]))
    assert order[0][1] == Priority.emergency_red.rank and order[-1][1] == Priority.village.rank
    # all out before they start: speakers start together
    assert max(t for *_, t in link.plays) < start.timestamp()

    assert set(_statuses(session_factory, ids).values()) == {OccurrenceStatus.dispatched}
    with session_factory() as s:
        stamps = set(s.scalars(select(Occurrence.dispatched_at).where(Occurrence.id.in_(ids))))
    assert len(stamps) == 1  # one batch
    assert _deliveries(session_factory, ids) == Counter(dict.fromkeys(ids, 2))  # 2 speakers each, once


def test_one_batch_airs_what_may_and_settles_each_of_the_rest(session_factory, broker_url, world):
    now = utcnow()
    local = now.astimezone(SH)
    v = world.villages
    with session_scope(session_factory) as s:  # the last village is in quiet hours right now
        s.add(
            QuietHours(
                area_code=v[5], start=(local - timedelta(hours=1)).strftime("%H:%M"),
                end=(local + timedelta(hours=1)).strftime("%H:%M"),
            )
        )  # fmt: skip
    soon = now + timedelta(seconds=0.5)
    on_time, too_late, quiet_routine, quiet_emergency, not_due = _airings(
        session_factory,
        world,
        [
            (v[0], Priority.village, soon),
            (v[1], Priority.village, now - timedelta(seconds=LATE_S + 5)),  # its latest start has passed
            (v[5], Priority.village, soon),
            (v[5], Priority.emergency_orange, soon),
            (v[3], Priority.county, now + timedelta(hours=1)),
        ],
    )
    (cancelled,) = _airings(
        session_factory, world, [(v[4], Priority.village, soon)], status=OccurrenceStatus.cancelled
    )
    ids = {on_time, too_late, quiet_routine, quiet_emergency, not_due, cancelled}
    commands = Commands(broker_url)
    link = OrderLink(broker_url)
    try:
        outcome = dispatch.dispatch_due(
            session_factory=session_factory, sender=CommandSender(link=link, signer=world.signer),
            settings=world.settings, at=now,
        )  # fmt: skip
        _wait(lambda: len(commands.of("play", ids)) >= 2, 10, "two play commands")
        time.sleep(SETTLE_S)
    finally:
        commands.close()
        link.close()
    assert outcome == {
        on_time: OccurrenceStatus.dispatched,
        quiet_emergency: OccurrenceStatus.dispatched,
        too_late: OccurrenceStatus.missed,
        quiet_routine: OccurrenceStatus.refused,
    }
    assert _statuses(session_factory, ids) == outcome | {
        not_due: OccurrenceStatus.scheduled,
        cancelled: OccurrenceStatus.cancelled,
    }
    assert [occ for occ, *_ in link.plays] == [quiet_emergency, on_time]  # emergency first
    assert sorted(occ for _, occ in commands.of("play", ids)) == sorted([on_time, quiet_emergency])
    with session_factory() as s:
        details = dict(
            s.execute(select(Occurrence.id, Occurrence.detail).where(Occurrence.id.in_(ids))).all()
        )
    assert "after the latest start" in details[too_late]
    assert "quiet hours" in details[quiet_routine]
    assert _deliveries(session_factory, ids) == Counter({on_time: 2, quiet_emergency: 2})


def test_an_airing_cancelled_while_its_batch_goes_out_is_stopped(session_factory, broker_url, world):
    with session_scope(session_factory) as s:
        admin_id = users.create_user(
            session=s, username="batch_admin", password="password-1", role=Role.admin
        ).id
    start = utcnow() + timedelta(seconds=0.5)
    first, second = _airings(
        session_factory,
        world,
        [(world.villages[0], Priority.county, start), (world.villages[1], Priority.village, start)],
    )

    def cancel_second(occurrence_id: int) -> None:
        """While the first command goes out, an approver cancels the second airing's broadcast."""
        if occurrence_id != first:
            return
        with session_scope(session_factory) as s:
            broadcast = s.get(Occurrence, second).broadcast
            plan = lifecycle.cancel_broadcast(session=s, user=s.get(User, admin_id), broadcast=broadcast)
            assert plan.cancelled == [second] and plan.occurrence_ids == []  # it was not on air yet

    commands = Commands(broker_url)
    link = OrderLink(broker_url, on_publish=cancel_second)
    try:
        outcome = dispatch.dispatch_due(
            session_factory=session_factory, sender=CommandSender(link=link, signer=world.signer),
            settings=world.settings, at=utcnow(),
        )  # fmt: skip
        _wait(lambda: commands.of("stop", {second}), 10, "the stop of the cancelled airing")
        time.sleep(SETTLE_S)
        seen = [
            (c["type"], c["occurrence_id"])
            for t, c in commands.seen
            if c.get("occurrence_id") in (first, second)
        ]
    finally:
        commands.close()
        link.close()
    assert outcome == {first: OccurrenceStatus.dispatched, second: OccurrenceStatus.cancelled}
    # its play command had left already: the stop follows it on the same topic, and only it
    assert seen.index(("play", second)) < seen.index(("stop", second))
    assert ("stop", first) not in seen
    assert commands.of("stop", {second}) == [(f"cx/v1/area/{world.villages[1]}/cmd", second)]


# A runner that publishes an airing and then hangs before recording it, until it is killed.
KILLED_RUNNER = textwrap.dedent(
    """
    import os, sys, time
    from datetime import datetime
    from core.db import make_engine, make_session_factory
    from core.settings import Settings
    from devices import keys
    from devices.commands import CommandSender
    from devices.transport import MqttLink
    from scheduler import dispatch

    url, broker, data_dir, public_url, at = sys.argv[1:]
    settings = Settings(data_dir=data_dir, database={"url": url}, public_url=public_url,
                        scheduler={"lead_time_s": 1, "prefetch_s": 0, "quiet_start": "00:00",
                                   "quiet_end": "00:00"})
    mqtt = MqttLink(broker, client_id=f"killed-runner-{os.getpid()}")
    mqtt.connect()

    class Hangs:
        connected = True
        def publish(self, topic, payload, *, qos=1, retain=False):
            mqtt.publish(topic, payload, qos=qos, retain=retain)
            print("published", flush=True)
            time.sleep(3600)

    sender = CommandSender(link=Hangs(), signer=keys.load_or_create(settings.data_dir).signer())
    dispatch.dispatch_due(session_factory=make_session_factory(make_engine(url)), sender=sender,
                          settings=settings, at=datetime.fromisoformat(at))
    """
)


@pytest.mark.slow
def test_a_runner_killed_between_publishing_and_recording_leaves_the_airing_to_be_sent_again(
    engine, database_url, session_factory, broker_url, world, audio_server: AudioServer, tmp_path
):
    village = world.villages[0]
    # the real MP3 the speakers download, where the server's URL points
    media = audio_server.directory / "media"
    media.mkdir(exist_ok=True)
    shutil.copyfile(audio_server.directory / "tone.mp3", media / f"{audio_server.sha256}.mp3")
    with session_scope(session_factory) as s:
        asset = s.get(AudioAsset, world.asset_id)
        asset.sha256, asset.size_bytes = audio_server.sha256, audio_server.size_bytes
        asset.duration_ms = round(audio_server.duration_s * 1000)
    settings = world.settings.model_copy(update={"public_url": audio_server.base_url})
    trusted = [key for _, key in device_keys.load_or_create(tmp_path).trusted()]
    speakers = [f"{village}-01", f"{village}-02"]
    specs = [simulate.SpeakerSpec(device_id=d, area_code=village) for d in speakers]
    commands = Commands(broker_url)
    try:
        with LiveSpeakers(specs, broker_url, tmp_path / "speaker-cache", trusted_keys=trusted) as live:
            start = utcnow().replace(microsecond=0) + timedelta(seconds=8)
            (occ,) = _airings(session_factory, world, [(village, Priority.village, start)])
            _run_and_kill(
                [database_url, broker_url, str(tmp_path), audio_server.base_url,
                 (start - timedelta(seconds=LEAD_S)).isoformat()],
                until=lambda: commands.of("play", {occ}), log=tmp_path / "killed-runner.log",
            )  # fmt: skip
            # killed before it could record the dispatch: still `scheduled`, its deliveries snapshotted
            assert _statuses(session_factory, [occ]) == {occ: OccurrenceStatus.scheduled}
            assert _deliveries(session_factory, [occ]) == Counter({occ: 2})

            # the next runner sends it again, and records it
            link = OrderLink(broker_url)
            rt = JobContext(
                settings=settings, session_factory=session_factory,
                sender=CommandSender(link=link, signer=world.signer),
            )  # fmt: skip

            async def next_runner() -> None:
                runner = SchedulerRunner(engine=engine, context=rt)
                runner.start()
                try:
                    await asyncio.to_thread(
                        _wait, lambda: len(commands.of("play", {occ})) >= 2, 15, "the second play command"
                    )
                finally:
                    runner.shutdown()

            try:
                asyncio.run(next_runner())
            finally:
                link.close()
            assert _statuses(session_factory, [occ]) == {occ: OccurrenceStatus.dispatched}
            assert _deliveries(session_factory, [occ]) == Counter({occ: 2})  # snapshotted once
            assert commands.of("play", {occ}) == [(f"cx/v1/area/{village}/cmd", occ)] * 2
            # the speakers got the command twice and air it once, at its time
            assert live.sim is not None
            _wait(lambda: all(live.sim.outcomes(d) for d in speakers), 30, "the airing to finish")
            time.sleep(SETTLE_S)
            assert live.sim.all_outcomes() == dict.fromkeys(speakers, [(occ, "played")])
    finally:
        commands.close()


def _run_and_kill(args: list[str], *, until: Callable[[], object], log: Path) -> None:
    """Run KILLED_RUNNER; once it has published and `until()` holds, SIGKILL it."""
    with open(log, "w") as err:
        child = subprocess.Popen(
            [sys.executable, "-c", KILLED_RUNNER, *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=err,
            text=True, env={**os.environ, "PYTHONPATH": str(ROOT)},
        )  # fmt: skip
        try:
            assert child.stdout is not None
            line = child.stdout.readline().strip()
            assert line == "published", f"the runner to kill said {line!r}:\n{log.read_text()}"
            _wait(until, 10, "the play command of the runner to kill")
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait(10)
            child.stdout.close()
    assert child.returncode == -signal.SIGKILL


class RecordingLink(OrderLink):
    """The real MQTT link, noting (type, occurrence id, topic) of every command handed to it."""

    def __init__(self, broker_url: str) -> None:
        super().__init__(broker_url)
        self.sent: list[tuple[str, int | None, str]] = []

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> None:
        command = json.loads(payload)
        self.sent.append((command["type"], command.get("occurrence_id"), topic))
        super().publish(topic, payload, qos=qos, retain=retain)


def test_open_airings_are_sent_again_to_who_still_needs_them_and_withdrawn_ones_are_stopped(
    session_factory, broker_url, world
):
    now = utcnow()
    v = world.villages
    soon = now + timedelta(seconds=30)
    waiting, withdrawn, closed = _airings(
        session_factory, world, [(v[0], Priority.village, soon), (v[1], Priority.village, soon),
                                 (v[2], Priority.village, soon)],
    )  # fmt: skip
    link = RecordingLink(broker_url)
    sender = CommandSender(link=link, signer=world.signer)
    try:
        dispatch.dispatch_due(
            session_factory=session_factory, sender=sender, settings=world.settings, at=soon
        )
        with session_scope(session_factory) as s:
            speakers = {
                occ: sorted(s.scalars(select(Delivery.device_id).where(Delivery.occurrence_id == occ)))
                for occ in (waiting, withdrawn, closed)
            }
            played = s.scalars(
                select(Delivery).where(
                    Delivery.occurrence_id == waiting, Delivery.device_id == speakers[waiting][0]
                )
            ).one()
            played.state = "played"
            s.get(Occurrence, waiting).detail = f"{dispatch.HELD_PREFIX} at {now.isoformat()}: link down"
            s.get(Occurrence, withdrawn).status = OccurrenceStatus.cancelled
            s.get(Occurrence, closed).expires_at = now - timedelta(seconds=1)  # its start window is over
            s.get(Occurrence, closed).detail = f"{dispatch.HELD_PREFIX} at {now.isoformat()}: link down"
        everyone = [d for ids in speakers.values() for d in ids]
        link.sent.clear()

        # These speakers came online: each gets what is still due for it, on its own topic.
        dispatch.resend_open(
            session_factory=session_factory, sender=sender, settings=world.settings, device_ids=everyone
        )
        own = lambda d: f"cx/v1/dev/{d}/cmd"  # noqa: E731
        assert sorted(link.sent) == sorted(
            [("play", waiting, own(speakers[waiting][1]))]  # not the one that played
            + [("stop", withdrawn, own(d)) for d in speakers[withdrawn]]
        )
        link.sent.clear()

        # The link is back after an outage: every open airing to all of its topics.
        dispatch.resend_open(session_factory=session_factory, sender=sender, settings=world.settings)
        assert sorted(link.sent) == sorted(
            [("play", waiting, f"cx/v1/area/{v[0]}/cmd")]
            + [("stop", withdrawn, own(d)) for d in speakers[withdrawn]]
        )
    finally:
        link.close()
    for occ in (waiting, closed):
        dispatch.close(session_factory=session_factory, occurrence_id=occ)
    with session_factory() as s:
        assert s.get(Occurrence, waiting).detail.startswith(f"{dispatch.HELD_PREFIX}; re-sent at ")
        assert s.get(Occurrence, waiting).status == OccurrenceStatus.done
        assert s.get(Occurrence, closed).detail.endswith("not back before its latest start: not re-sent")
