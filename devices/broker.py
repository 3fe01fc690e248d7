"""Embedded MQTT broker (amqtt) for a one-machine install; production uses Mosquitto or EMQX."""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
from typing import Any

from amqtt.broker import Broker

logger = logging.getLogger(__name__)

# amqtt logs every connect, subscribe and packet at INFO; a county demo has hundreds of speakers.
_NOISY_LOGGERS = ("amqtt", "transitions")


# amqtt's shutdown can hang on a session with messages in flight; after this, sockets are closed anyway.
SHUTDOWN_TIMEOUT_S = 3.0


class BrokerPortInUse(RuntimeError):
    """The embedded broker cannot listen because something else holds the port."""

    def __init__(self, host: str, port: int) -> None:
        super().__init__(
            f"port {port} on {host} is in use — if a broker (e.g. Mosquitto) already runs there, "
            f"set CUNXIANG_MQTT_URL=mqtt://{host}:{port} to use it, "
            f"or pick another port with CUNXIANG_MQTT_PORT"
        )
        self.host = host
        self.port = port


class _Broker(Broker):
    """amqtt's Broker with retained-message delivery fixed and made cheap for thousands of speakers."""

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        self.connections: set[asyncio.StreamWriter] = set()

    async def stream_connected(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, listener_name: str
    ) -> None:
        # Tracked so stop() can close them: amqtt's shutdown sometimes leaves a client socket open,
        # and that speaker would not notice until its keepalive ran out.
        self.connections.add(writer)
        try:
            await super().stream_connected(reader, writer, listener_name)
        finally:
            self.connections.discard(writer)

    async def _publish_retained_messages_for_subscription(
        self, subscription: tuple[str, int], session: Any
    ) -> None:
        # amqtt 0.12.1 calls this on every CONNECT for *every* topic filter any client subscribed to,
        # so a new speaker received the retained status/online messages matching the server's
        # `cx/v1/dev/+/status` subscription. Deliver only for filters this session itself holds.
        topic_filter, qos = subscription
        if not any(holder is session for holder, _ in self._subscriptions.get(topic_filter, ())):
            return
        if "+" in topic_filter or "#" in topic_filter:
            await super()._publish_retained_messages_for_subscription(subscription, session)
            return
        # Exact filters (all a speaker uses): one dict lookup instead of matching every retained topic.
        retained = self._retained_messages.get(topic_filter)
        handler = self._get_handler(session)
        if retained is not None and handler is not None:
            await handler.mqtt_publish(
                retained.topic, retained.data, min(qos, retained.qos or qos), retain=True
            )


class EmbeddedBroker:
    """A running amqtt broker bound to one host and port."""

    def __init__(self, broker: _Broker, host: str, port: int) -> None:
        self._broker = broker
        self.host = host
        self.port = port

    @property
    def url(self) -> str:
        """Broker URL for clients, e.g. ``mqtt://127.0.0.1:1883``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"mqtt://{host}:{self.port}"

    async def stop(self) -> None:
        """Close the listener and every client connection."""
        if self._broker.transitions.state != "started":
            return
        try:
            async with asyncio.timeout(SHUTDOWN_TIMEOUT_S):
                await self._broker.shutdown()
        except TimeoutError:
            logger.warning("amqtt did not shut down within %s s; closing its sockets", SHUTDOWN_TIMEOUT_S)
            for server in self._broker._servers.values():
                if server.instance is not None:
                    server.instance.close()
        for writer in list(self._broker.connections):
            writer.close()
        await asyncio.sleep(0)  # let the transports close before the caller stops the loop


def quiet_amqtt_logging() -> None:
    """Keep amqtt (and its state-machine library) at WARNING unless someone asked for DEBUG."""
    for name in _NOISY_LOGGERS:
        log = logging.getLogger(name)
        if log.level == logging.NOTSET or log.level == logging.INFO:
            log.setLevel(logging.WARNING)


def _check_port_free(host: str, port: int) -> None:
    # amqtt listens with SO_REUSEADDR; do the same so sockets in TIME_WAIT do not count as "in use".
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
            sock.listen(1)
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                raise BrokerPortInUse(host, port) from exc
            raise


def _config(host: str, port: int) -> dict[str, object]:
    bind = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return {
        "listeners": {"default": {"type": "tcp", "bind": bind, "max_connections": 0}},
        # Only anonymous auth: no packet/event logger plugins (slow and noisy), no $SYS publisher.
        "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
        # A speaker that vanishes without DISCONNECT is dropped after 1.5 x keepalive, which fires its will.
        "timeout_disconnect_delay": 0,
    }


async def start_embedded_broker(host: str, port: int) -> EmbeddedBroker:
    """Start amqtt on host:port in the running loop; raise BrokerPortInUse if the port is taken."""
    quiet_amqtt_logging()
    _check_port_free(host, port)
    broker = _Broker(_config(host, port))
    try:
        await broker.start()
    except Exception as exc:
        cause = exc.__cause__
        if isinstance(cause, OSError) and cause.errno == errno.EADDRINUSE:
            raise BrokerPortInUse(host, port) from exc
        raise
    logger.info("embedded MQTT broker listening on %s:%s", host, port)
    return EmbeddedBroker(broker, host, port)
