"""Embedded MQTT broker (amqtt) for a one-machine install; production uses Mosquitto or EMQX."""

from __future__ import annotations

import asyncio
import errno
import hashlib
import ipaddress
import logging
import secrets
import socket
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from amqtt.broker import Broker
from amqtt.contexts import Action
from amqtt.errors import AMQTTError, MQTTError, NoDataError
from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler
from amqtt.plugins.base import BaseAuthPlugin, BaseTopicPlugin
from amqtt.session import Session as MqttSession
from amqtt.utils import gen_client_id
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from cunxiang_shared import protocol
from devices import credentials
from devices.models import Device

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


# The embedded broker's account for the server's own connection (its password is in the data dir).
SERVER_USERNAME = "cunxiang-server"
# How long the speaker accounts read from the database are used before they are read again.
ACCOUNTS_TTL_S = 5.0
# An unknown user or a wrong password re-reads them at once, but at most this often: a speaker given
# a password a moment ago gets in on its next try, and guessing cannot hammer the database.
ACCOUNTS_MISS_RELOAD_S = 1.0
# Client ids given to refused connections, so they cannot touch the session of the id they claimed.
_REFUSED_PREFIX = "refused-"


class OpenBrokerRefused(RuntimeError):
    """An embedded broker without accounts was asked to listen beyond this machine."""

    def __init__(self, host: str) -> None:
        super().__init__(
            f"the embedded MQTT broker is open (no accounts: anyone who reaches it can publish reports) "
            f"and would listen on {host}, beyond this machine: use 127.0.0.1, or give it accounts "
            f"(drop CUNXIANG_MQTT_OPEN_BROKER), or allow it explicitly with "
            f"CUNXIANG_MQTT_OPEN_BROKER_ANY_HOST=true"
        )
        self.host = host


@dataclass(frozen=True)
class Grant:
    """What one account may do: `full` (a server) anything under cx/, a speaker exactly its topics."""

    password_hash: str
    full: bool = False
    read: frozenset[str] = frozenset()
    write: frozenset[str] = frozenset()


@dataclass
class Accounts:
    """Who may use the embedded broker: the server accounts (name -> `$7$` hash) given at start, and
    every speaker with an MQTT password in the database (`devices.secret_hash`), with the topic ACL
    of devices.credentials.speaker_topics — the same accounts and ACL as the Mosquitto files."""

    session_factory: sessionmaker[Session]
    servers: dict[str, str]
    _grants: dict[str, Grant] = field(default_factory=dict)
    _loaded_at: float = float("-inf")
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    # (user, hash) -> sha256 of the password that verified against it: PBKDF2 once per password
    _verified: dict[tuple[str, str], bytes] = field(default_factory=dict)

    def _read(self) -> dict[str, Grant]:
        grants = {name: Grant(password_hash=hashed, full=True) for name, hashed in self.servers.items()}
        with self.session_factory() as session:
            rows = session.execute(
                select(Device.id, Device.mqtt_username, Device.area_code, Device.secret_hash).where(
                    Device.secret_hash.is_not(None), Device.mqtt_username.is_not(None)
                )
            ).all()
        for device_id, username, area, hashed in rows:
            if username in self.servers:
                continue  # a speaker cannot take a server account's name
            read, write = credentials.speaker_topics(device_id, area)
            grants[username] = Grant(password_hash=hashed, read=frozenset(read), write=frozenset(write))
        return grants

    async def reload(self) -> None:
        """Read the speaker accounts from the database now."""
        await self._reload(0)

    async def _reload(self, min_age_s: float) -> None:
        async with self._lock:
            if time.monotonic() - self._loaded_at < min_age_s:
                return  # someone else just did
            try:
                self._grants = await asyncio.to_thread(self._read)
                # forget verified passwords of hashes that changed or went away
                current = {(name, grant.password_hash) for name, grant in self._grants.items()}
                self._verified = {key: digest for key, digest in self._verified.items() if key in current}
            except Exception:
                logger.exception("embedded broker: could not read the speaker accounts; keeping the old ones")
            self._loaded_at = time.monotonic()

    def grant(self, username: str | None) -> Grant | None:
        """The cached grant of an account (no database access)."""
        return self._grants.get(username) if username else None

    async def _check_password(self, username: str, password: str) -> Grant | None:
        grant = self.grant(username)
        if grant is None:
            return None
        key = (username, grant.password_hash)
        digest = hashlib.sha256(password.encode()).digest()
        known = self._verified.get(key)
        if known is not None:
            return grant if secrets.compare_digest(known, digest) else None
        if not await asyncio.to_thread(credentials.verify_password, password, grant.password_hash):
            return None
        self._verified[key] = digest
        return grant

    async def authenticate(self, session: MqttSession) -> Grant | None:
        """The grant of a CONNECT's account, or None when it must be refused: unknown user, wrong
        password, a speaker using another client id than its user name (Mosquitto's
        `use_username_as_clientid`), or a last will on a topic the account may not write."""
        username, password = session.username, session.password
        if not username or password is None:
            return None
        if time.monotonic() - self._loaded_at > ACCOUNTS_TTL_S:
            await self._reload(0)
        grant = await self._check_password(username, password)
        if grant is None:
            await self._reload(ACCOUNTS_MISS_RELOAD_S)
            grant = await self._check_password(username, password)
        if grant is None:
            return None
        if not grant.full and session.client_id != username:
            return None
        if session.will_flag and not self.may(grant, Action.PUBLISH, session.will_topic or ""):
            return None
        return grant

    @staticmethod
    def may(grant: Grant, action: Action, topic: str) -> bool:
        """Whether this account may publish to / subscribe to this topic (filter)."""
        if grant.full:
            return topic.startswith(protocol.PREFIX + "/")
        if action == Action.PUBLISH:
            return topic in grant.write
        if action == Action.SUBSCRIBE:
            return topic in grant.read  # exact topics only: a speaker has no use for a wildcard
        return False


