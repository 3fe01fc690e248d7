"""One speaker: connect, subscribe to its area chain, obey commands, report; any number per process."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import socket
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import aiomqtt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from cunxiang_agent.cache import AudioCache, DownloadError
from cunxiang_agent.players import NullPlayer, Player, PlayerError
from cunxiang_shared import protocol
from cunxiang_shared.broker import BrokerAddress, parse_broker_url
from cunxiang_shared.protocol import (
    CommandResult,
    PlayCommand,
    ProtocolError,
    Rejection,
    Report,
    ReportState,
    SetVolumeCommand,
    Status,
    StopCommand,
    SyncCommand,
    TestToneCommand,
)
from cunxiang_shared.signing import SignatureError, Verifier
from cunxiang_shared.states import FINAL_STATES

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
# Reports remembered after sending, for a `sync` that asks for them again (the server may have
# missed them: it was not subscribed yet when this speaker came back).
REPORTS_KEPT = 2_000

# How long to wait for cancelled tasks before cancelling them again (longer than the goodbye).
CANCEL_RETRY_S = GOODBYE_TIMEOUT_S + 1.0
# Added to the wait for start_at: the loop's timer may fire a hair early against the wall clock.
START_SLACK_S = 0.005

# The status is published at most this often, however many changes (or forged commands) arrive.
STATUS_MIN_INTERVAL_S = 0.5
# Clock offset: the largest (issued_at - arrival) of the last samples is the estimate; network and
# queueing delays only ever make a sample smaller.
CLOCK_SAMPLES = 16
# Command ids remembered against replays (each until its command expires).
REMEMBERED_COMMANDS = 10_000
# Results of non-play commands carried in the status, newest last.
COMMAND_RESULTS_KEPT = 8
# The state file (pending airings, queued reports, seen ids) is written at most this often.
STATE_SAVE_DELAY_S = 0.2
# A rejection of the same reason is logged at WARNING at most this often (a flood stays countable).
REJECTION_LOG_INTERVAL_S = 10.0
# Simulation: a "flaky" speaker's link stays up this long, then drops for FLAKY_DOWN_S.
FLAKY_UP_S = 20.0
FLAKY_DOWN_S = 8.0
# Simulation: a "drift" speaker's clock runs this far ahead of the true time.
SIM_DRIFT_S = 120.0

FIRMWARE = "cunxiang-agent/0.2"
INTERRUPTED_BY_RESTART = "the speaker program restarted during playback"
STOPPED_BY_SERVER = "stopped by server"
SIMULATED_FAILURE = "simulated playback failure"

# ok; fail (every playback and test tone fails); silent (a hung program: connected, online = 1, but
# ignores commands and publishes no status or report, so the fleet counts it "silent"); flaky (the
# link drops now and then); drift (the clock runs SIM_DRIFT_S ahead).
Behaviour = Literal["ok", "fail", "silent", "flaky", "drift"]
BEHAVIOURS: tuple[str, ...] = ("ok", "fail", "silent", "flaky", "drift")


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _iso_ms(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _drop_socket(client: aiomqtt.Client) -> None:
    """Close the connection's socket without DISCONNECT, as a cut cable would (simulation)."""
    sock = client._client.socket()  # noqa: SLF001 - paho gives no other way to fail a link
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


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
    """The behaviour of one loudspeaker box, independent of how many share a process.

    Commands must be signed by one of `trusted_keys` (docs/protocol.md §9). `require_signatures=False`
    turns the check off: only for simulated speakers on a demo broker that were given no keys.
    With a `state_file`, airings received but not yet final, reports not yet sent and the ids of
    handled commands survive a restart of the program (断网续播).
    """

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
        trusted_keys: Sequence[Ed25519PublicKey] = (),
        require_signatures: bool = True,
        state_file: Path | None = None,
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
        self.verifier = Verifier(trusted_keys)
        self.require_signatures = require_signatures
        self.state_file = state_file
        # Simulation of a wrong clock: this speaker believes it is this many seconds later than it is.
        self.clock_skew_s = SIM_DRIFT_S if behaviour == "drift" else 0.0
        self.fault: str | None = None
        self.last_cmd_id: str | None = None
        self.ready = asyncio.Event()  # set while connected and subscribed
        # messages, malformed, rejected, duplicate, ignored, sessions_ready, link_cuts
        self.counters: Counter[str] = Counter()
        self.rejected: Counter[str] = Counter()  # rejected commands by reason
        self.last_rejection: Rejection | None = None
        self.reports: deque[Report] = deque(maxlen=REPORTS_KEPT)  # the latest reports, in order
        self.outcomes: dict[int, Report] = {}  # final report per occurrence
        self.on_final: Callable[[Report], None] | None = None  # called with each final report
        self._started = time.monotonic()
        self._seen: OrderedDict[int, None] = OrderedDict()
        self._stopped_early: OrderedDict[int, None] = OrderedDict()
        self._cmd_ids: OrderedDict[str, datetime] = OrderedDict()  # handled command id -> expiry
        self._clock_samples: deque[float] = deque(maxlen=CLOCK_SAMPLES)
        self._results: deque[CommandResult] = deque(maxlen=COMMAND_RESULTS_KEPT)
        self._rejection_logged: dict[str, float] = {}
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
        # Pending airings: occurrence -> (topic, raw signed command, last state reported)
        self._pending: dict[int, tuple[str, bytes, str]] = {}
        self._save_handle: asyncio.TimerHandle | None = None
        self._session_task: asyncio.Task[None] | None = None
        self._link_down_until = 0.0
        self._cutting = False

    # ------------------------------------------------------------ clock

    def now(self) -> datetime:
        """This speaker's idea of the time (its own clock, wrong by clock_skew_s in simulation)."""
        moment = datetime.now(UTC)
        return moment + timedelta(seconds=self.clock_skew_s) if self.clock_skew_s else moment

    @property
    def clock_offset_s(self) -> float | None:
        """Server time minus this speaker's time, estimated from signed `issued_at`; None until known."""
        if not self._clock_samples:
            return None
        return round(max(self._clock_samples), 3)

    # ------------------------------------------------------------ connection

    async def run(self) -> None:
        """Stay connected until cancelled, reconnecting with capped exponential backoff."""
        self._load_state()
        delay = RECONNECT_MIN_S
        flaky = asyncio.create_task(self._flap()) if self.behaviour == "flaky" else None
        try:
            while True:
                self._last_session_ready = False
                self._session_task = asyncio.create_task(self._session())
                try:
                    await self._session_task
                except aiomqtt.MqttError as exc:
                    logger.warning(
                        "%s: MQTT connection to %s:%s lost or refused: %s",
                        self.device_id,
                        self.broker.host,
                        self.broker.port,
                        exc,
                    )
                except asyncio.CancelledError:
                    if not self._cutting:
                        raise
                    self._cutting = False
                except Exception:
                    # A bug must not silence a loudspeaker for good: log it and reconnect.
                    logger.exception("%s: unexpected error in the MQTT session", self.device_id)
                finally:
                    self._session_task = None
                if self._last_session_ready:
                    delay = RECONNECT_MIN_S  # it worked once: the next failure starts the backoff afresh
                pause = delay * random.uniform(0.75, 1.25)
                pause = max(pause, self._link_down_until - time.monotonic())
                logger.info("%s: reconnecting in %.1f s", self.device_id, pause)
                await asyncio.sleep(pause)
                delay = min(delay * 2, RECONNECT_MAX_S)
        finally:
            await cancel_and_wait([*self._tasks.values(), *self._background, *filter(None, [flaky])])
            self._save_state()

    def cut_link(self, down_s: float) -> None:
        """Simulate a network outage: drop the connection abruptly (the broker fires the last will)
        and stay offline for down_s seconds. Airings already received keep their times."""
        self._link_down_until = time.monotonic() + down_s
        task = self._session_task
        if task is not None and not task.done():
            self._cutting = True
            self.counters["link_cuts"] += 1
            task.cancel()

    async def _flap(self) -> None:
        while True:
            await asyncio.sleep(FLAKY_UP_S * random.uniform(0.5, 1.5))
            self.cut_link(FLAKY_DOWN_S)
            await asyncio.sleep(FLAKY_DOWN_S)

    def _client(self) -> aiomqtt.Client:
        online = protocol.device_topic(self.device_id, "online")
        tls = None
        if self.broker.tls:
            tls = aiomqtt.TLSParameters(
                ca_certs=self.broker.ca_file, certfile=self.broker.cert_file, keyfile=self.broker.key_file
            )
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
            tls_params=tls,
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
                helpers = [asyncio.create_task(self._publish_outbox(client))]
                if self.behaviour != "silent":  # a hung program says nothing more
                    helpers.append(asyncio.create_task(self._heartbeat(client)))
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
                if self._cutting:
                    # A network outage says no goodbye: close the socket under paho, as a dead link would.
                    _drop_socket(client)
                    raise
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
                    self._save_soon()
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
            await asyncio.sleep(STATUS_MIN_INTERVAL_S)
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
            at=self.now(),
            clock_offset_s=self.clock_offset_s,
            pending=len(self._pending),
            queued_reports=len(self._outbox),
            rejected=dict(self.rejected.most_common(16)) or None,
            last_rejection=self.last_rejection,
            commands=list(self._results) or None,
        )

    # ------------------------------------------------------------ commands

    def handle(self, topic: str, payload: object) -> None:
        """Act on one incoming command message; bad ones are logged, counted, dropped and reported."""
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
        raw = bytes(payload)
        command = self._accept(topic, raw)
        if command is None:
            return
        if self.behaviour == "silent":
            self.counters["ignored"] += 1
            return
        self.last_cmd_id = command.cmd_id
        match command:
            case PlayCommand():
                self._on_play(command, topic=topic, raw=raw)
            case StopCommand():
                self._on_stop(command)
                self._result(command, ok=True)
            case SetVolumeCommand():
                self.volume = command.volume
                self._result(command, ok=True)
                self._save_soon()
            case SyncCommand():
                if command.reports_since is not None:
                    self._resend_reports(command.reports_since)
                self._result(command, ok=True)
            case TestToneCommand():
                self._spawn(self._run_tone(command))

    def _accept(self, topic: str, raw: bytes) -> protocol.AnyCommand | None:
        """Parse and verify one command: None (counted, logged, reported) if it must be dropped."""
        try:
            data = protocol.load_command(raw)
            command = protocol.command_from(data, wire=True)
        except ProtocolError as exc:
            self.counters["malformed"] += 1
            self._reject("malformed", str(exc), topic=topic)
            return None
        if self.require_signatures:
            try:
                self.verifier.verify(data, topic)
            except SignatureError as exc:
                self._reject(exc.reason, exc.detail, topic=topic, cmd_id=command.cmd_id)
                return None
        # Expiry before memory: a command past its expires_at is `expired` whether or not its id is
        # still remembered (ids are kept only until then), so the answer never depends on a restart.
        now = self.now()
        if not isinstance(command, PlayCommand) and now > command.expires_at:
            self._reject(
                "expired",
                f"expired at {_iso(command.expires_at)}, received at {_iso(now)}",
                topic=topic,
                cmd_id=command.cmd_id,
            )
            return None
        if command.cmd_id in self._cmd_ids:
            # A QoS 1 redelivery, the same command on another of our topics, or a replay: same bytes.
            self.counters["duplicate"] += 1
            logger.debug("%s: command %s already handled", self.device_id, command.cmd_id)
            return None
        # The clock offset is sampled only from commands that are authentic, new and fresh (not past
        # their expires_at): a replayed old command, a refusal or a redelivery says nothing about
        # the time now, and after a restart would be the only sample (docs/protocol.md §8).
        if now <= command.expires_at:
            self._clock_samples.append((command.issued_at - now).total_seconds())
        self._cmd_ids[command.cmd_id] = command.expires_at
        while len(self._cmd_ids) > REMEMBERED_COMMANDS:
            self._cmd_ids.popitem(last=False)
        self._save_soon()
        return command

    def _reject(self, reason: str, detail: str, *, topic: str, cmd_id: str | None = None) -> None:
        self.counters["rejected"] += 1
        self.rejected[reason] += 1
        self.last_rejection = Rejection(
            reason=reason[:32], detail=detail[:200], cmd_id=cmd_id[:64] if cmd_id else None,
            topic=topic[:200], at=self.now(),
        )  # fmt: skip
        self._status_dirty.set()
        last = self._rejection_logged.get(reason, -REJECTION_LOG_INTERVAL_S)
        if time.monotonic() - last >= REJECTION_LOG_INTERVAL_S:
            self._rejection_logged[reason] = time.monotonic()
            logger.warning(
                "%s: dropped command on %s (%s: %s); %d %s so far",
                self.device_id, topic, reason, detail, self.rejected[reason], reason,
            )  # fmt: skip

    def _result(self, command: protocol.AnyCommand, *, ok: bool, error: str | None = None) -> None:
        self._results.append(
            CommandResult(
                cmd_id=command.cmd_id,
                type=command.type,
                ok=ok,
                error=error[:200] if error else None,
                at=self.now(),
            )  # fmt: skip
        )
        self._status_dirty.set()

    def _remember(self, store: OrderedDict[int, None], occurrence_id: int) -> None:
        store[occurrence_id] = None
        while len(store) > REMEMBERED_OCCURRENCES:
            store.popitem(last=False)

    def _on_play(self, command: PlayCommand, *, topic: str = "", raw: bytes = b"") -> None:
        occurrence = command.occurrence_id
        if occurrence in self._seen:
            self.counters["duplicate"] += 1
            logger.debug("%s: occurrence %s already handled", self.device_id, occurrence)
            return
        self._remember(self._seen, occurrence)
        if occurrence in self._stopped_early:
            self._report(occurrence, "skipped", error=STOPPED_BY_SERVER)
            return
        now = self.now()
        if now >= command.expires_at:
            self._report(
                occurrence,
                "skipped",
                error=f"expired at {_iso(command.expires_at)} before it was received at {_iso(now)}",
            )
            return
        # Kept on disk until final, so a restart (or a dead link) does not lose the airing.
        self._pending[occurrence] = (topic, raw, "")
        self.cache.pin(command.sha256)
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

    async def _run_play(self, command: PlayCommand, *, announce: bool = True) -> None:
        occurrence = command.occurrence_id
        try:
            if announce:
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
            delay = (command.start_at - self.now()).total_seconds()
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
            if occurrence in self.outcomes:
                self.cache.unpin(command.sha256)

    async def _play(self, command: PlayCommand, path: Path) -> None:
        occurrence = command.occurrence_id
        now = self.now()
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
            self._result(command, ok=False, error=f"busy: occurrence {self._slot.occurrence_id} is playing")
            return
        slot = _Slot(None, -1, asyncio.current_task())  # type: ignore[arg-type]
        self._slot = slot
        self._status_dirty.set()
        try:
            if self.behaviour == "fail":
                raise PlayerError(SIMULATED_FAILURE)
            await self.player.tone(command.duration_s, self.volume, self.cache.directory)
        except PlayerError as exc:
            self.fault = f"test tone: {exc}"
            logger.warning("%s: test tone failed: %s", self.device_id, exc)
            self._result(command, ok=False, error=str(exc))
        except asyncio.CancelledError:
            if slot.interrupted_by is None:
                raise
            self._result(command, ok=False, error=f"interrupted: {slot.interrupted_by}")
        else:
            self._result(command, ok=True)
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
            at=self.now(),
            seconds_played=round(seconds_played, 2) if seconds_played is not None else None,
            error=error[:500] if error else None,
        )
        self.reports.append(report)
        if state in FINAL_STATES:
            self.outcomes[occurrence_id] = report
            self._pending.pop(occurrence_id, None)
            if self.on_final is not None:
                self.on_final(report)
        elif occurrence_id in self._pending:
            topic, raw, _ = self._pending[occurrence_id]
            self._pending[occurrence_id] = (topic, raw, state)
        logger.debug("%s: occurrence %s %s %s", self.device_id, occurrence_id, state, error or "")
        self._outbox.append((protocol.device_topic(self.device_id, "report"), protocol.encode(report)))
        self._outbox_ready.set()
        self._save_soon()

    def _resend_reports(self, since: datetime) -> None:
        """Queue again every report made since `since` (server time, so corrected by our offset)."""
        offset = timedelta(seconds=self.clock_offset_s or 0.0)
        topic = protocol.device_topic(self.device_id, "report")
        queued = {payload for _, payload in self._outbox}
        again = [r for r in self.reports if r.at + offset >= since]
        for report in again:
            payload = protocol.encode(report)
            if payload not in queued:
                self._outbox.append((topic, payload))
        if again:
            self.counters["reports_resent"] += len(again)
            self._outbox_ready.set()
            self._save_soon()

    def final_states(self) -> list[tuple[int, str]]:
        """(occurrence id, final state) in the order they finished."""
        return [(occ, report.state) for occ, report in self.outcomes.items()]

    # ------------------------------------------------------------ state on disk

    def _save_soon(self) -> None:
        if self.state_file is None or self._save_handle is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._save_state()
            return
        self._save_handle = loop.call_later(STATE_SAVE_DELAY_S, self._save_state)

    def _save_state(self) -> None:
        """Write pending airings, queued reports, volume and handled ids (atomically)."""
        if self._save_handle is not None:
            self._save_handle.cancel()
            self._save_handle = None
        if self.state_file is None:
            return
        now = datetime.now(UTC)
        state = {
            "v": 1,
            "device_id": self.device_id,
            "volume": self.volume,
            "pending": [
                {"topic": topic, "command": raw.decode(), "state": last}
                for topic, raw, last in self._pending.values()
            ],
            "outbox": [[topic, payload.decode()] for topic, payload in self._outbox],
            "commands": {cid: _iso_ms(exp) for cid, exp in self._cmd_ids.items() if exp > now},
            "occurrences": list(self._seen)[-REMEMBERED_OCCURRENCES:],
        }
        try:
            self.state_file.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.state_file.with_name(self.state_file.name + ".tmp")
            tmp.write_text(json.dumps(state, ensure_ascii=False))
            os.replace(tmp, self.state_file)
        except OSError as exc:
            logger.error("%s: cannot write state file %s: %s", self.device_id, self.state_file, exc)

    def _load_state(self) -> None:
        """Restore what a previous run left: queued reports first, then the pending airings."""
        if self.state_file is None or not self.state_file.exists():
            return
        try:
            state = json.loads(self.state_file.read_text())
            if state.get("device_id") != self.device_id:
                raise ValueError(f"state file belongs to {state.get('device_id')!r}")
            volume = int(state.get("volume", self.volume))
            self.volume = volume if 0 <= volume <= 100 else self.volume
            for topic, payload in state.get("outbox", []):
                self._outbox.append((str(topic), str(payload).encode()))
            for cid, expires in state.get("commands", {}).items():
                self._cmd_ids[str(cid)] = datetime.fromisoformat(str(expires).replace("Z", "+00:00"))
            for occurrence in state.get("occurrences", []):
                self._remember(self._seen, int(occurrence))
            pending = list(state.get("pending", []))
        except (OSError, ValueError, TypeError, AttributeError) as exc:
            logger.error("%s: ignoring unreadable state file %s: %s", self.device_id, self.state_file, exc)
            return
        if self._outbox:
            self._outbox_ready.set()
        for item in pending:
            raw = str(item.get("command", "")).encode()
            self._restore(str(item.get("topic", "")), raw, item.get("state"))
        logger.info(
            "%s: restored %d pending airings and %d queued reports",
            self.device_id, len(self._pending), len(self._outbox),
        )  # fmt: skip

    def _restore(self, topic: str, raw: bytes, last_state: object) -> None:
        # The command is checked again: a state file is no more trusted than the broker.
        try:
            data = protocol.load_command(raw)
            command = protocol.command_from(data, wire=True)
            if self.require_signatures:
                self.verifier.verify(data, topic)
        except (ProtocolError, SignatureError) as exc:
            logger.error("%s: dropped a pending airing from the state file: %s", self.device_id, exc)
            return
        if not isinstance(command, PlayCommand) or command.occurrence_id in self.outcomes:
            return
        occurrence = command.occurrence_id
        self._remember(self._seen, occurrence)
        self._pending[occurrence] = (topic, raw, str(last_state or ""))
        if last_state == "playing":
            # It was on air when the program stopped: that airing is lost, say so.
            self._report(occurrence, "failed", error=INTERRUPTED_BY_RESTART)
            return
        self.cache.pin(command.sha256)
        announce = last_state not in ("received",)
        task = asyncio.create_task(
            self._run_play(command, announce=announce), name=f"{self.device_id}:{occurrence}"
        )
        self._tasks[occurrence] = task
