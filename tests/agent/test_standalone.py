"""The speaker agent installed alone (./shared and ./agent in a fresh venv), as on a speaker box.

It must install without the server's dependencies, run without importing the server, and obey a
command signed by the server's own code over a real broker, with audio fetched over real HTTP.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import uuid
import venv
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiomqtt
import pytest

from cunxiang_shared import protocol
from cunxiang_shared.broker import parse_broker_url
from cunxiang_shared.protocol import PlayCommand
from cunxiang_shared.signing import Signer, public_key_text
from devices.commands import CommandSender
from devices.transport import MemoryLink
from tests.fixtures_mqtt import AudioServer, clear_retained

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
VILLAGE = "341225100201"
WAIT_S = 20.0
PIP_TIMEOUT_S = 600
# Distributions of the server a speaker box must never get.
SERVER_ONLY = {"fastapi", "sqlalchemy", "edge-tts", "openpyxl", "apscheduler", "amqtt", "jinja2", "cunxiang"}
# Top-level packages of the server (and its heavy libraries) the agent must never import.
SERVER_PACKAGES = {
    "core", "devices", "scheduler", "api", "tts", "playlists", "reports",
    "fastapi", "sqlalchemy", "edge_tts", "openpyxl", "apscheduler", "amqtt", "jinja2",
}  # fmt: skip

# Runs the agent's own entry point in the child and, at exit, writes the modules it loaded.
RUN_AGENT = """
import atexit, json, sys
out = sys.argv.pop(1)
import cunxiang_agent
from cunxiang_agent.cli import main
def record():
    seen = {"modules": sorted(sys.modules), "agent": cunxiang_agent.__file__}
    open(out, "w").write(json.dumps(seen))
atexit.register(record)
sys.exit(main(sys.argv[1:]))
"""


def _bin(env_dir: Path, name: str) -> Path:
    return env_dir / "bin" / name


@pytest.fixture(scope="module")
def agent_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh venv with only ./shared and ./agent installed (not editable, as on a speaker box)."""
    env_dir = tmp_path_factory.mktemp("agent-venv")
    venv.EnvBuilder(with_pip=True, clear=True).create(env_dir)
    # pip builds a local project in its own tree (build/, *.egg-info): each pytest worker that runs
    # this module builds at once, so each builds from its own copy, never the checkout itself.
    sources = tmp_path_factory.mktemp("agent-sources")
    skip = shutil.ignore_patterns("build", "*.egg-info", "__pycache__")
    for name in ("shared", "agent"):
        shutil.copytree(REPO / name, sources / name, ignore=skip)
    subprocess.run(
        [
            _bin(env_dir, "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
            str(sources / "shared"), str(sources / "agent"),
        ],
        check=True, cwd=env_dir, timeout=PIP_TIMEOUT_S, env=_clean_env(),
    )  # fmt: skip
    yield env_dir


def _clean_env() -> dict[str, str]:
    """The environment without anything that would let the child see this checkout or this venv."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env["PYTHONNOUSERSITE"] = "1"
    return env


def test_installs_without_the_server_dependencies(agent_env: Path) -> None:
    listing = subprocess.run(
        [
            _bin(agent_env, "python"), "-c",
            "import importlib.metadata as m, json; "
            "print(json.dumps(sorted({d.metadata['Name'].lower() for d in m.distributions()})))",
        ],
        check=True, capture_output=True, text=True, cwd=agent_env, env=_clean_env(),
    )  # fmt: skip
    installed = {name.replace("_", "-") for name in json.loads(listing.stdout)}
    assert {"cunxiang-agent", "cunxiang-shared", "aiomqtt", "httpx", "cryptography", "pydantic"} <= installed
    assert installed & SERVER_ONLY == set()
    assert _bin(agent_env, "cunxiang-agent").exists()
    # and the server's packages cannot be imported by accident from there
    probe = subprocess.run(
        [_bin(agent_env, "python"), "-c", "import devices"], capture_output=True, text=True,
        cwd=agent_env, env=_clean_env(),
    )  # fmt: skip
    assert probe.returncode != 0 and "ModuleNotFoundError" in probe.stderr


def test_help_of_the_console_script(agent_env: Path) -> None:
    result = subprocess.run(
        [_bin(agent_env, "cunxiang-agent"), "--help"], capture_output=True, text=True, check=True,
        cwd=agent_env, env=_clean_env(),
    )  # fmt: skip
    assert "--device-id" in result.stdout and "--server-keys" in result.stdout


def test_plays_a_command_signed_by_the_server(
    agent_env: Path,
    broker_url: str,
    audio_server: AudioServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    signer = Signer.generate()
    sender = CommandSender(link=MemoryLink(), signer=signer)  # the server's signing path, a test key
    keys = tmp_path / "server-keys"
    keys.write_text(public_key_text(signer.public_key) + "\n")
    device_id = f"sa-{uuid.uuid4().hex[:10]}"
    modules_file = tmp_path / "modules.json"
    argv = [
        _bin(agent_env, "python"), "-c", RUN_AGENT, str(modules_file),
        "--device-id", device_id, "--area", VILLAGE, "--broker", broker_url, "--player", "null",
        "--server-keys", str(keys), "--cache-dir", str(tmp_path / "cache"), "--log-level", "WARNING",
    ]  # fmt: skip
    address = parse_broker_url(broker_url)
    topic = protocol.area_command_topic(VILLAGE)

    async def scenario() -> list[str]:
        states: list[str] = []
        client = aiomqtt.Client(address.host, address.port, protocol=aiomqtt.ProtocolVersion.V311)
        async with client as control:
            await control.subscribe(protocol.device_topic(device_id, "online"), qos=1)
            await control.subscribe(protocol.device_topic(device_id, "report"), qos=1)
            async with asyncio.timeout(WAIT_S):
                async for message in control.messages:
                    payload = bytes(message.payload)  # type: ignore[arg-type]
                    if str(message.topic).endswith("/online"):
                        if payload == protocol.ONLINE:  # subscribed: send the play
                            now = datetime.now(UTC)
                            command = PlayCommand(
                                occurrence_id=4242, broadcast_id=7, title="防汛通知",
                                audio_url=audio_server.url, sha256=audio_server.sha256,
                                size_bytes=audio_server.size_bytes, duration_s=0.2, start_at=now,
                                expires_at=now + timedelta(seconds=30), priority=10,
                            )  # fmt: skip
                            ((_, signed),) = sender.sign(command, [topic])
                            await control.publish(topic, signed, qos=protocol.QOS_COMMAND)
                        continue
                    report = protocol.parse_report(payload)
                    assert (report.device_id, report.occurrence_id) == (device_id, 4242)
                    states.append(report.state)
                    if report.state == "played":
                        return states
        return states

    agent = subprocess.Popen(argv, cwd=tmp_path, env=_clean_env())
    try:
        assert asyncio.run(scenario()) == ["received", "playing", "played"]
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(timeout=10) == 0
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait()
        asyncio.run(clear_retained(broker_url, [device_id]))

    seen = json.loads(modules_file.read_text())
    assert Path(seen["agent"]).is_relative_to(agent_env)  # the installed copy, not this checkout
    loaded = set(seen["modules"])
    assert {"cunxiang_agent.speaker", "cunxiang_shared.signing", "aiomqtt", "httpx"} <= loaded
    assert {name.split(".")[0] for name in loaded} & SERVER_PACKAGES == set()
