"""The Mosquitto setup `cunxiang mosquitto files` writes starts on the system's Mosquitto 2.0 as
docs/fleet.md prescribes: run as root it drops to the `mosquitto` user and still reads the password
and ACL files, listens on the configured port only, refuses anonymous clients, keeps each speaker
to its own topics, and with --tls accepts no plaintext connection."""

from __future__ import annotations

import asyncio
import contextlib
import grp
import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import aiomqtt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from api import migrate
from core import regions
from core.db import make_engine, make_session_factory, session_scope
from cunxiang_shared import protocol
from devices import credentials
from devices import service as device_service
from tests.devices.test_agent import VILLAGE
from tests.devices.test_tls import _cert, _pem
from tests.fixtures_mqtt import BROKER_START_TIMEOUT_S, MOSQUITTO, free_port

pytestmark = pytest.mark.mosquitto

SERVER = ("cunxiang-server", "server-pass")
OTHER_VILLAGE = "341225100202"
# Seconds a message gets to arrive (or, for one that must not, to show up anyway).
DELIVERY_WAIT_S = 1.0


@pytest.fixture
def setup(sqlite_url: str) -> Iterator[tuple[Path, str, dict[str, str]]]:
    """Two speakers with passwords; a directory the `mosquitto` user may enter, as /etc/mosquitto is."""
    migrate.upgrade(sqlite_url)
    engine = make_engine(sqlite_url)
    passwords = {}
    with session_scope(make_session_factory(engine)) as s:
        regions.load_demo(session=s)
        for device, area in (("ms-a", VILLAGE), ("ms-b", OTHER_VILLAGE)):
            device_service.register(session=s, device_id=device, name=device, area_code=area)
            passwords[device] = credentials.issue(session=s, device_id=device)[1]
    engine.dispose()
    out = Path(tempfile.mkdtemp(prefix="cx-mosquitto-"))
    out.chmod(0o755)
    try:
        yield out, sqlite_url, passwords
    finally:
        shutil.rmtree(out, ignore_errors=True)


def _files(out: Path, database_url: str, port: int, *extra: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "api.cli", "mosquitto", "files", "--out", str(out),
         "--server-user", SERVER[0], "--server-password", SERVER[1],
         "--port", str(port), "--bind", "127.0.0.1", *extra],
        env={**os.environ, "CUNXIANG_DATABASE_URL": database_url}, check=True, capture_output=True,
    )  # fmt: skip


