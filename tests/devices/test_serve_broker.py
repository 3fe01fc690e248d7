"""`cunxiang serve`'s embedded broker requires accounts: the server connects with its own account
(password kept 0600 in the data dir), anonymous clients are refused; an open broker (demo) stays on
loopback unless explicitly allowed elsewhere."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import aiomqtt
import pytest

from api.services import SERVER_PASSWORD_FILE, Services
from core.settings import Settings
from tests.fixtures_mqtt import free_port


def test_serve_broker_takes_accounts_only_and_the_server_uses_its_own(
    tmp_path: Path, sqlite_url: str
) -> None:
    port = free_port()
    settings = Settings(data_dir=tmp_path / "var", database={"url": sqlite_url}, mqtt={"port": port})

    async def scenario() -> dict:
        services = Services(settings)
        await services.start()
        try:
            with pytest.raises(aiomqtt.MqttError):
                async with aiomqtt.Client("127.0.0.1", port, identifier="anon", timeout=3,
                                          protocol=aiomqtt.ProtocolVersion.V311):  # fmt: skip
                    pass
            return services.health()
        finally:
            await services.stop()

    health = asyncio.run(scenario())
    password_file = tmp_path / "var" / SERVER_PASSWORD_FILE
    assert password_file.stat().st_mode & 0o777 == 0o600
    password = password_file.read_text().strip()
    assert health["broker"]["ok"] is True and health["broker"]["embedded"] is True
    assert health["broker"]["url"] == f"mqtt://***@127.0.0.1:{port}"
    assert password not in str(health)


def test_an_open_broker_beyond_loopback_is_refused_before_anything_starts(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CUNXIANG_")}
    env.update(CUNXIANG_DATA_DIR=str(tmp_path / "var"), CUNXIANG_MQTT_HOST="0.0.0.0",
               CUNXIANG_MQTT_PORT=str(free_port()))  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-m", "api.cli", "serve", "--open-broker", "--port", str(free_port())],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2
    assert "loopback only" in done.stderr and "--open-broker-any-host" in done.stderr
    assert not (tmp_path / "var").exists()  # nothing was created
