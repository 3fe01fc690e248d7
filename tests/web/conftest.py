"""A live server with the demo county, a small speaker fleet, several users, and a headless
chromium (Debian's, driven by Playwright) with a desktop and a phone-sized page."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import func, select

from core import regions, users
from core.db import make_engine, make_session_factory, session_scope
from core.models import Region, RegionLevel, Role
from devices import service as device_service
from tests.api.conftest import make_settings, seed
from tests.live import LiveServer, free_port

# Debian's package installs chromium; Ubuntu's chromium-browser (scripts/install.sh tries both).
CHROMIUM = (
    os.environ.get("CUNXIANG_CHROMIUM")
    or shutil.which("chromium")
    or shutil.which("chromium-browser")
    or "/usr/bin/chromium"
)
ARTIFACTS = Path(__file__).parent / "artifacts"
PASSWORD = "web-password-1"
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}


@dataclass
class Fleet:
    """The hand-countable scenario: 2 speakers per village in `target`, 1 in `other`."""

    target: str
    other: str
    devices: dict[str, str]  # device id -> village code
    population: dict[str, int]  # village code -> population
    names: dict[str, str]  # code -> name


def make_fleet(database_url: str) -> Fleet:
    engine = make_engine(database_url)
    with session_scope(make_session_factory(engine)) as s:
        counts = s.execute(
            select(Region.parent_code, func.count())
            .where(Region.level == RegionLevel.village)
            .group_by(Region.parent_code)
            .order_by(func.count(), Region.parent_code)
        ).all()
        target, other = counts[0][0], counts[1][0]
        devices: dict[str, str] = {}
        population: dict[str, int] = {}
        names = dict(s.execute(select(Region.code, Region.name)).all())
        for township, per_village in ((target, 2), (other, 1)):
            for village in regions.descendant_villages(session=s, code=township):
                population[village.code] = village.population
                for n in range(1, per_village + 1):
                    dev = f"{village.code}-{n}"
                    device_service.register(
                        session=s, device_id=dev, name=f"{village.name}{n}号", area_code=village.code
                    )
                    devices[dev] = village.code
        for username, role, area in (
            ("staff1", Role.staff, target),
            ("approver1", Role.approver, target),
            ("otherstaff", Role.staff, other),
            ("operator1", Role.operator, target),
        ):
            users.create_user(session=s, username=username, password=PASSWORD, role=role, area_code=area)
    engine.dispose()
    return Fleet(target, other, devices, population, names)


@pytest.fixture
def sqlite_database_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'web.db'}"


@pytest.fixture
def console(tmp_path, sqlite_database_url, embedded_broker_url):
    """(server, fleet): the real app on a free port over SQLite and the embedded broker."""
    seed(sqlite_database_url)
    fleet = make_fleet(sqlite_database_url)
    port = free_port()
    settings = make_settings(tmp_path, sqlite_database_url, embedded_broker_url, port)
    with LiveServer(settings, port) as server:
        yield server, fleet


@pytest.fixture(scope="session")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.fail(
            f"{CHROMIUM} not found: apt-get install chromium (Ubuntu: chromium-browser) fonts-wqy-microhei "
            "(scripts/install.sh --test), or set CUNXIANG_CHROMIUM"
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        yield b
        b.close()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    """Screenshots land here (gitignored); the path is printed at the end of the run."""
    if ARTIFACTS.exists():
        shutil.rmtree(ARTIFACTS)
    ARTIFACTS.mkdir(parents=True)
    yield ARTIFACTS
    print(f"\nscreenshots: {ARTIFACTS}")


def new_page(browser, base_url: str, viewport=DESKTOP):
    context = browser.new_context(base_url=base_url, viewport=viewport, locale="zh-CN", accept_downloads=True)
    context.set_default_timeout(20_000)
    return context, context.new_page()


def login(page, username: str, password: str = PASSWORD) -> None:
    page.goto("/login")
    page.fill('input[name="username"]', username)
    page.fill('input[name="password"]', password)
    page.click('button[type="submit"]')
    page.wait_for_load_state()