class _Mosquitto:
    """The system mosquitto on the generated configuration, exactly as an operator starts it."""

    def __init__(self, conf: Path, port: int) -> None:
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stderr=subprocess.PIPE)
        deadline = time.monotonic() + BROKER_START_TIMEOUT_S
        while self.proc.poll() is None and time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
            time.sleep(0.05)
        pytest.fail(f"mosquitto did not start on {conf}:\n{self.stop()}")

    def listening(self) -> set[str]:
        """Every local address:port this mosquitto process listens on (TCP)."""
        ss = subprocess.run(["ss", "-Hltnp"], capture_output=True, text=True, check=True).stdout
        return {line.split()[3] for line in ss.splitlines() if re.search(rf"pid={self.proc.pid},", line)}

    def stop(self) -> str:
        self.proc.terminate()
        try:
            _, err = self.proc.communicate(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        return err.decode(errors="replace")


def _client(port: int, user: str | None, password: str | None, name: str, tls: ssl.SSLContext | None = None):
    return aiomqtt.Client(
        "127.0.0.1", port, username=user, password=password, identifier=name,
        protocol=aiomqtt.ProtocolVersion.V311, tls_context=tls, timeout=3,
    )  # fmt: skip


async def _collect(c: aiomqtt.Client, into: list[tuple[str, bytes]]) -> None:
    async for message in c.messages:
        into.append((str(message.topic), bytes(message.payload)))  # type: ignore[arg-type]


def test_generated_files_are_readable_by_the_mosquitto_group_only(setup) -> None:
    out, database_url, _ = setup
    _files(out, database_url, free_port())
    for name in ("cunxiang.passwd", "cunxiang.acl"):
        st = (out / name).stat()
        assert st.st_mode & 0o777 == 0o640
        if os.geteuid() == 0:
            assert (st.st_uid, st.st_gid) == (0, grp.getgrnam("mosquitto").gr_gid)
    conf = (out / "cunxiang.conf").read_text().splitlines()
    first_listener = next(i for i, line in enumerate(conf) if line.startswith("listener "))
    before = [line.split()[0] for line in conf[:first_listener] if line and not line.startswith("#")]
    # only options Mosquitto 2.0 treats as global may precede the listener
    assert set(before) <= {"per_listener_settings", "set_tcp_nodelay", "max_queued_messages",
                           "max_inflight_messages"}  # fmt: skip


def test_mosquitto_starts_listens_only_where_told_and_enforces_the_accounts(setup) -> None:
    out, database_url, passwords = setup
    port = free_port()
    _files(out, database_url, port)
    broker = _Mosquitto(out / "cunxiang.conf", port)
    try:
        assert broker.listening() == {f"127.0.0.1:{port}"}

        async def scenario() -> None:
            with pytest.raises(aiomqtt.MqttError):
                async with _client(port, None, None, "anonymous"):
                    pass
            heard: list[tuple[str, bytes]] = []
            async with (
                _client(port, *SERVER, SERVER[0]) as server,
                _client(port, "ms-a", passwords["ms-a"], "ms-a") as speaker_a,
            ):
                await server.subscribe(protocol.device_topic("+", "report"), qos=1)
                listener = asyncio.create_task(_collect(server, heard))
                forged = protocol.Report(device_id="ms-b", occurrence_id=9, state="failed")
                own = protocol.Report(device_id="ms-a", occurrence_id=9, state="played", seconds_played=1)
                for device, report in (("ms-b", forged), ("ms-a", own)):
                    topic = protocol.device_topic(device, "report")
                    await speaker_a.publish(topic, protocol.encode(report), qos=1)
                async with asyncio.timeout(5):
                    while not heard:  # noqa: ASYNC110
                        await asyncio.sleep(0.05)
                await asyncio.sleep(DELIVERY_WAIT_S)
                listener.cancel()
            assert [t for t, _ in heard] == [protocol.device_topic("ms-a", "report")]

        asyncio.run(scenario())
    finally:
        err = broker.stop()
    assert "Unable to open" not in err and "Error" not in err, err


def test_with_tls_no_plaintext_connection_is_accepted(setup) -> None:
    out, database_url, passwords = setup
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "cunxiang test CA")])
    key = ec.generate_private_key(ec.SECP256R1())
    ca_file = _pem(out / "ca.crt", _cert("cunxiang test CA", ca_key, ca_name, ca_key, ca=True))
    cert_file = _pem(out / "server.crt", _cert("127.0.0.1", ca_key, ca_name, key, ca=False))
    key_file = _pem(out / "server.key", key)
    # as docs/fleet.md says: Mosquitto 2.0 loads the key after dropping root for user `mosquitto`
    os.chown(key_file, 0, grp.getgrnam("mosquitto").gr_gid)
    Path(key_file).chmod(0o640)
    port = free_port()
    _files(out, database_url, port, "--tls-cert", cert_file, "--tls-key", key_file)
    broker = _Mosquitto(out / "cunxiang.conf", port)
    try:
        assert broker.listening() == {f"127.0.0.1:{port}"}
        tls = ssl.create_default_context(cafile=ca_file)

        async def scenario() -> None:
            with pytest.raises(aiomqtt.MqttError):
                async with _client(port, "ms-a", passwords["ms-a"], "ms-a"):
                    pass
            async with _client(port, "ms-a", passwords["ms-a"], "ms-a", tls=tls) as speaker_a:
                await speaker_a.publish(protocol.device_topic("ms-a", "online"), protocol.ONLINE, qos=1)

        asyncio.run(scenario())
    finally:
        broker.stop()
