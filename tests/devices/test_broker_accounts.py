"""The embedded broker with accounts: only the server account and speakers with an MQTT password get
in, each speaker only on its own topics, and nothing an outsider or another speaker publishes
becomes a delivery state or a reach figure (checked through the real ingestion path)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator

import aiomqtt
import pytest
from sqlalchemy import select

from core.db import session_scope
from core.models import Region, RegionLevel
from cunxiang_shared import protocol
from devices import broker as broker_module
from devices import credentials
from devices import service as device_service
from devices.broker import (
    SERVER_USERNAME,
    Accounts,
    EmbeddedBroker,
    OpenBrokerRefused,
    start_embedded_broker,
)
from devices.ingest import ReportIngestor
from devices.models import Delivery, Device
from devices.transport import MqttLink
from reports.reach import broadcast_reach
from tests.fixtures_mqtt import free_port

OCC = 77
VILLAGE = "341225100201"
SERVER_PASSWORD = "server-pass"
# Seconds a message that must not arrive is given to show up anyway.
QUIET_WAIT_S = 0.5


class _Running:
    def __init__(self, accounts: Accounts | None, host: str = "127.0.0.1") -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.port = free_port()
        self.broker: EmbeddedBroker = asyncio.run_coroutine_threadsafe(
            start_embedded_broker(host, self.port, accounts=accounts), self.loop
        ).result(10)

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.broker.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


@pytest.fixture
def secured(session_factory) -> Iterator[tuple[_Running, dict[str, str], ReportIngestor]]:
    passwords = {}
    with session_scope(session_factory) as s:
        s.add(Region(code=VILLAGE, name="张庄村", level=RegionLevel.village, population=500))
        s.flush()
        for dev in ("ba-a", "ba-b"):
            device_service.register(session=s, device_id=dev, name=dev, area_code=VILLAGE)
            passwords[dev] = credentials.issue(session=s, device_id=dev)[1]
        devices = s.scalars(select(Device)).all()
        device_service.snapshot_deliveries(session=s, occurrence_id=OCC, devices=devices)
    accounts = Accounts(session_factory, {SERVER_USERNAME: credentials.hash_password(SERVER_PASSWORD)})
    running = _Running(accounts)
    link = MqttLink(running.broker.url_for(SERVER_USERNAME, SERVER_PASSWORD), client_id="ba-server")
    link.connect()
    ingestor = ReportIngestor(link=link, session_factory=session_factory)
    ingestor.start()
    try:
        yield running, passwords, ingestor
    finally:
        ingestor.stop()
        link.close()
        running.stop()


def _client(port: int, user: str | None, password: str | None, name: str) -> aiomqtt.Client:
    return aiomqtt.Client(
        "127.0.0.1", port, username=user, password=password, identifier=name,
        protocol=aiomqtt.ProtocolVersion.V311, timeout=3,
    )  # fmt: skip


def _report(device: str, state: str) -> bytes:
    report = protocol.Report(device_id=device, occurrence_id=OCC, state=state, seconds_played=1)
    return protocol.encode(report)


def _topic(device: str) -> str:
    return protocol.device_topic(device, "report")


def test_outsiders_and_other_speakers_change_no_figure(secured, session_factory) -> None:
    running, passwords, ingestor = secured
    port = running.broker.port

    async def scenario() -> None:
        refused = [
            (None, None, "ba-b"),  # anonymous, claiming b's client id
            ("ba-b", "guess", "ba-b"),
            ("ba-a", passwords["ba-b"], "ba-a"),
            ("nobody", "x", "nobody"),
            ("ba-a", passwords["ba-a"], "ba-b"),  # a's password under b's client id
            (SERVER_USERNAME, "wrong", "srv"),
        ]
        async with (
            _client(port, "ba-b", passwords["ba-b"], "ba-b") as speaker_b,
            _client(port, SERVER_USERNAME, SERVER_PASSWORD, "ba-server-2") as server,
        ):
            b_cmd = protocol.device_topic("ba-b", "cmd")
            await speaker_b.subscribe(b_cmd, qos=1)
            for user, password, name in refused:
                with pytest.raises(aiomqtt.MqttError):
                    async with _client(port, user, password, name) as c:
                        await c.publish(_topic("ba-b"), _report("ba-b", "failed"), qos=1)
            async with _client(port, "ba-a", passwords["ba-a"], "ba-a") as speaker_a:
                # a speaks for b on b's topic (payload consistent), and writes a command to b
                await speaker_a.publish(_topic("ba-b"), _report("ba-b", "failed"), qos=1)
                await speaker_a.publish(protocol.device_topic("ba-b", "online"), protocol.OFFLINE, qos=1)
                # its own report counts
                await speaker_a.publish(_topic("ba-a"), _report("ba-a", "played"), qos=1)
            # b's session was touched by none of the refused connections claiming its client id: it
            # still gets its commands, and its own report goes through
            await server.publish(b_cmd, b"{}", qos=1)
            async with asyncio.timeout(5):
                message = await anext(speaker_b.messages)
            assert str(message.topic) == b_cmd
            await speaker_b.publish(_topic("ba-b"), _report("ba-b", "received"), qos=1)

    asyncio.run(scenario())
    deadline = time.monotonic() + 5
    while ingestor.counts["applied"] < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(QUIET_WAIT_S)
    assert ingestor.flush()
    assert ingestor.counts["applied"] == 2
    with session_factory() as s:
        states = {d.device_id: d.state for d in s.scalars(select(Delivery)).all()}
        reach = broadcast_reach(session=s, occurrence_ids=[OCC])
    assert states == {"ba-a": "played", "ba-b": "received"}
    assert (reach["targeted"], reach["played"], reach["failed"]) == (2, 1, 0)
    # only the two genuine reports reached the server: neither the refused clients' nor a's forged
    # report and online flag for b
    assert ingestor.counts["received"] == 2


def test_a_speaker_reads_only_its_own_command_topics(secured) -> None:
    running, passwords, _ = secured
    port = running.broker.port

    async def scenario() -> list[str]:
        heard: list[str] = []
        async with (
            _client(port, SERVER_USERNAME, SERVER_PASSWORD, "ba-cmd-server") as server,
            _client(port, "ba-a", passwords["ba-a"], "ba-a") as speaker_a,
        ):
            own = protocol.device_topic("ba-a", "cmd")
            granted = await speaker_a.subscribe(
                [(own, 1), (protocol.device_topic("ba-b", "cmd"), 1), (f"{protocol.PREFIX}/#", 1)]
            )
            assert [int(g.value) if hasattr(g, "value") else int(g) for g in granted][1:] == [0x80, 0x80]

            async def collect() -> None:
                async for message in speaker_a.messages:
                    heard.append(str(message.topic))

            task = asyncio.create_task(collect())
            await server.publish(protocol.device_topic("ba-b", "cmd"), b"{}", qos=1)
            await server.publish(own, b"{}", qos=1)
            async with asyncio.timeout(5):
                while not heard:  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
            await asyncio.sleep(QUIET_WAIT_S)
            task.cancel()
        return heard

    assert asyncio.run(scenario()) == [protocol.device_topic("ba-a", "cmd")]


def test_an_open_broker_stays_on_loopback() -> None:
    async def scenario() -> None:
        with pytest.raises(OpenBrokerRefused):
            await start_embedded_broker("0.0.0.0", free_port())

    asyncio.run(scenario())


def test_a_new_password_replaces_the_old_one_without_a_restart(
    secured, session_factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    running, passwords, _ = secured
    monkeypatch.setattr(broker_module, "ACCOUNTS_TTL_S", 0.0)  # the next CONNECT reads the database
    with session_scope(session_factory) as s:
        new = credentials.issue(session=s, device_id="ba-a")[1]

    async def scenario() -> None:
        with pytest.raises(aiomqtt.MqttError):
            async with _client(running.broker.port, "ba-a", passwords["ba-a"], "ba-a"):
                pass
        async with _client(running.broker.port, "ba-a", new, "ba-a") as speaker_a:
            await speaker_a.publish(_topic("ba-a"), _report("ba-a", "played"), qos=1)

    asyncio.run(scenario())
