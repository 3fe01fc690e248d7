"""A real server (uvicorn on a free port) over a real database and broker, with the demo county."""

from __future__ import annotations

import pytest

from api import migrate
from core import regions, users
from core.db import make_engine, make_session_factory, session_scope
from core.models import Role
from core.settings import Settings
from tests.live import LiveServer, free_port

ADMIN = ("admin", "admin-password")
STAFF = ("luchengstaff", "staff-password")  # staff of 鹿城镇 only
LUCHENG = "341225100000"


def make_settings(tmp_path, database_url: str, broker_url: str, port: int, **scheduler) -> Settings:
    return Settings(
        data_dir=tmp_path / "var",
        public_url=f"http://127.0.0.1:{port}",
        database={"url": database_url},
        mqtt={"url": broker_url},
        # No quiet hours unless a test sets them: the suite must pass at any time of day.
        scheduler={
            "lead_time_s": 1.0,
            "late_start_s": 2.0,
            "report_grace_s": 1.0,
            "quiet_start": "00:00",
            "quiet_end": "00:00",
            **scheduler,
        },  # fmt: skip
    )


def seed(database_url: str) -> None:
    migrate.upgrade(database_url)
    engine = make_engine(database_url)
    with session_scope(make_session_factory(engine)) as s:
        regions.load_demo(session=s)
        users.create_user(session=s, username=ADMIN[0], password=ADMIN[1], role=Role.admin)
        users.create_user(session=s, username=STAFF[0], password=STAFF[1], role=Role.staff, area_code=LUCHENG)
    engine.dispose()


@pytest.fixture
def server(tmp_path, database_url, embedded_broker_url):
    seed(database_url)
    port = free_port()
    with LiveServer(make_settings(tmp_path, database_url, embedded_broker_url, port), port) as live:
        yield live
