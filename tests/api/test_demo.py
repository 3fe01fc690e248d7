"""The README's demo path: `cunxiang serve --demo` as a real process, nothing passed in from outside.

Unlike the other end-to-end tests (which hand the server a broker and run speakers in threads),
this runs the command a newcomer runs: its own embedded amqtt broker, the demo county, the admin
user from CUNXIANG_ADMIN_PASSWORD, and the simulated speakers in their child process.
"""

from __future__ import annotations

import io
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from api import cli
from core import users
from core.db import make_engine, make_session_factory, session_scope
from core.settings import Settings
from tests.live import free_port

PASSWORD = "demo-password-1"
LUCHENG = "341225100000"  # the township of the README's example
# The README's example body, as a newcomer pastes it.
README_BODY = {
    "title": "医保缴费提醒",
    "text": "各位村民请注意，今年城乡居民医保缴费截止日期为十二月三十一日。",
    "areas": [LUCHENG],
}
START_TIMEOUT_S = 40.0
PLAY_TIMEOUT_S = 40.0


def _cunxiang() -> list[str]:
    script = Path(sys.executable).with_name("cunxiang")
    return [str(script)] if script.exists() else [sys.executable, "-m", "api.cli"]


def _env(data_dir: Path, mqtt_port: int, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CUNXIANG_")}
    env.update(
        CUNXIANG_DATA_DIR=str(data_dir),
        CUNXIANG_MQTT_PORT=str(mqtt_port),
        # No quiet hours: the test must pass at any time of day.
        CUNXIANG_SCHEDULER_QUIET_START="00:00",
        CUNXIANG_SCHEDULER_QUIET_END="00:00",
        # Offline speech only: no test reaches the real edge-tts service.
        CUNXIANG_TTS_ENGINE="espeak",
        CUNXIANG_TTS_FALLBACK="[]",
        **extra,
    )
    return env


def _wait(what: str, check, timeout: float, proc: subprocess.Popen, log: Path):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"serve exited ({proc.returncode}) waiting for {what}:\n{log.read_text()}")
        try:
            last = check()
            if last:
                return last
        except httpx.TransportError as exc:
            last = exc
        time.sleep(0.25)
    raise AssertionError(f"no {what} after {timeout} s (last: {last}):\n{log.read_text()[-4000:]}")


