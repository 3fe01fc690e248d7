"""TLS to the broker: a real Mosquitto with a certificate from a throwaway CA; the speaker agent and
the server's link connect with mqtts:// and the CA file, a client without the CA is refused."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import threading
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from cunxiang_agent import speaker as speaker_module
from cunxiang_agent.speaker import Speaker
from cunxiang_shared import protocol
from cunxiang_shared.broker import BrokerAddress
from devices.transport import LinkError, MqttLink
from tests.devices.test_agent import SIGNER, VILLAGE, signed
from tests.fixtures_mqtt import MosquittoProcess

pytestmark = pytest.mark.mosquitto


def _cert(subject: str, issuer_key, issuer_name, key, *, ca: bool) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False
        )
    return builder.sign(issuer_key, hashes.SHA256())


def _pem(path: Path, obj) -> str:
    if isinstance(obj, x509.Certificate):
        path.write_bytes(obj.public_bytes(serialization.Encoding.PEM))
    else:
        path.write_bytes(
            obj.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
    return str(path)


@pytest.fixture
def tls_broker(tmp_path: Path):
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "cunxiang test CA")])
    ca = _cert("cunxiang test CA", ca_key, ca_name, ca_key, ca=True)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _cert("127.0.0.1", ca_key, ca_name, key, ca=False)
    files = {
        "ca": _pem(tmp_path / "ca.crt", ca),
        "cert": _pem(tmp_path / "server.crt", cert),
        "key": _pem(tmp_path / "server.key", key),
    }
    config = f"allow_anonymous true\ncafile {files['ca']}\ncertfile {files['cert']}\nkeyfile {files['key']}\n"
    broker = MosquittoProcess(tmp_path, config=config).start()
    try:
        yield broker.port, files["ca"]
    finally:
        broker.stop()


def test_agent_and_server_link_over_tls(tls_broker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    port, ca_file = tls_broker
    monkeypatch.setattr(speaker_module, "RECONNECT_MIN_S", 0.1)
    url = f"mqtts://127.0.0.1:{port}"
    link = MqttLink(url, client_id="tls-server", ca_file=ca_file)
    link.connect()
    statuses: list[bytes] = []
    got = threading.Event()

    def on_status(_topic: str, payload: bytes) -> None:
        statuses.append(payload)
        if b'"volume":25' in payload:
            got.set()

    link.subscribe(protocol.device_topic("tls-1", "status"), on_status)

    async def scenario() -> None:
        speaker = Speaker(
            "tls-1", VILLAGE, broker=BrokerAddress("127.0.0.1", port, tls=True, ca_file=ca_file),
            cache=tmp_path / "cache", trusted_keys=[SIGNER.public_key],
        )  # fmt: skip
        task = asyncio.create_task(speaker.run())
        try:
            async with asyncio.timeout(8):
                await speaker.ready.wait()
            topic = protocol.device_topic("tls-1", "cmd")
            link.publish(topic, signed(protocol.SetVolumeCommand(volume=25), topic))
            assert await asyncio.to_thread(got.wait, 8)
        finally:
            await speaker_module.cancel_and_wait([task])

    try:
        asyncio.run(scenario())
    finally:
        link.close()
    # Without the CA the broker's certificate is not trusted: no connection.
    with pytest.raises(LinkError):
        MqttLink(url, client_id="tls-untrusting").connect(timeout=2)
