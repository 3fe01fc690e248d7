"""`cunxiang keys` and `cunxiang mosquitto` as an operator runs them."""

from __future__ import annotations

import csv
import io
import os
import stat

from api.cli import main
from core import regions
from core.db import make_engine, make_session_factory, session_scope
from cunxiang_shared.signing import read_public_keys
from devices import credentials
from devices import service as device_service
from devices.models import Device


def test_keys_generate_show_rotate(tmp_path, capsys) -> None:
    data = str(tmp_path / "var")
    assert main(["keys", "show", "--data-dir", data]) == 0
    assert "ed25519:" not in capsys.readouterr().out  # nothing yet
    assert main(["keys", "generate", "--data-dir", data]) == 0
    first = capsys.readouterr().out
    assert len(read_public_keys(first.splitlines())) == 1
    assert main(["keys", "rotate", "--stage", "--data-dir", data]) == 0
    assert len(read_public_keys(capsys.readouterr().out.splitlines())) == 2
    assert main(["keys", "rotate", "--stage", "--data-dir", data]) == 1  # one staged key at a time
    assert "already staged" in capsys.readouterr().err
    assert main(["keys", "rotate", "--data-dir", data]) == 0
    out = capsys.readouterr().out
    assert "# current" in out and "# previous" in out and read_public_keys(first.splitlines())[0] is not None
    assert stat.S_IMODE(os.stat(tmp_path / "var" / "keys" / "command-signing.pem").st_mode) == 0o600


def test_mosquitto_credentials_and_files(tmp_path, capsys, monkeypatch, sqlite_url) -> None:
    monkeypatch.setenv("CUNXIANG_DATABASE_URL", sqlite_url)
    monkeypatch.setenv("CUNXIANG_MQTT_URL", "mqtt://cx-server:s3cret@127.0.0.1:18830")
    data = str(tmp_path / "var")
    assert main(["db", "upgrade", "--data-dir", data]) == 0
    engine = make_engine(sqlite_url)
    factory = make_session_factory(engine)
    with session_scope(factory) as s:
        regions.load_demo(session=s)
        for n in (1, 2):
            device_service.register(session=s, device_id=f"m-{n}", name="x", area_code="341225100201")
    capsys.readouterr()
    assert main(["mosquitto", "credentials", "--missing", "--data-dir", data]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [r["device_id"] for r in rows] == ["m-1", "m-2"]
    with factory() as s:
        stored = s.get(Device, "m-1").secret_hash
        assert stored.startswith("$7$") and rows[0]["password"] not in stored
        assert credentials.verify_password(rows[0]["password"], stored)
    assert main(["mosquitto", "credentials", "nope", "--data-dir", data]) == 1
    out = tmp_path / "mq"
    assert main(["mosquitto", "files", "--out", str(out), "--data-dir", data]) == 0
    passwd = (out / "cunxiang.passwd").read_text().splitlines()
    assert [line.split(":")[0] for line in passwd] == ["cx-server", "m-1", "m-2"]
    assert credentials.verify_password("s3cret", passwd[0].split(":", 1)[1])
    acl = (out / "cunxiang.acl").read_text()
    assert "user m-1\ntopic read cx/v1/area/341225000000/cmd" in acl
    assert "topic write cx/v1/dev/m-2/online" in acl and "user cx-server\ntopic readwrite cx/v1/#" in acl
    assert "use_username_as_clientid true" in (out / "cunxiang.conf").read_text()
    engine.dispose()