@pytest.mark.slow
def test_serve_demo_airs_the_readme_broadcast_on_every_speaker_of_the_township(tmp_path):
    port, mqtt_port = free_port(), free_port()
    log = tmp_path / "serve.log"
    cmd = [*_cunxiang(), "serve", "--demo", "--port", str(port), "--speakers-per-village", "1"]
    env = _env(tmp_path / "var", mqtt_port, CUNXIANG_ADMIN_PASSWORD=PASSWORD)
    with log.open("wb") as out:
        # Its own process group, so the simulator child can be cleaned up even if serve dies.
        proc = subprocess.Popen(
            cmd, cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as c:
            _wait(
                "health ok",
                lambda: c.get("/api/v1/health").json()["status"] == "ok",
                START_TIMEOUT_S, proc, log,
            )  # fmt: skip
            r = c.post("/api/v1/auth/token", data={"username": "admin", "password": PASSWORD})
            assert r.status_code == 200, r.text
            c.headers["Authorization"] = f"Bearer {r.json()['access_token']}"
            villages = c.get("/api/v1/regions", params={"parent": LUCHENG}).json()["total"]
            assert villages > 1
            # The simulated speakers (one per village) connect after the server is up.
            _wait(
                "speakers online",
                lambda: c.get("/api/v1/devices", params={"area": LUCHENG, "online": "true"}).json()["total"]
                == villages,
                START_TIMEOUT_S, proc, log,
            )  # fmt: skip

            r = c.post("/api/v1/broadcasts", json=README_BODY)
            assert r.status_code == 201, r.text
            broadcast_id = r.json()["id"]
            reach = _wait(
                "every speaker played",
                lambda: (f := c.get(f"/api/v1/broadcasts/{broadcast_id}/reach").json())["played"]
                == villages
                and f,
                PLAY_TIMEOUT_S, proc, log,
            )  # fmt: skip
        assert reach["targeted"] == villages
        assert reach["reach_rate"] == 1.0
        assert (reach["failed"], reach["no_report"]) == (0, 0)
        assert {a["code"][:9] for a in reach["by_area"]} == {LUCHENG[:9]}
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        try:  # anything left of the process group: the simulator, had serve not stopped it
            os.killpg(proc.pid, signal.SIGKILL)
            leftover = True
        except ProcessLookupError:
            leftover = False
    # uvicorn shuts down cleanly on SIGTERM, then ends by the same signal.
    assert proc.returncode in (0, -signal.SIGTERM), log.read_text()[-4000:]
    assert "Application shutdown complete" in log.read_text()
    assert not leftover, "the simulated speakers outlived `cunxiang serve`"


@pytest.mark.parametrize("taken", ["mqtt", "http"])
def test_serve_demo_on_a_taken_port_says_so_and_changes_nothing(tmp_path, taken):
    port, mqtt_port = free_port(), free_port()
    data_dir = tmp_path / "var"
    with socket.socket() as holder:  # another program (say Mosquitto) on the port
        holder.bind(("127.0.0.1", mqtt_port if taken == "mqtt" else port))
        holder.listen(1)
        done = subprocess.run(
            [*_cunxiang(), "serve", "--demo", "--port", str(port)],
            cwd=tmp_path, env=_env(data_dir, mqtt_port), capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    output = done.stdout + done.stderr
    assert done.returncode == 2, output
    assert "Traceback" not in output
    if taken == "mqtt":
        assert f"port {mqtt_port} on 127.0.0.1 is already in use" in done.stderr
        assert f"CUNXIANG_MQTT_URL=mqtt://127.0.0.1:{mqtt_port}" in done.stderr
        assert "CUNXIANG_MQTT_PORT" in done.stderr
    else:
        assert f"port {port} on 127.0.0.1 is already in use" in done.stderr
        assert "--port" in done.stderr
    # No admin password was printed to be lost, no database made: a rerun starts from scratch.
    assert "password" not in done.stdout
    assert not (data_dir / "cunxiang.db").exists()


def test_demo_admin_password_follows_the_environment(tmp_path, capsys):
    def login_ok(settings: Settings, password: str) -> bool:
        engine = make_engine(settings.database_url)
        with session_scope(make_session_factory(engine)) as s:
            ok = users.authenticate(session=s, username="admin", password=password) is not None
        engine.dispose()
        return ok

    first = Settings(data_dir=tmp_path / "var", admin_password="first-password")
    cli._load_demo(first, 0)
    assert "created user admin" in capsys.readouterr().out
    assert login_ok(first, "first-password")

    # The printed password is lost: restart with CUNXIANG_ADMIN_PASSWORD set.
    second = Settings(data_dir=tmp_path / "var", admin_password="second-password")
    cli._load_demo(second, 0)
    assert "password is now CUNXIANG_ADMIN_PASSWORD" in capsys.readouterr().out
    assert login_ok(second, "second-password") and not login_ok(second, "first-password")

    # Without it, a rerun leaves the password alone and says how to reset it.
    cli._load_demo(Settings(data_dir=tmp_path / "var"), 0)
    assert "cunxiang users passwd --username admin" in capsys.readouterr().out
    assert login_ok(second, "second-password")


def test_users_passwd_resets_a_lost_password(tmp_path, monkeypatch, capsys):
    data_dir = str(tmp_path / "var")
    assert cli.main(["users", "add", "--username", "admin", "--role", "admin", "--password", "lost-password",
                     "--data-dir", data_dir]) == 0  # fmt: skip
    # Password on stdin, as in `echo NEW | cunxiang users passwd --username admin`.
    monkeypatch.setattr(sys, "stdin", io.StringIO("new-password-9\n"))
    assert cli.main(["users", "passwd", "--username", "admin", "--data-dir", data_dir]) == 0
    assert "password of user admin changed" in capsys.readouterr().out
    settings = Settings(data_dir=tmp_path / "var")
    engine = make_engine(settings.database_url)
    with session_scope(make_session_factory(engine)) as s:
        assert users.authenticate(session=s, username="admin", password="new-password-9") is not None
        assert users.authenticate(session=s, username="admin", password="lost-password") is None
    engine.dispose()

    assert cli.main(["users", "passwd", "--username", "nobody", "--password", "whatever-1",
                     "--data-dir", data_dir]) == 1  # fmt: skip
    assert "no user 'nobody'" in capsys.readouterr().err
