"""One speaker: connect, subscribe to its area chain, obey commands, report; any number per process."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

import aiomqtt

from devices import protocol
from devices.agent.cache import AudioCache, DownloadError
from devices.agent.players import NullPlayer, Player, PlayerError
from devices.protocol import (
    PlayCommand,
    ProtocolError,
    Report,
    ReportState,
    SetVolumeCommand,
    Status,
    StopCommand,
    SyncCommand,
    TestToneCommand,
)

logger = logging.getLogger(__name__)

# Retained status is republished this often (and at once when volume or playback state changes).
HEARTBEAT_INTERVAL_S = 60.0
# MQTT keepalive: a broker fires the last will ~1.5 x this after a speaker goes silent without closing.
KEEPALIVE_S = 30
# Seconds to wait for CONNACK, SUBACK and PUBACK before treating the connection as broken.
MQTT_TIMEOUT_S = 10.0
# Reconnect backoff: doubles from MIN to MAX, with jitter so a restarted broker is not stampeded.
RECONNECT_MIN_S = 1.0
RECONNECT_MAX_S = 60.0
# Seconds given to publishing `online=0` on a clean shutdown.
GOODBYE_TIMEOUT_S = 2.0
# Occurrence ids remembered for idempotency (QoS 1 redelivery, one command on several area topics).
REMEMBERED_OCCURRENCES = 10_000
# Reports kept while disconnected; they are sent in order after reconnecting.
OUTBOX_LIMIT = 1_000

# How long to wait for cancelled tasks before cancelling them again (longer than the goodbye).
CANCEL_RETRY_S = GOODBYE_TIMEOUT_S + 1.0
# Added to the wait for start_at: the loop's timer may fire a hair early against the wall clock.
START_SLACK_S = 0.005

FIRMWARE = "cunxiang-agent/0.1"
STOPPED_BY_SERVER = "stopped by server"
SIMULATED_FAILURE = "simulated playback failure"
FINAL_STATES: frozenset[str] = frozenset({"played", "failed", "skipped", "preempted"})

Behaviour = Literal["ok", "fail", "silent"]
BEHAVIOURS: tuple[str, ...] = ("ok", "fail", "silent")


@dataclass(frozen=True)
class BrokerAddress:
    """Where and how to reach the MQTT broker."""

    host: str
    port: int = 1883
    username: str | None = None
    password: str | None = None
    tls: bool = False


def parse_broker_url(url: str) -> BrokerAddress:
    """Parse ``mqtt://[user:pass@]host[:port]`` (or ``mqtts://`` for TLS, default port 8883)."""
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
        raise ValueError(f"broker URL must look like mqtt://[user:pass@]host:port, got {url!r}")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"bad port in broker URL {url!r}") from None
    tls = parts.scheme == "mqtts"
    return BrokerAddress(
        host=parts.hostname,
        port=port or (8883 if tls else 1883),
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        tls=tls,
    )


def _now() -> datetime:
    return datetime.now(UTC)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


async def cancel_and_wait(tasks: Iterable[asyncio.Task[Any]]) -> None:
    """Cancel tasks and wait until they end, cancelling again if one swallowed it.

    Python 3.11's asyncio.wait_for (used by aiomqtt for every acknowledgement) can lose a
    cancellation that arrives just as the awaited PUBACK does.
    """
    pending = [task for task in tasks if not task.done()]
    while pending:
        for task in pending:
            task.cancel()
        _, still = await asyncio.wait(pending, timeout=CANCEL_RETRY_S)
        pending = list(still)


def _refused(granted: object) -> bool:
    """SUBACK entry is a failure (0x80); paho gives ints or ReasonCode objects."""
    value = getattr(granted, "value", granted)
    return isinstance(value, int) and value >= 0x80


@dataclass
class _Slot:
    """What holds the loudspeaker right now: an occurrence, or a test tone (occurrence_id None)."""

    occurrence_id: int | None
    priority: int
    task: asyncio.Task[None]
    started: float = field(default_factory=time.monotonic)
    interrupted_by: str | None = None