class AccountAuthPlugin(BaseAuthPlugin):
    """amqtt auth plugin: only accounts of `Accounts` get in (see Accounts.authenticate)."""

    @dataclass
    class Config:
        accounts: Any = None  # an Accounts; typed Any because amqtt builds Config with dacite

    async def authenticate(self, *, session: MqttSession) -> bool | None:
        grant = await self.config.accounts.authenticate(session)
        if grant is None:
            logger.info("embedded broker refused a connection as %r (client id %r)", session.username,
                        session.client_id)  # fmt: skip
        return grant is not None


class AccountTopicPlugin(BaseTopicPlugin):
    """amqtt topic plugin: the ACL of `Accounts` for PUBLISH and SUBSCRIBE (a subscription checked
    once covers what it receives)."""

    @dataclass
    class Config:
        accounts: Any = None

    async def topic_filtering(
        self, *, session: MqttSession | None = None, topic: str | None = None, action: Action | None = None
    ) -> bool | None:
        if action == Action.RECEIVE:
            return True
        accounts: Accounts = self.config.accounts
        grant = accounts.grant(session.username if session else None)
        if grant is None or not topic or action is None:
            return False
        allowed = accounts.may(grant, action, topic)
        if not allowed:
            logger.info("embedded broker: %r may not %s %s", session.username if session else None,
                        action.value, topic)  # fmt: skip
        return allowed


