"""The embedded broker: binds where told, refuses a taken port clearly, delivers retained messages right."""

from __future__ import annotations

import asyncio
import logging
import socket
import uuid

import aiomqtt
import pytest

from cunxiang_shared.broker import parse_broker_url
from devices.broker import BrokerPortInUse, start_embedded_broker
from tests.fixtures_mqtt import free_port


def test_starts_on_the_given_host_and_stops() -> None:
    async def scenario() -> None:
        port = free_port()
        broker = await start_embedded_broker("127.0.0.1", port)
        try:
            assert broker.url == f"mqtt://127.0.0.1:{port}"
            bound = [
                s.getsockname()
                for server in broker._broker._servers.values()
                for s in server.instance.sockets
            ]
            assert bound == [("127.0.0.1", port)]
            assert logging.getLogger("amqtt").getEffectiveLevel() >= logging.WARNING
            async with aiomqtt.Client("127.0.0.1", port, protocol=aiomqtt.ProtocolVersion.V311) as client:
                await client.subscribe("cx/v1/test", qos=1)
                await client.publish("cx/v1/test", b"hello", qos=1)
                async with asyncio.timeout(5):
                    message = await anext(client.messages)
                assert message.payload == b"hello"
        finally:
            await broker.stop()
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=1).close()

    asyncio.run(scenario())


def test_port_in_use_says_what_to_do(mosquitto_url: str) -> None:
    port = parse_broker_url(mosquitto_url).port

    async def scenario() -> None:
        with pytest.raises(BrokerPortInUse) as info:
            await start_embedded_broker("127.0.0.1", port)
        message = str(info.value)
        assert f"port {port} on 127.0.0.1 is in use" in message
        assert f"CUNXIANG_MQTT_URL=mqtt://127.0.0.1:{port}" in message
        assert "CUNXIANG_MQTT_PORT" in message

    asyncio.run(scenario())


def test_port_held_by_any_listener_is_refused() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        port = holder.getsockname()[1]
        with pytest.raises(BrokerPortInUse):
            asyncio.run(start_embedded_broker("127.0.0.1", port))


def test_retained_messages_reach_only_matching_subscribers(broker_url: str) -> None:
    """A new client gets no retained messages of topics only others subscribed to (amqtt 0.12.1 bug)."""
    address = parse_broker_url(broker_url)
    tag = uuid.uuid4().hex[:8]

    def client(name: str) -> aiomqtt.Client:
        return aiomqtt.Client(
            address.host, address.port, identifier=f"{name}-{tag}", protocol=aiomqtt.ProtocolVersion.V311
        )

    async def scenario() -> None:
        async with client("watcher") as watcher:
            await watcher.subscribe(f"cx/v1/dev/+/status-{tag}", qos=1)
            await watcher.publish(f"cx/v1/dev/a/status-{tag}", b"a", qos=1, retain=True)
            async with client("newcomer") as newcomer:
                await newcomer.subscribe(f"cx/v1/dev/b/cmd-{tag}", qos=1)
                await newcomer.publish(f"cx/v1/dev/b/cmd-{tag}", b"mine", qos=1)
                async with asyncio.timeout(5):
                    first = await anext(newcomer.messages)
                assert (str(first.topic), first.payload) == (f"cx/v1/dev/b/cmd-{tag}", b"mine")
            async with client("late") as late:
                await late.subscribe(f"cx/v1/dev/a/status-{tag}", qos=1)
                async with asyncio.timeout(5):
                    retained = await anext(late.messages)
                assert (retained.payload, retained.retain) == (b"a", True)
            await watcher.publish(f"cx/v1/dev/a/status-{tag}", b"", qos=1, retain=True)  # clear it

    asyncio.run(scenario())
