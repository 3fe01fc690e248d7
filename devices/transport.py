"""The server's link to the speakers: a small interface, with MQTT (paho) as the implementation."""

from __future__ import annotations

import fcntl
import logging
import secrets
import socket
import ssl
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Protocol
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from core.errors import Unavailable
from cunxiang_shared import broker

log = logging.getLogger(__name__)

# Seconds to wait for the first CONNACK before `connect()` gives up.
CONNECT_TIMEOUT_S = 10.0
# Seconds between reconnect attempts, doubling from min to max.
RECONNECT_MIN_S = 1
RECONNECT_MAX_S = 30
# Fan-out publishes many QoS 1 messages at once; paho's default of 20 in flight is too few.
MAX_INFLIGHT = 100
# Messages paho holds for one connection before publish() refuses more. QoS 1 message ids are
# 16-bit and paho assigns them when a message is queued: past 65,535 queued, ids repeat and the
# connection stalls. Refusing (LinkError) is better than stalling every speaker behind it.
MAX_QUEUED = 60_000
KEEPALIVE_S = 30

Handler = Callable[[str, bytes], None]


class LinkError(Unavailable):
    """The broker could not be reached or refused a publish."""

    def __init__(self, message: str) -> None:
        super().__init__(message, reason="link")


class LinkHeld(LinkError):
    """The link is down: the message was not refused but held, and goes out after the next connect
    (paho keeps a QoS 1 message it could not send). Whether it arrives in time is not known: a
    sender records it as held and sends again once the link is back (`reconnect_listeners`)."""

    def __init__(self, message: str) -> None:
        Unavailable.__init__(self, message, reason="link_held")


class Link(Protocol):
    """What the server needs from a speaker link."""

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> None: ...

    def subscribe(self, topic: str, handler: Handler, *, qos: int = 1) -> None: ...

    @property
    def connected(self) -> bool: ...

    def close(self) -> None: ...


# Processes sharing one data dir and broker (a server and its stand-by, ingest workers) each hold
# one of this many client-id slots; the next process finds the first free one.
CLIENT_ID_SLOTS = 64