class _Broker(Broker):
    """amqtt's Broker with retained-message delivery fixed and made cheap for thousands of speakers,
    and (with accounts) no session touched by a connection that is then refused."""

    def __init__(self, config: dict[str, Any], accounts: Accounts | None = None) -> None:
        super().__init__(config)
        self.connections: set[asyncio.StreamWriter] = set()
        self._accounts = accounts

    async def _initialize_client_session(
        self, reader: Any, writer: Any, remote_address: str, remote_port: int
    ) -> tuple[BrokerProtocolHandler, MqttSession]:
        # amqtt 0.12.1 (Broker._initialize_client_session, copied here with one check added) acts on
        # the CONNECT before it authenticates: a clean-session CONNECT deletes the session of the
        # client id it names, another overwrites that session's will and credentials, and the later
        # take-over disconnects its holder. A connection that will be refused gets a throwaway client
        # id first, so it touches nobody's session.
        if self._accounts is None:
            return await super()._initialize_client_session(reader, writer, remote_address, remote_port)
        try:
            handler, session = await BrokerProtocolHandler.init_from_connect(
                reader, writer, self.plugins_manager
            )
        except MQTTError as exc:
            await writer.close()
            raise MQTTError(exc) from exc
        except (AMQTTError, NoDataError) as exc:
            raise AMQTTError(exc) from exc
        if await self._accounts.authenticate(session) is None:
            session.client_id = f"{_REFUSED_PREFIX}{secrets.token_hex(8)}"
            session.clean_session = True
            session.will_flag = False
        if session.clean_session:
            if session.client_id:
                await self._delete_session(session.client_id)
            else:
                session.client_id = gen_client_id()
            session.parent = 0
        elif session.client_id in self._sessions:
            existing, _ = self._sessions[session.client_id]
            for name in ("will_flag", "will_message", "will_topic", "will_qos", "keep_alive", "username",
                         "password"):  # fmt: skip
                setattr(existing, name, getattr(session, name))
            session = existing
            session.parent = 1
        else:
            session.parent = 0
        delay = self.config.get("timeout-disconnect-delay", 0)
        if session.keep_alive > 0 and isinstance(delay, int):
            session.keep_alive += delay
        return handler, session

    async def _handle_client_session(self, reader: Any, writer: Any, client_session: Any, *args: Any) -> None:
        try:
            await super()._handle_client_session(reader, writer, client_session, *args)
        finally:
            if (client_session.client_id or "").startswith(_REFUSED_PREFIX):
                self._sessions.pop(client_session.client_id, None)

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

    def url_for(self, username: str, password: str) -> str:
        """The broker URL with an account in it (percent-encoded)."""
        return self.url.replace(
            "mqtt://", f"mqtt://{quote(username, safe='')}:{quote(password, safe='')}@", 1
        )

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


def _config(host: str, port: int, accounts: Accounts | None) -> dict[str, object]:
    bind = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    # No packet/event logger plugins (slow and noisy), no $SYS publisher.
    plugins: dict[str, object] = (
        {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}}
        if accounts is None
        else {
            f"{__name__}.AccountAuthPlugin": {"accounts": accounts},
            f"{__name__}.AccountTopicPlugin": {"accounts": accounts},
        }
    )
    return {
        "listeners": {"default": {"type": "tcp", "bind": bind, "max_connections": 0}},
        "plugins": plugins,
        # A speaker that vanishes without DISCONNECT is dropped after 1.5 x keepalive, which fires its will.
        "timeout_disconnect_delay": 0,
    }


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and localhost."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


async def start_embedded_broker(
    host: str, port: int, *, accounts: Accounts | None = None, open_any_host: bool = False
) -> EmbeddedBroker:
    """Start amqtt on host:port in the running loop; raise BrokerPortInUse if the port is taken.

    With `accounts`, only those accounts connect, each held to its topics. Without, the broker is
    open to anyone who reaches it: allowed on a loopback address only, unless `open_any_host`.
    """
    quiet_amqtt_logging()
    if accounts is None:
        if not is_loopback(host) and not open_any_host:
            raise OpenBrokerRefused(host)
        logger.warning(
            "the embedded MQTT broker on %s:%s is OPEN: no accounts, anyone who reaches it can publish "
            "speaker reports (demo only)%s", host, port,
            "" if is_loopback(host) else "; it listens beyond this machine",
        )  # fmt: skip
    else:
        await accounts.reload()
    _check_port_free(host, port)
    broker = _Broker(_config(host, port, accounts), accounts)
    try:
        await broker.start()
    except Exception as exc:
        cause = exc.__cause__
        if isinstance(cause, OSError) and cause.errno == errno.EADDRINUSE:
            raise BrokerPortInUse(host, port) from exc
        raise
    logger.info(
        "embedded MQTT broker listening on %s:%s (%s)", host, port,
        "open" if accounts is None else "server and speaker accounts",
    )  # fmt: skip
    return EmbeddedBroker(broker, host, port)
