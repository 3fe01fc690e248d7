"""The speaker agent against real brokers (amqtt and Mosquitto), real HTTP downloads and real ffmpeg audio."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiomqtt
import pytest
from pydantic import BaseModel

from cunxiang_agent import speaker as speaker_module
from cunxiang_agent.cache import AudioCache
from cunxiang_agent.players import CommandPlayer, Player
from cunxiang_agent.speaker import Speaker
from cunxiang_shared import protocol
from cunxiang_shared.broker import parse_broker_url
from cunxiang_shared.protocol import PlayCommand, Report, Status
from cunxiang_shared.signing import Signer
from tests.fixtures_mqtt import AudioServer, BrokerThread, MosquittoProcess, clear_retained, free_port

COUNTY = "341225000000"
TOWNSHIP = "341225100000"
VILLAGE = "341225100201"
OTHER_TOWNSHIP = "341225101000"
REPO = Path(__file__).resolve().parents[2]
WAIT_S = 8.0
# The "server" key of these tests: every speaker under test trusts it.
SIGNER = Signer.generate()


def signed(command: BaseModel, topic: str, signer: Signer = SIGNER) -> bytes:
    """The command as the server would publish it on this topic."""
    return json.dumps(signer.sign(json.loads(protocol.encode(command)), [topic])).encode()


@pytest.fixture(autouse=True)
def fast_timers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Short heartbeat and reconnect timers so each test takes well under a second or two."""
    monkeypatch.setattr(speaker_module, "HEARTBEAT_INTERVAL_S", 0.3)
    monkeypatch.setattr(speaker_module, "RECONNECT_MIN_S", 0.1)
    monkeypatch.setattr(speaker_module, "RECONNECT_MAX_S", 0.5)


def new_id() -> str:
    """A device id no other test uses (the brokers are shared by the session)."""
    return f"t-{uuid.uuid4().hex[:12]}"


def play(audio: AudioServer, occurrence_id: int, **overrides: object) -> PlayCommand:
    """A valid play command for the test MP3, starting now."""
    now = datetime.now(UTC)
    fields: dict[str, object] = {
        "occurrence_id": occurrence_id,
        "broadcast_id": 7,
        "title": "防汛通知",
        "audio_url": audio.url,
        "sha256": audio.sha256,
        "size_bytes": audio.size_bytes,
        "duration_s": 0.2,
        "start_at": now,
        "expires_at": now + timedelta(seconds=30),
        "priority": 10,
    }
    fields.update(overrides)
    return PlayCommand.model_validate(fields)


class Harness:
    """A speaker under test plus a control client that sends commands and records what the speaker says."""

    def __init__(self, speaker: Speaker, control: aiomqtt.Client) -> None:
        self.speaker = speaker
        self.control = control
        self.reports: list[Report] = []
        self.statuses: list[Status] = []
        self.online: list[bytes] = []
        self._changed = asyncio.Event()

    async def collect(self) -> None:
        """Record every report, status and online flag of the speaker."""
        async for message in self.control.messages:
            leaf = str(message.topic).rsplit("/", 1)[-1]
            payload = bytes(message.payload)  # type: ignore[arg-type]
            if leaf == "report":
                self.reports.append(protocol.parse_report(payload))
            elif leaf == "status":
                self.statuses.append(protocol.parse_status(payload))
            elif leaf == "online":
                self.online.append(payload)
            self._changed.set()

    async def send(self, topic: str, command: BaseModel | bytes) -> None:
        """Publish a command signed for this topic (or raw bytes, as they are) at QoS 1."""
        payload = command if isinstance(command, bytes) else signed(command, topic)
        await self.control.publish(topic, payload, qos=1)

    async def until(self, predicate: object, limit_s: float = WAIT_S) -> None:
        """Wait until predicate() is true for what was recorded."""
        async with asyncio.timeout(limit_s):
            while not predicate():  # type: ignore[operator]
                self._changed.clear()
                await self._changed.wait()

    def states(self, occurrence_id: int) -> list[str]:
        """States reported for one occurrence, in arrival order."""
        return [r.state for r in self.reports if r.occurrence_id == occurrence_id]

    def report(self, occurrence_id: int, state: str) -> Report:
        """The report with this state for this occurrence."""
        return next(r for r in self.reports if r.occurrence_id == occurrence_id and r.state == state)

    async def final(self, occurrence_id: int, limit_s: float = WAIT_S) -> list[str]:
        """Wait for the occurrence's final report and return all its states."""
        await self.until(lambda: set(self.states(occurrence_id)) & speaker_module.FINAL_STATES, limit_s)
        return self.states(occurrence_id)