class Speaker:
    """The behaviour of one loudspeaker box, independent of how many share a process."""

    def __init__(
        self,
        device_id: str,
        area_code: str,
        *,
        broker: BrokerAddress | str,
        cache: AudioCache | Path,
        player: Player | None = None,
        behaviour: Behaviour = "ok",
        volume: int = 80,
    ) -> None:
        if not protocol.DEVICE_ID_RE.match(device_id):
            raise ValueError(f"device id must be 1-64 of A-Z a-z 0-9 _ . -: {device_id!r}")
        if behaviour not in BEHAVIOURS:
            raise ValueError(f"behaviour must be one of {BEHAVIOURS}: {behaviour!r}")
        self.device_id = device_id
        self.area_code = area_code
        self.topics = protocol.subscriptions(device_id, area_code)  # raises ProtocolError on a bad code
        self.broker = parse_broker_url(broker) if isinstance(broker, str) else broker
        self.cache = cache if isinstance(cache, AudioCache) else AudioCache(cache)
        self.player: Player = player or NullPlayer()
        self.behaviour = behaviour
        self.volume = volume
        self.fault: str | None = None
        self.last_cmd_id: str | None = None
        self.ready = asyncio.Event()  # set while connected and subscribed
        self.counters: Counter[str] = Counter()  # messages, malformed, duplicate, ignored, connects
        self.reports: list[Report] = []  # every report produced, in order
        self.outcomes: dict[int, Report] = {}  # final report per occurrence
        self.on_final: Callable[[Report], None] | None = None  # called with each final report
        self._started = time.monotonic()
        self._seen: OrderedDict[int, None] = OrderedDict()
        self._stopped_early: OrderedDict[int, None] = OrderedDict()
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._cancel_reason: dict[int, str] = {}
        self._downloading: set[int] = set()
        self._slot: _Slot | None = None
        self._waiting: dict[int, tuple[int, datetime, int]] = {}
        self._channel = asyncio.Condition()
        self._outbox: deque[tuple[str, bytes]] = deque(maxlen=OUTBOX_LIMIT)
        self._outbox_ready = asyncio.Event()
        self._status_dirty = asyncio.Event()
        self._background: set[asyncio.Task[None]] = set()
        self._last_session_ready = False

    # ------------------------------------------------------------ connection

    async def run(self) -> None:
        """Stay connected until cancelled, reconnecting with capped exponential backoff."""
        delay = RECONNECT_MIN_S
        try:
            while True:
                self._last_session_ready = False
                try:
                    await self._session()
                except aiomqtt.MqttError as exc:
                    logger.warning(
                        "%s: MQTT connection to %s:%s lost or refused: %s",
                        self.device_id,
                        self.broker.host,
                        self.broker.port,
                        exc,
                    )
                except Exception:
                    # A bug must not silence a loudspeaker for good: log it and reconnect.
                    logger.exception("%s: unexpected error in the MQTT session", self.device_id)
                if self._last_session_ready:
                    delay = RECONNECT_MIN_S  # it worked once: the next failure starts the backoff afresh
                pause = delay * random.uniform(0.75, 1.25)
                logger.info("%s: reconnecting in %.1f s", self.device_id, pause)
                await asyncio.sleep(pause)
                delay = min(delay * 2, RECONNECT_MAX_S)
        finally:
            await cancel_and_wait([*self._tasks.values(), *self._background])

    def _client(self) -> aiomqtt.Client:
        online = protocol.device_topic(self.device_id, "online")
        return aiomqtt.Client(
            self.broker.host,
            self.broker.port,
            username=self.broker.username,
            password=self.broker.password,
            identifier=self.device_id,
            protocol=aiomqtt.ProtocolVersion.V311,
            clean_session=True,
            keepalive=KEEPALIVE_S,
            timeout=MQTT_TIMEOUT_S,
            will=aiomqtt.Will(online, protocol.OFFLINE, qos=1, retain=True),
            tls_params=aiomqtt.TLSParameters() if self.broker.tls else None,
        )

    async def _session(self) -> None:
        self._last_session_ready = False
        client = self._client()
        async with client:
            try:
                granted = await client.subscribe([(topic, protocol.QOS_COMMAND) for topic in self.topics])
                refused = [t for t, g in zip(self.topics, granted, strict=False) if _refused(g)]
                if refused:
                    raise aiomqtt.MqttError(f"broker refused subscriptions: {refused}")
                online = protocol.device_topic(self.device_id, "online")
                await client.publish(online, protocol.ONLINE, qos=1, retain=True)
                helpers = [
                    asyncio.create_task(self._publish_outbox(client)),
                    asyncio.create_task(self._heartbeat(client)),
                ]
                self._last_session_ready = True
                self.counters["sessions_ready"] += 1
                self.ready.set()
                logger.debug("%s: connected, subscribed to %s", self.device_id, self.topics)
                try:
                    async for message in client.messages:
                        self.handle(str(message.topic), message.payload)
                finally:
                    self.ready.clear()
                    await cancel_and_wait(helpers)
            except asyncio.CancelledError:
                # A clean DISCONNECT suppresses the last will, so say goodbye ourselves.
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(GOODBYE_TIMEOUT_S):
                        await client.publish(
                            protocol.device_topic(self.device_id, "online"),
                            protocol.OFFLINE,
                            qos=1,
                            retain=True,
                        )
                raise

    async def _publish_outbox(self, client: aiomqtt.Client) -> None:
        while True:
            while self._outbox:
                topic, payload = self._outbox[0]
                try:
                    await client.publish(topic, payload, qos=protocol.QOS_REPORT)
                except aiomqtt.MqttError as exc:
                    # The message loop notices a dead connection; keep the report for the next one.
                    logger.debug("%s: report not acknowledged yet: %s", self.device_id, exc)
                    await asyncio.sleep(1)
                    continue
                if self._outbox and self._outbox[0][1] is payload:
                    self._outbox.popleft()
            self._outbox_ready.clear()
            await self._outbox_ready.wait()

    async def _heartbeat(self, client: aiomqtt.Client) -> None:
        topic = protocol.device_topic(self.device_id, "status")
        while True:
            self._status_dirty.clear()
            try:
                await client.publish(
                    topic, protocol.encode(self.status()), qos=protocol.QOS_STATUS, retain=True
                )
            except aiomqtt.MqttError as exc:
                logger.debug("%s: status not acknowledged: %s", self.device_id, exc)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(HEARTBEAT_INTERVAL_S):
                    await self._status_dirty.wait()

    def status(self) -> Status:
        """The speaker's current status heartbeat."""
        slot = self._slot
        if slot is not None:
            state, occurrence = "playing", slot.occurrence_id
        elif self._downloading:
            state, occurrence = "downloading", min(self._downloading)
        else:
            state, occurrence = "idle", None
        return Status(
            device_id=self.device_id,
            state=state,
            volume=self.volume,
            occurrence_id=occurrence,
            firmware=FIRMWARE,
            uptime_s=round(time.monotonic() - self._started, 1),
            fault=self.fault[:200] if self.fault else None,
            last_cmd_id=self.last_cmd_id,
        )

    # ------------------------------------------------------------ commands

    def handle(self, topic: str, payload: object) -> None:
        """Act on one incoming command message; malformed ones are logged, counted and dropped."""
        if topic not in self.topics:
            # Only a misbehaving broker delivers these; never treat them as commands.
            self.counters["foreign_topic"] += 1
            logger.debug("%s: ignored message on unsubscribed topic %s", self.device_id, topic)
            return
        self.counters["messages"] += 1
        if isinstance(payload, str):
            payload = payload.encode()
        if not isinstance(payload, bytes | bytearray):
            payload = b"" if payload is None else str(payload).encode()
        try:
            command = protocol.parse_command(bytes(payload))
        except ProtocolError as exc:
            self.counters["malformed"] += 1
            logger.warning("%s: dropped malformed command on %s: %s", self.device_id, topic, exc)
            return
        if self.behaviour == "silent":
            self.counters["ignored"] += 1
            return
        self.last_cmd_id = command.cmd_id
        match command:
            case PlayCommand():
                self._on_play(command)
            case StopCommand():
                self._on_stop(command)
            case SetVolumeCommand():
                self.volume = command.volume
                self._status_dirty.set()
            case SyncCommand():
                self._status_dirty.set()
            case TestToneCommand():
                self._spawn(self._run_tone(command))

    def _remember(self, store: OrderedDict[int, None], occurrence_id: int) -> None:
        store[occurrence_id] = None
        while len(store) > REMEMBERED_OCCURRENCES:
            store.popitem(last=False)

    def _on_play(self, command: PlayCommand) -> None:
        occurrence = command.occurrence_id
        if occurrence in self._seen:
            self.counters["duplicate"] += 1
            logger.debug("%s: occurrence %s already handled", self.device_id, occurrence)
            return
        self._remember(self._seen, occurrence)
        if occurrence in self._stopped_early:
            self._report(occurrence, "skipped", error=STOPPED_BY_SERVER)
            return
        now = _now()
        if now >= command.expires_at:
            self._report(
                occurrence,
                "skipped",
                error=f"expired at {_iso(command.expires_at)} before it was received at {_iso(now)}",
            )
            return
        task = asyncio.create_task(self._run_play(command), name=f"{self.device_id}:{occurrence}")
        self._tasks[occurrence] = task

    def _on_stop(self, command: StopCommand) -> None:
        occurrence = command.occurrence_id
        if occurrence is None:
            slot = self._slot
            if slot is None or slot.occurrence_id is None:
                if slot is not None:  # a test tone
                    slot.interrupted_by = STOPPED_BY_SERVER
                    slot.task.cancel()
                return
            occurrence = slot.occurrence_id
        task = self._tasks.get(occurrence)
        if task is not None:
            self._cancel_reason[occurrence] = STOPPED_BY_SERVER
            task.cancel()
        elif occurrence not in self._seen:
            # The stop overtook its play command (different topics): skip the play when it arrives.
            self._remember(self._stopped_early, occurrence)

    async def _run_play(self, command: PlayCommand) -> None:
        occurrence = command.occurrence_id
        try:
            self._report(occurrence, "received")
            self._downloading.add(occurrence)
            try:
                path = await self.cache.fetch(command.audio_url, command.sha256, command.size_bytes)
            except DownloadError as exc:
                self.fault = f"download: {exc}"
                self._report(occurrence, "failed", error=str(exc))
                return
            finally:
                self._downloading.discard(occurrence)
            delay = (command.start_at - _now()).total_seconds()
            if delay > 0:
                await asyncio.sleep(delay + START_SLACK_S)
            await self._acquire(command)
            try:
                await self._play(command, path)
            finally:
                await self._release()
        except asyncio.CancelledError:
            reason = self._cancel_reason.pop(occurrence, None)
            if reason is None:
                raise  # the speaker is shutting down: no report
            if occurrence not in self.outcomes:
                self._report(occurrence, "skipped", error=reason)
        finally:
            self._tasks.pop(occurrence, None)
            self._cancel_reason.pop(occurrence, None)

    async def _play(self, command: PlayCommand, path: Path) -> None:
        occurrence = command.occurrence_id
        now = _now()
        if now >= command.expires_at:
            self._report(
                occurrence,
                "skipped",
                error=f"expired at {_iso(command.expires_at)} before playback could start at {_iso(now)}",
            )
            return
        volume = command.volume if command.volume is not None else self.volume
        self._report(occurrence, "playing")
        self._status_dirty.set()
        started = time.monotonic()
        try:
            if self.behaviour == "fail":
                raise PlayerError(SIMULATED_FAILURE)
            await self.player.play(path, command.duration_s, volume)
        except PlayerError as exc:
            self.fault = f"player: {exc}"
            self._report(occurrence, "failed", seconds_played=time.monotonic() - started, error=str(exc))
            return
        except asyncio.CancelledError:
            reason = self._cancel_reason.pop(occurrence, None)
            if reason is None:
                raise
            state: ReportState = "failed" if reason == STOPPED_BY_SERVER else "preempted"
            self._report(occurrence, state, seconds_played=time.monotonic() - started, error=reason)
            return
        self.fault = None
        self._report(occurrence, "played", seconds_played=time.monotonic() - started)

    async def _acquire(self, command: PlayCommand) -> None:
        """Wait until the loudspeaker is ours; a higher priority interrupts what plays."""
        occurrence = command.occurrence_id
        key = (-command.priority, command.start_at, occurrence)
        async with self._channel:
            self._waiting[occurrence] = key
            try:
                while True:
                    first = min(self._waiting.values()) == key
                    slot = self._slot
                    if first and slot is None:
                        break
                    if first and slot is not None and slot.priority < command.priority:
                        self._interrupt(slot, f"preempted by occurrence {occurrence}")
                    await self._channel.wait()
                self._slot = _Slot(occurrence, command.priority, asyncio.current_task())  # type: ignore[arg-type]
            finally:
                del self._waiting[occurrence]
                self._channel.notify_all()

    def _interrupt(self, slot: _Slot, reason: str) -> None:
        if slot.interrupted_by is not None:
            return
        slot.interrupted_by = reason
        if slot.occurrence_id is not None:
            self._cancel_reason[slot.occurrence_id] = reason
        slot.task.cancel()

    async def _release(self) -> None:
        async with self._channel:
            self._slot = None
            self._channel.notify_all()
        self._status_dirty.set()

    async def _run_tone(self, command: TestToneCommand) -> None:
        if self._slot is not None:
            logger.info(
                "%s: test tone ignored, occurrence %s is playing", self.device_id, self._slot.occurrence_id
            )
            return
        slot = _Slot(None, -1, asyncio.current_task())  # type: ignore[arg-type]
        self._slot = slot
        self._status_dirty.set()
        try:
            await self.player.tone(command.duration_s, self.volume, self.cache.directory)
        except PlayerError as exc:
            self.fault = f"test tone: {exc}"
            logger.warning("%s: test tone failed: %s", self.device_id, exc)
        except asyncio.CancelledError:
            if slot.interrupted_by is None:
                raise
        finally:
            await self._release()

    def _spawn(self, coro: Coroutine[object, object, None]) -> None:
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # ------------------------------------------------------------ reports

    def _report(
        self,
        occurrence_id: int,
        state: ReportState,
        *,
        seconds_played: float | None = None,
        error: str | None = None,
    ) -> None:
        report = Report(
            device_id=self.device_id,
            occurrence_id=occurrence_id,
            state=state,
            seconds_played=round(seconds_played, 2) if seconds_played is not None else None,
            error=error[:500] if error else None,
        )
        self.reports.append(report)
        if state in FINAL_STATES:
            self.outcomes[occurrence_id] = report
            if self.on_final is not None:
                self.on_final(report)
        logger.debug("%s: occurrence %s %s %s", self.device_id, occurrence_id, state, error or "")
        self._outbox.append((protocol.device_topic(self.device_id, "report"), protocol.encode(report)))
        self._outbox_ready.set()

    def final_states(self) -> list[tuple[int, str]]:
        """(occurrence id, final state) in the order they finished."""
        return [(occ, report.state) for occ, report in self.outcomes.items()]
