"""Per-speaker accounts enforced by a real Mosquitto with the password and ACL files cunxiang generates.

A speaker's password lets it read only its own area chain's and device's command topics and write
only its own report/status/online topics: it cannot speak for another speaker, read another's
commands, forge commands, or take over another's session."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import aiomqtt
import pytest

from api import migrate
from core import regions
from core.db import make_engine, make_session_factory, session_scope
from cunxiang_agent import speaker as speaker_module
from cunxiang_agent.speaker import Speaker
from cunxiang_shared import protocol
from cunxiang_shared.broker import BrokerAddress
from devices import credentials
from devices import service as device_service
from tests.devices.test_agent import SIGNER, VILLAGE, play, signed
from tests.fixtures_mqtt import AudioServer, MosquittoProcess

pytestmark = pytest.mark.mosquitto

OTHER_VILLAGE = "341225100202"
ADMIN = ("cunxiang-server", "server-password")
WAIT_S = 8.0


@pytest.fixture(autouse=True)
def fast_timers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(speaker_module, "RECONNECT_MIN_S", 0.1)
    monkeypatch.setattr(speaker_module, "RECONNECT_MAX_S", 0.3)


@pytest.fixture
def secured(tmp_path: Path, sqlite_url: str):
    """Mosquitto with generated files; yields (port, {device: password})."""
    migrate.upgrade(sqlite_url)
    engine = make_engine(sqlite_url)
    passwords = {}
    with session_scope(make_session_factory(engine)) as s:
        regions.load_demo(session=s)
        for device, area in (("acl-a", VILLAGE), ("acl-b", OTHER_VILLAGE)):
            device_service.register(session=s, device_id=device, name=device, area_code=area)
            passwords[device] = credentials.issue(session=s, device_id=device)[1]
        admin = credentials.Account(ADMIN[0], credentials.hash_password(ADMIN[1]))
        (tmp_path / "passwd").write_text(credentials.password_file(session=s, admins=[admin]))
        (tmp_path / "acl").write_text(credentials.acl_file(session=s, admins=[ADMIN[0]]))
    engine.dispose()
    config = (
        "allow_anonymous false\n"
        f"password_file {tmp_path / 'passwd'}\n"
        f"acl_file {tmp_path / 'acl'}\n"
        "use_username_as_clientid true\n"
    )
    broker = MosquittoProcess(tmp_path, config=config).start()
    try:
        yield broker.port, passwords
    finally:
        broker.stop()


@contextlib.asynccontextmanager
async def client(
    port: int, user: str | None, password: str | None, name: str
) -> AsyncIterator[aiomqtt.Client]:
    async with aiomqtt.Client(
        "127.0.0.1", port, username=user, password=password, identifier=name,
        protocol=aiomqtt.ProtocolVersion.V311,
    ) as c:  # fmt: skip
        yield c


async def collect(c: aiomqtt.Client, into: list[tuple[str, bytes]]) -> None:
    async for message in c.messages:
        into.append((str(message.topic), bytes(message.payload)))  # type: ignore[arg-type]


def test_generated_files_match_mosquitto_passwd(tmp_path: Path) -> None:
    import subprocess

    hashed = credentials.hash_password("secret")
    (tmp_path / "pw").write_text(f"u:{hashed}\n")
    # mosquitto_passwd -U would rehash plain text; instead check it verifies the other way round:
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(tmp_path / "ref"), "u", "secret"], check=True)
    reference = (tmp_path / "ref").read_text().strip().split(":", 1)[1]
    assert credentials.verify_password("secret", reference)
    assert not credentials.verify_password("wrong", reference)
    assert credentials.verify_password("secret", hashed)


def test_a_speaker_can_only_use_its_own_topics(secured, audio_server: AudioServer, tmp_path: Path) -> None:
    port, passwords = secured

    async def scenario() -> None:
        speakers = {
            device: Speaker(
                device,
                area,
                broker=BrokerAddress("127.0.0.1", port, device, passwords[device]),
                cache=tmp_path / "cache",
                trusted_keys=[SIGNER.public_key],
            )  # fmt: skip
            for device, area in (("acl-a", VILLAGE), ("acl-b", OTHER_VILLAGE))
        }
        tasks = [asyncio.create_task(s.run()) for s in speakers.values()]
        heard: list[tuple[str, bytes]] = []
        stolen: list[tuple[str, bytes]] = []
        try:
            async with asyncio.timeout(WAIT_S):
                await asyncio.gather(*(s.ready.wait() for s in speakers.values()))
            async with (
                client(port, *ADMIN, "server") as server,
                # with a's password, claiming b's client id (it gets a's: that kicks a, never b)
                client(port, "acl-a", passwords["acl-a"], "acl-b") as thief,
            ):
                await server.subscribe(f"{protocol.PREFIX}/dev/+/+", qos=1)
                listener = asyncio.create_task(collect(server, heard))
                # a's account reads b's command topics and everything else it can think of
                granted = await thief.subscribe(
                    [
                        (protocol.device_topic("acl-b", "cmd"), 1),
                        (protocol.area_command_topic(OTHER_VILLAGE), 1),
                        (f"{protocol.PREFIX}/#", 1),
                    ]
                )
                sniffer = asyncio.create_task(collect(thief, stolen))
                # ...and writes as b, and writes commands
                fake = protocol.Report(device_id="acl-b", occurrence_id=9, state="played", seconds_played=1)
                await thief.publish(protocol.device_topic("acl-b", "report"), protocol.encode(fake), qos=1)
                await thief.publish(
                    protocol.device_topic("acl-b", "online"), protocol.OFFLINE, qos=1, retain=True
                )
                dev_b = protocol.device_topic("acl-b", "cmd")
                await thief.publish(dev_b, protocol.encode(protocol.SetVolumeCommand(volume=0)), qos=1)
                # a writing its own report is allowed (the control case)
                own = protocol.Report(device_id="acl-a", occurrence_id=8, state="played", seconds_played=1)
                await thief.publish(protocol.device_topic("acl-a", "report"), protocol.encode(own), qos=1)
                # the server sends b a real command, and a real play to b's village
                await server.publish(dev_b, signed(protocol.SetVolumeCommand(volume=33), dev_b), qos=1)
                village_b = protocol.area_command_topic(OTHER_VILLAGE)
                await server.publish(village_b, signed(play(audio_server, 501), village_b), qos=1)
                async with asyncio.timeout(WAIT_S):
                    while speakers["acl-b"].volume != 33 or 501 not in speakers["acl-b"].outcomes:  # noqa: ASYNC110
                        await asyncio.sleep(0.05)
                    while not any(t == protocol.device_topic("acl-a", "report") for t, _ in heard):  # noqa: ASYNC110
                        await asyncio.sleep(0.05)
                await asyncio.sleep(0.3)
                listener.cancel()
                sniffer.cancel()

            # Mosquitto 2.0 grants such a SUBACK for MQTT 3.1.1 but never delivers on those topics.
            assert len(granted) == 3
            assert stolen == []
            reports_b = [p for t, p in heard if t == protocol.device_topic("acl-b", "report")]
            assert all(protocol.parse_report(p).occurrence_id == 501 for p in reports_b) and reports_b
            assert (protocol.device_topic("acl-b", "online"), protocol.OFFLINE) not in heard
            assert speakers["acl-b"].counters["messages"] == 2  # only the server's two commands
            # b was never kicked off by a client claiming its id (client id = user name)
            assert speakers["acl-b"].counters["sessions_ready"] == 1
        finally:
            await speaker_module.cancel_and_wait(tasks)

    asyncio.run(scenario())


def test_wrong_or_missing_password_is_refused(secured) -> None:
    port, passwords = secured

    async def scenario() -> None:
        for user, password in (
            ("acl-a", "guess"),
            (None, None),
            ("acl-a", passwords["acl-b"]),
            ("nobody", "x"),
        ):
            with pytest.raises(aiomqtt.MqttError):
                async with client(port, user, password, f"try-{user}"):
                    pass
        async with client(port, "acl-a", passwords["acl-a"], "acl-a"):
            pass

    asyncio.run(scenario())