async def eventually(predicate: Callable[[], bool]) -> None:
    """Poll another component's state until predicate() holds (fails after WAIT_S)."""
    async with asyncio.timeout(WAIT_S):
        while not predicate():  # noqa: ASYNC110 - nothing to await on but the state itself
            await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def running(
    broker_url: str,
    cache_dir: Path,
    *,
    area: str = VILLAGE,
    behaviour: str = "ok",
    player: Player | None = None,
    state_file: Path | None = None,
    device_id: str | None = None,
) -> AsyncIterator[Harness]:
    """Run one speaker and a control client on the broker for the duration of the block."""
    device_id = device_id or new_id()
    cache = AudioCache(cache_dir)
    speaker = Speaker(
        device_id, area, broker=broker_url, cache=cache, player=player, behaviour=behaviour,  # type: ignore[arg-type]
        trusted_keys=[SIGNER.public_key], state_file=state_file,
    )  # fmt: skip
    address = parse_broker_url(broker_url)
    control = aiomqtt.Client(
        address.host, address.port, identifier=f"ctl-{device_id}", protocol=aiomqtt.ProtocolVersion.V311
    )
    async with control:
        await control.subscribe(f"{protocol.PREFIX}/dev/{device_id}/+", qos=1)
        harness = Harness(speaker, control)
        collector = asyncio.create_task(harness.collect())
        task = asyncio.create_task(speaker.run())
        try:
            async with asyncio.timeout(WAIT_S):
                await speaker.ready.wait()
            yield harness
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            collector.cancel()
            await asyncio.gather(collector, return_exceptions=True)
            await cache.aclose()
            await clear_retained(broker_url, [device_id])


def test_plays_commands_from_each_level_of_its_area_chain(
    broker_url: str, audio_server: AudioServer, tmp_path: Path
) -> None:
    async def scenario() -> None:
        async with running(broker_url, tmp_path) as h:
            for occurrence, area in ((101, COUNTY), (102, TOWNSHIP), (103, VILLAGE)):
                await h.send(protocol.area_command_topic(area), play(audio_server, occurrence))
                assert await h.final(occurrence) == ["received", "playing", "played"]
                assert h.report(occurrence, "played").seconds_played == pytest.approx(0.2, abs=0.15)
                assert h.report(occurrence, "played").device_id == h.speaker.device_id
            await h.send(protocol.device_topic(h.speaker.device_id, "cmd"), play(audio_server, 104))
            assert await h.final(104) == ["received", "playing", "played"]
            # The file was downloaded once and then served from the cache.
            assert h.speaker.cache.downloads == 1
            await h.until(lambda: h.online and h.statuses)
            assert h.online[-1] == b"1"
            assert h.statuses[-1].firmware.startswith("cunxiang-agent")

    asyncio.run(scenario())


