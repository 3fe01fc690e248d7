"""Embedded MQTT broker (amqtt) for a one-machine install; production uses Mosquitto or EMQX."""

from __future__ import annotations

import errno
import logging
import socket

from amqtt.broker import Broker

logger = logging.getLogger(__name__)

# amqtt logs every connect, subscribe and packet at INFO; a county demo has hundreds of speakers.
_NOISY_LOGGERS = ("amqtt", "transitions")


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


class EmbeddedBroker:
    """A running amqtt broker bound to one host and port."""

    def __init__(self, broker: Broker, host: str, port: int) -> None:
        self._broker = broker
        self.host = host
        self.port = port

    @property
    def url(self) -> str:
        """Broker URL for clients, e.g. ``mqtt://127.0.0.1:1883``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"mqtt://{host}:{self.port}"

    async def stop(self) -> None:
        """Close the listener and every client session."""
        if self._broker.transitions.state == "started":
            await self._broker.shutdown()


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
    broker = Broker(_config(host, port))
    try:
        await broker.start()
    except Exception as exc:
        cause = exc.__cause__
        if isinstance(cause, OSError) and cause.errno == errno.EADDRINUSE:
            raise BrokerPortInUse(host, port) from exc
        raise
    logger.info("embedded MQTT broker listening on %s:%s", host, port)
    return EmbeddedBroker(broker, host, port)