def claim_client_id(prefix: str, data_dir: Path) -> tuple[str, IO[bytes]]:
    """A client id that is the same every time a process of this kind starts from this data dir,
    and differs between such processes running at once: `{prefix}-{node}-{slot}`.

    `node` is a random id kept in data_dir (two machines never share one); `slot` is the first of
    data_dir/mqtt-slots/{prefix}-{n}.lock this process can lock exclusively. The lock ends with the
    process (kill -9 included), so a restarted server takes its slot again and with it its
    persistent session at the broker. Keep the returned file open as long as the link lives.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    node_file = data_dir / "mqtt-node-id"
    if not node_file.exists():
        tmp = node_file.with_suffix(f".{secrets.token_hex(4)}.tmp")
        tmp.write_text(secrets.token_hex(4))
        tmp.replace(node_file)  # two first starts at once: one id wins, both read it below
    node = node_file.read_text().strip()
    slots = data_dir / "mqtt-slots"
    slots.mkdir(exist_ok=True)
    for slot in range(CLIENT_ID_SLOTS):
        handle = (slots / f"{prefix}-{slot}.lock").open("ab")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            continue
        return f"{prefix}-{node}-{slot}", handle
    raise LinkError(f"all {CLIENT_ID_SLOTS} MQTT client id slots of {prefix!r} in {slots} are taken")


def parse_broker_url(url: str) -> tuple[str, int, str | None, str | None]:
    """(host, port, username, password) of mqtt://user:pass@host:port, by the one parser in
    cunxiang_shared.broker (port defaults to 1883, 8883 for mqtts://)."""
    address = broker.parse_broker_url(url)
    return address.host, address.port, address.username, address.password


def shared(group: str, topic: str) -> str:
    """The shared-subscription form of a topic filter (MQTT 5 `$share`, which Mosquitto and EMQX
    also honour for 3.1.1 clients); an empty group leaves the filter as it is."""
    return f"$share/{group}/{topic}" if group else topic


def unshared(topic: str) -> str:
    """The plain filter inside `$share/GROUP/filter` (what arriving messages' topics match)."""
    if topic.startswith("$share/"):
        parts = topic.split("/", 2)
        if len(parts) == 3:
            return parts[2]
    return topic


# One recv of up to this many bytes serves the many small reads paho makes per packet.
READ_AHEAD_BYTES = 64 * 1024
# Packets read per wake-up of paho's network thread before it writes (acks) and waits again.
READ_BURST = 256


class _ReadAhead:
    """A connected socket (plain or TLS) that reads ahead, for paho's network thread.

    paho reads every packet with three or more `recv` calls (the command byte, the length bytes
    one at a time, the rest) and handles one packet each time `select` wakes it: seven or eight
    system calls for one speaker report. Here one `recv` fills a buffer that serves the small
    reads; `pending()`, which paho already asks before it waits in `select` (for the bytes a TLS
    socket holds decrypted), also counts the buffered bytes, so paho reads on instead of waiting
    for the socket to become readable again. Everything else goes to the wrapped socket.
    """

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._buffer = b""
        self._at = 0
        self.reads = 0  # recv calls on the socket itself (tests compare it with the packets read)

    def recv(self, size: int) -> bytes:
        if self._at >= len(self._buffer):
            data = self._sock.recv(max(size, READ_AHEAD_BYTES))  # BlockingIOError etc. reach paho as is
            self.reads += 1
            if len(data) <= size:
                self._buffer, self._at = b"", 0
                return data
            self._buffer, self._at = data, 0
        chunk = self._buffer[self._at : self._at + size]
        self._at += len(chunk)
        return chunk

    def buffered(self) -> int:
        return len(self._buffer) - self._at

    def pending(self) -> int:
        inner = self._sock.pending() if isinstance(self._sock, ssl.SSLSocket) else 0
        return self.buffered() + inner

    def fileno(self) -> int:
        return self._sock.fileno()

    def __getattr__(self, name: str):
        return getattr(self._sock, name)


class _Client(mqtt.Client):
    """paho's client with the per-message system calls of receiving cut (docs/scaling.md).

    - reads through `_ReadAhead`;
    - reads every packet already buffered (up to READ_BURST) each time it wakes, not one;
    - an ack queued on the network thread itself does not write a wake-up byte to paho's
      self-pipe: the loop sees the queued packet (`want_write`) before it waits again.

    These hook paho 2.x internals (`_create_socket`, `loop_read`, `_packet_queue`, `_sockpairW`,
    `_thread`); tests/devices/test_transport.py fails if a paho release changes them.
    """

    def _create_socket(self):
        sock = super()._create_socket()
        return sock if self._transport == "websockets" else _ReadAhead(sock)

    def loop_read(self, max_packets: int = 1) -> mqtt.MQTTErrorCode:
        rc = super().loop_read(max_packets)
        for _ in range(READ_BURST):
            sock = self._sock
            if rc != mqtt.MQTT_ERR_SUCCESS or not isinstance(sock, _ReadAhead) or not sock.buffered():
                break
            rc = super().loop_read(max_packets)
        return rc

    def _packet_queue(self, *args, **kwargs) -> mqtt.MQTTErrorCode:
        if self._thread is not None and threading.current_thread() is self._thread:
            wake, self._sockpairW = self._sockpairW, None
            try:
                return super()._packet_queue(*args, **kwargs)
            finally:
                self._sockpairW = wake
        return super()._packet_queue(*args, **kwargs)


class MqttLink:
    """paho-mqtt 2.x client on its own network thread; reconnects and resubscribes by itself.

    Handlers run on paho's thread: they must be quick and hand work elsewhere.

    `persistent`: a session the broker keeps while we are away (clean_session false; with a fixed
    client id and QoS 1 subscriptions the broker queues what arrives meanwhile and hands it over at
    the next connect). Subscribe before `connect()`, so the handlers are in place when the queued
    messages arrive.
    """

    def __init__(
        self,
        url: str,
        *,
        client_id: str,
        persistent: bool = False,
        ca_file: str | None = None,
        cert_file: str | None = None,
        key_file: str | None = None,
    ) -> None:
        self.url = url
        host, port, username, password = parse_broker_url(url)
        self._host, self._port = host, port
        self._client = _Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=MQTTProtocolVersion.MQTTv311,
            clean_session=not persistent,
        )
        if username:
            self._client.username_pw_set(username, password)
        if urlsplit(url).scheme == "mqtts":
            self._client.tls_set(ca_certs=ca_file, certfile=cert_file, keyfile=key_file)
        self._client.max_inflight_messages_set(MAX_INFLIGHT)
        self._client.max_queued_messages_set(MAX_QUEUED)
        self._client.reconnect_delay_set(RECONNECT_MIN_S, RECONNECT_MAX_S)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message
        self._handlers: dict[str, tuple[Handler, int]] = {}
        self._lock = threading.Lock()
        self._connected = threading.Event()
        # Called (on paho's thread) after every reconnect with the time the link went down.
        self.reconnect_listeners: list[Callable[[datetime], None]] = []
        self._down_since: datetime | None = None

    @property
    def connected(self) -> bool:
        """True while the broker connection is up."""
        return self._connected.is_set()

    def connect(self, timeout: float = CONNECT_TIMEOUT_S) -> None:
        """Connect and start the network thread; raise LinkError if no CONNACK in time."""
        try:
            self._client.connect(self._host, self._port, keepalive=KEEPALIVE_S)
        except OSError as exc:
            raise LinkError(f"cannot reach MQTT broker {self._host}:{self._port}: {exc}") from exc
        self._client.loop_start()
        if not self._connected.wait(timeout):
            self._client.loop_stop()
            raise LinkError(f"MQTT broker {self._host}:{self._port} did not accept the connection")

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> None:
        """Queue a message; raise LinkHeld when the link is down and paho keeps the message for the
        next connect (QoS 1/2), LinkError when paho refuses it (QoS 0 while down, queue full)."""
        info = self._client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc == mqtt.MQTT_ERR_NO_CONN and qos > 0:
            raise LinkHeld(f"publish to {topic} held until the broker is back: {mqtt.error_string(info.rc)}")
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            raise LinkError(f"publish to {topic} failed: {mqtt.error_string(info.rc)}")

    def subscribe(self, topic: str, handler: Handler, *, qos: int = 1) -> None:
        """Call handler(topic, payload) for every message on topic (wildcards allowed).

        A shared subscription (`$share/GROUP/filter`) gives each message to one subscriber of the
        group; the handler sees the message's real topic.
        """
        with self._lock:
            self._handlers[topic] = (handler, qos)
        self._client.message_callback_add(unshared(topic), self._dispatch(handler))
        if self.connected:
            self._client.subscribe(topic, qos=qos)

    def close(self) -> None:
        """Disconnect and stop the network thread."""
        self._client.disconnect()
        self._client.loop_stop()
        self._connected.clear()

    # paho callbacks (network thread) -------------------------------------------------

    def _dispatch(self, handler: Handler):
        def on_message(_client, _userdata, message: mqtt.MQTTMessage) -> None:
            try:
                handler(message.topic, message.payload)
            except Exception:  # a handler bug must not kill paho's thread
                log.exception("handler for %s failed", message.topic)

        return on_message

    def _on_connect(self, client, _userdata, _flags, reason_code, _properties) -> None:
        if reason_code.is_failure:
            log.error("MQTT broker refused connection: %s", reason_code)
            return
        sock = client.socket()
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            # paho leaves Nagle on: our PUBACKs for a burst of reports would wait for the broker's
            # delayed ACKs, and the broker's in-flight window with them (docs/scaling.md).
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self._lock:
            subs = [(topic, qos) for topic, (_h, qos) in self._handlers.items()]
        if subs:
            client.subscribe(subs)
        self._connected.set()
        log.info("connected to MQTT broker %s:%s", self._host, self._port)
        down_since, self._down_since = self._down_since, None
        if down_since is not None:
            for listener in list(self.reconnect_listeners):
                try:
                    listener(down_since)
                except Exception:  # a listener bug must not kill paho's thread
                    log.exception("reconnect listener failed")

    def _on_disconnect(self, _client, _userdata, _flags, reason_code, _properties) -> None:
        if self._connected.is_set():
            self._down_since = datetime.now(UTC)
        self._connected.clear()
        log.warning("MQTT connection lost (%s); paho will reconnect", reason_code)

    def _on_message(self, _client, _userdata, message: mqtt.MQTTMessage) -> None:
        log.debug("unrouted message on %s", message.topic)


class MemoryLink:
    """A `Link` in memory: what is published is recorded and handed at once to matching subscribers.

    For use-case tests that need no broker (the real-broker tests cover the transport itself).
    Set `connected = False` to make every publish fail as a broker outage would.
    """

    def __init__(self) -> None:
        self.published: list[tuple[str, bytes]] = []
        self.connected = True
        self._subscriptions: list[tuple[str, Handler]] = []

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> None:
        if not self.connected:
            raise LinkError(f"publish to {topic} failed: not connected (memory link)")
        self.published.append((topic, payload))
        for pattern, handler in list(self._subscriptions):
            if mqtt.topic_matches_sub(pattern, topic):
                handler(topic, payload)

    def subscribe(self, topic: str, handler: Handler, *, qos: int = 1) -> None:
        self._subscriptions.append((topic, handler))

    def close(self) -> None:
        self.connected = False