def test_waits_for_start_at(broker_url: str, audio_server: AudioServer, tmp_path: Path) -> None:
    async def scenario() -> None:
        async with running(broker_url, tmp_path) as h:
            start = datetime.now(UTC) + timedelta(seconds=0.8)
            start = start.replace(microsecond=start.microsecond // 1000 * 1000)  # the wire carries ms
            await h.send(protocol.area_command_topic(VILLAGE), play(audio_server, 5, start_at=start))
            await h.final(5)
            assert h.report(5, "received").at < start <= h.report(5, "playing").at

    asyncio.run(scenario())


def test_duplicate_and_fanned_out_command_is_handled_once(
    broker_url: str, audio_server: AudioServer, tmp_path: Path
) -> None:
    async def scenario() -> None:
        async with running(broker_url, tmp_path) as h:
            command = play(audio_server, 11, start_at=datetime.now(UTC) + timedelta(seconds=0.3))
            await h.send(protocol.area_command_topic(VILLAGE), command)
            await h.send(protocol.area_command_topic(VILLAGE), command)
            await h.send(protocol.area_command_topic(COUNTY), play(audio_server, 11))
            assert await h.final(11) == ["received", "playing", "played"]
            await h.send(protocol.area_command_topic(VILLAGE), play(audio_server, 12))
            await h.final(12)
            assert h.states(11) == ["received", "playing", "played"]
            assert h.speaker.counters["duplicate"] == 2

    asyncio.run(scenario())


def test_download_problems_are_reported_as_failed(
    broker_url: str, audio_server: AudioServer, tmp_path: Path
) -> None:
    async def scenario() -> None:
        async with running(broker_url, tmp_path) as h:
            topic = protocol.area_command_topic(VILLAGE)
            await h.send(topic, play(audio_server, 21, sha256="0" * 64))
            assert await h.final(21) == ["received", "failed"]
            assert "sha256 mismatch" in (h.report(21, "failed").error or "")
            await h.send(topic, play(audio_server, 22, audio_url=f"{audio_server.base_url}/missing.mp3"))
            assert await h.final(22) == ["received", "failed"]
            assert "HTTP 404" in (h.report(22, "failed").error or "")
            assert not list(h.speaker.cache.directory.glob("*.part"))

    asyncio.run(scenario())


def test_expired_command_is_skipped(broker_url: str, audio_server: AudioServer, tmp_path: Path) -> None:
    async def scenario() -> None:
        async with running(broker_url, tmp_path) as h:
            past = datetime.now(UTC) - timedelta(minutes=5)
            late = play(audio_server, 31, start_at=past, expires_at=past + timedelta(minutes=1))
            await h.send(protocol.area_command_topic(VILLAGE), late)
            assert await h.final(31) == ["skipped"]
            assert "expired" in (h.report(31, "skipped").error or "")

    asyncio.run(scenario())


def test_other_townships_commands_are_not_received(
    broker_url: str, audio_server: AudioServer, tmp_path: Path
) -> None:
    async def scenario() -> None:
        async with running(broker_url, tmp_path) as h:
            await h.send(protocol.area_command_topic(OTHER_TOWNSHIP), play(audio_server, 41))
            await h.send(
                protocol.area_command_topic("341225100202"), play(audio_server, 42)
            )  # a sibling village
            await h.send(protocol.area_command_topic(VILLAGE), play(audio_server, 43))
            await h.final(43)
            assert h.states(41) == [] and h.states(42) == []
            assert h.speaker.counters["messages"] == 1

    asyncio.run(scenario())


def test_malformed_commands_are_counted_and_the_next_one_plays(
    broker_url: str, audio_server: AudioServer, tmp_path: Path
) -> None:
    async def scenario() -> None:
        async with running(broker_url, tmp_path) as h:
            topic = protocol.area_command_topic(VILLAGE)
            await h.send(topic, b"\xff not json")
            await h.send(topic, b'{"type": "play", "occurrence_id": "many", "broadcast_id": 1}')
            await h.send(topic, b'{"type": "explode"}')
            await h.send(topic, b"[" + b"1," * protocol.MAX_COMMAND_BYTES + b"1]")
            await h.send(topic, play(audio_server, 51))
            assert await h.final(51) == ["received", "playing", "played"]
            assert h.speaker.counters["malformed"] == 4

    asyncio.run(scenario())


def test_fail_behaviour_reports_failed(broker_url: str, audio_server: AudioServer, tmp_path: Path) -> None:
    async def scenario() -> None:
        async with running(broker_url, tmp_path, behaviour="fail") as h:
            await h.send(protocol.area_command_topic(TOWNSHIP), play(audio_server, 61))
            assert await h.final(61) == ["received", "playing", "failed"]
            assert h.report(61, "failed").error == "simulated playback failure"

    asyncio.run(scenario())


def test_silent_behaviour_never_reports(broker_url: str, audio_server: AudioServer, tmp_path: Path) -> None:
    """A hung program: online, but no report, no status, no answer to commands."""

    async def scenario() -> None:
        async with running(broker_url, tmp_path, behaviour="silent") as h:
            await h.send(protocol.area_command_topic(VILLAGE), play(audio_server, 71))
            await h.send(protocol.area_command_topic(VILLAGE), protocol.SyncCommand())
            await asyncio.sleep(1.0)  # h.until waits for what the speaker publishes: here, nothing
            assert h.speaker.counters["ignored"] == 2
            assert h.online and h.online[-1] == b"1"
            assert h.reports == [] and h.statuses == []
            assert h.speaker.outcomes == {}

    asyncio.run(scenario())


def test_stop_skips_pending_and_ends_playing(
    broker_url: str, audio_server: AudioServer, tmp_path: Path
) -> None:
    async def scenario() -> None:
        async with running(broker_url, tmp_path) as h:
            topic = protocol.area_command_topic(VILLAGE)
            later = datetime.now(UTC) + timedelta(seconds=20)
            await h.send(
                topic, play(audio_server, 81, start_at=later, expires_at=later + timedelta(seconds=5))
            )
            await h.until(lambda: h.states(81) == ["received"])
            await h.send(topic, protocol.StopCommand(occurrence_id=81))
            assert await h.final(81) == ["received", "skipped"]
            assert h.report(81, "skipped").error == "stopped by server"

            await h.send(topic, play(audio_server, 82, duration_s=30))
            await h.until(lambda: "playing" in h.states(82))
            await h.send(topic, protocol.StopCommand())  # whatever plays
            assert await h.final(82) == ["received", "playing", "failed"]
            assert h.report(82, "failed").error == "stopped by server"
            assert (h.report(82, "failed").seconds_played or 0) < 5

            await h.send(topic, protocol.StopCommand(occurrence_id=83))  # overtakes its play command
            await h.send(topic, play(audio_server, 83))
            assert await h.final(83) == ["skipped"]

    asyncio.run(scenario())


def test_higher_priority_preempts(broker_url: str, audio_server: AudioServer, tmp_path: Path) -> None:
    async def scenario() -> None:
        async with running(broker_url, tmp_path) as h:
            topic = protocol.area_command_topic(VILLAGE)
            await h.send(topic, play(audio_server, 91, duration_s=30, priority=10))
            await h.until(lambda: "playing" in h.states(91))
            await h.send(topic, play(audio_server, 92, duration_s=0.2, priority=90))
            assert await h.final(91) == ["received", "playing", "preempted"]
            assert h.report(91, "preempted").error == "preempted by occurrence 92"
            assert await h.final(92) == ["received", "playing", "played"]

    asyncio.run(scenario())


def test_volume_sync_heartbeat_and_test_tone(broker_url: str, tmp_path: Path) -> None:
    async def scenario() -> None:
        async with running(broker_url, tmp_path) as h:
            cmd = protocol.device_topic(h.speaker.device_id, "cmd")
            await h.send(cmd, protocol.SetVolumeCommand(volume=35))
            await h.until(lambda: h.statuses and h.statuses[-1].volume == 35)
            await h.send(cmd, protocol.TestToneCommand(duration_s=0.5))
            await h.until(lambda: any(s.state == "playing" and s.occurrence_id is None for s in h.statuses))
            sync = protocol.SyncCommand()
            await h.send(cmd, sync)
            await h.until(
                lambda: h.statuses[-1].last_cmd_id == sync.cmd_id and h.statuses[-1].state == "idle"
            )
            count = len(h.statuses)
            await h.until(lambda: len(h.statuses) >= count + 2)  # heartbeats keep coming
            assert h.reports == []

    asyncio.run(scenario())


def test_command_player_runs_a_real_program(
    broker_url: str, audio_server: AudioServer, tmp_path: Path
) -> None:
    async def scenario() -> None:
        topic = protocol.area_command_topic(VILLAGE)
        # ffprobe decodes the downloaded MP3 (the path is appended) and exits 0.
        async with running(broker_url, tmp_path / "a", player=CommandPlayer("ffprobe -v error")) as h:
            await h.send(topic, play(audio_server, 111))
            assert await h.final(111) == ["received", "playing", "played"]
            await h.send(
                protocol.device_topic(h.speaker.device_id, "cmd"), protocol.TestToneCommand(duration_s=0.2)
            )
            await h.until(
                lambda: (
                    list(h.speaker.cache.directory.glob("tone-*.wav")) and h.speaker.status().state == "idle"
                )
            )
            assert h.speaker.fault is None
        broken = CommandPlayer("sh -c 'echo cannot open audio device >&2; exit 3' player")
        async with running(broker_url, tmp_path / "b", player=broken) as h:
            await h.send(topic, play(audio_server, 112))
            assert await h.final(112) == ["received", "playing", "failed"]
            assert h.report(112, "failed").error == "player exited with code 3: cannot open audio device"

    asyncio.run(scenario())


def test_last_will_marks_a_killed_agent_offline(broker_url: str, tmp_path: Path) -> None:
    device_id = new_id()
    online_topic = protocol.device_topic(device_id, "online")
    address = parse_broker_url(broker_url)
    argv = [
        sys.executable, "-m", "cunxiang_agent.cli", "--device-id", device_id, "--area", VILLAGE,
        "--broker", broker_url, "--player", "null", "--cache-dir", str(tmp_path), "--log-level", "WARNING",
        "--insecure-accept-unsigned",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    agent = subprocess.Popen(argv, cwd=REPO, env=env)

    async def scenario() -> list[bytes]:
        seen: list[bytes] = []
        async with aiomqtt.Client(
            address.host, address.port, protocol=aiomqtt.ProtocolVersion.V311
        ) as watcher:
            await watcher.subscribe(online_topic, qos=1)
            async with asyncio.timeout(WAIT_S):
                async for message in watcher.messages:
                    seen.append(bytes(message.payload))  # type: ignore[arg-type]
                    if seen[-1] == protocol.ONLINE:
                        agent.send_signal(signal.SIGKILL)  # no DISCONNECT: the broker must publish the will
                    elif seen[-1] == protocol.OFFLINE:
                        return seen
        return seen

    try:
        assert asyncio.run(scenario()) == [protocol.ONLINE, protocol.OFFLINE]
    finally:
        agent.kill()
        agent.wait()
        asyncio.run(clear_retained(broker_url, [device_id]))


def test_cli_rejects_bad_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    from cunxiang_agent.cli import main

    assert main(["--device-id", "bad id!", "--area", "3412", "--broker", "http://x"]) == 2
    err = capsys.readouterr().err
    assert "--device-id" in err and "12-digit" in err and "mqtt://" in err and "--server-keys" in err


@pytest.mark.parametrize("kind", ["embedded", pytest.param("mosquitto", marks=pytest.mark.mosquitto)])
def test_reconnects_after_the_broker_restarts(kind: str, audio_server: AudioServer, tmp_path: Path) -> None:
    port = free_port()

    def start() -> BrokerThread | MosquittoProcess:
        broker = BrokerThread(port=port) if kind == "embedded" else MosquittoProcess(tmp_path, port=port)
        return broker.start()

    broker = start()
    url = f"mqtt://127.0.0.1:{port}"

    async def scenario() -> None:
        nonlocal broker
        speaker = Speaker(
            new_id(), VILLAGE, broker=url, cache=tmp_path / "cache", trusted_keys=[SIGNER.public_key]
        )
        task = asyncio.create_task(speaker.run())
        try:
            async with asyncio.timeout(WAIT_S):
                await speaker.ready.wait()
            await asyncio.to_thread(broker.stop)
            await eventually(lambda: not speaker.ready.is_set())
            await asyncio.sleep(0.5)  # a few refused attempts while the broker is down
            broker = await asyncio.to_thread(start)
            async with asyncio.timeout(WAIT_S):
                await speaker.ready.wait()
            async with aiomqtt.Client("127.0.0.1", port, protocol=aiomqtt.ProtocolVersion.V311) as server:
                topic = protocol.area_command_topic(VILLAGE)
                await server.publish(topic, signed(play(audio_server, 121), topic), qos=1)
            await eventually(lambda: 121 in speaker.outcomes)
            assert speaker.outcomes[121].state == "played"
            assert speaker.counters["sessions_ready"] == 2
        finally:
            await speaker_module.cancel_and_wait([task])
        await clear_retained(url, [speaker.device_id])

    try:
        asyncio.run(scenario())
    finally:
        broker.stop()
