"""cunxiang_shared: the facts the server and the speaker agent must agree on, kept once."""

from __future__ import annotations

import ast
import typing
from pathlib import Path

import pytest

from core import regions
from core.errors import InvalidInput
from core.models import RegionLevel
from cunxiang_shared import areas, protocol, states
from cunxiang_shared.broker import BrokerAddress, parse_broker_url
from devices import models as device_models
from devices import transport

REPO = Path(__file__).resolve().parents[2]
SERVER_PACKAGES = {"core", "devices", "scheduler", "api", "tts", "playlists", "reports"}
COUNTY, TOWN, VILLAGE = "341225000000", "341225100000", "341225100201"


# ---------------------------------------------------------------- broker URLs


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("mqtt://127.0.0.1", BrokerAddress("127.0.0.1", 1883)),
        ("mqtt://broker.example:1884/", BrokerAddress("broker.example", 1884)),
        ("mqtts://broker.example", BrokerAddress("broker.example", 8883, tls=True)),
        ("mqtt://sp%40k:p%3Ass@[::1]:1999", BrokerAddress("::1", 1999, "sp@k", "p:ss")),
    ],
)
def test_broker_url_accepted(url: str, expected: BrokerAddress) -> None:
    assert parse_broker_url(url) == expected
    parts = (expected.host, expected.port, expected.username, expected.password)
    assert transport.parse_broker_url(url) == parts


@pytest.mark.parametrize(
    "url",
    [
        "tcp://127.0.0.1:1883",
        "http://127.0.0.1:1883",
        "127.0.0.1:1883",
        "mqtt://",
        "mqtt://:1883",
        "mqtt://host:70000",
        "mqtt://host:0",
        "mqtt://host:port",
        "mqtt://host:1883/cx",
        "mqtt://host:1883?tls=1",
        "mqtt://host:1883#x",
    ],
)
def test_broker_url_refused_by_server_and_agent_alike(url: str) -> None:
    with pytest.raises(ValueError):
        parse_broker_url(url)
    with pytest.raises(ValueError):
        transport.parse_broker_url(url)


# ---------------------------------------------------------------- area codes


@pytest.mark.parametrize(
    ("code", "level", "parent", "prefix"),
    [
        (COUNTY, areas.AreaLevel.county, None, "341225"),
        (TOWN, areas.AreaLevel.township, COUNTY, "341225100"),
        (VILLAGE, areas.AreaLevel.village, TOWN, VILLAGE),
    ],
)
def test_area_code_structure(code: str, level: areas.AreaLevel, parent: str | None, prefix: str) -> None:
    assert areas.validate(code) is level and areas.level(code) is level
    assert areas.parent(code) == parent
    assert areas.prefix(code) == prefix
    assert areas.chain(code)[-1] == code
    assert regions.validate_code(code) is RegionLevel(level)
    assert regions.parent_of(code) == parent and regions.code_prefix(code) == prefix


def test_area_chain_is_one_function_for_server_and_speaker() -> None:
    assert areas.chain(VILLAGE) == [COUNTY, TOWN, VILLAGE]
    assert protocol.area_chain(VILLAGE) == regions.chain(VILLAGE) == areas.chain(VILLAGE)
    assert protocol.subscriptions("s1", TOWN) == [
        protocol.area_command_topic(COUNTY),
        protocol.area_command_topic(TOWN),
        protocol.device_topic("s1", "cmd"),
    ]
    assert areas.is_under(VILLAGE, COUNTY) and areas.is_under(VILLAGE, VILLAGE)
    assert not areas.is_under(COUNTY, TOWN) and not areas.is_under("341225101201", TOWN)


@pytest.mark.parametrize(
    "code", ["3412251002", "34122510020a", "000000100201", "341225000201", "３４１２２５１００２０１"]
)
def test_bad_area_codes(code: str) -> None:
    with pytest.raises(areas.InvalidAreaCode):
        areas.validate(code)
    with pytest.raises(protocol.ProtocolError):
        protocol.area_chain(code)
    with pytest.raises(regions.InvalidRegionCode) as caught:
        regions.is_under(code, COUNTY)
    # the server's error family, with the field it concerns (still a ValueError for old callers)
    assert isinstance(caught.value, InvalidInput) and isinstance(caught.value, ValueError)
    assert caught.value.field == "area" and "area code" in caught.value.message


# ---------------------------------------------------------------- delivery states


def test_one_set_of_delivery_states() -> None:
    assert device_models.DeliveryState is states.DeliveryState
    assert device_models.FINAL_STATES is states.FINAL_STATES
    assert set(states.FINAL_STATES) == {"played", "failed", "skipped", "preempted", "no_report"}
    reported = set(typing.get_args(states.ReportState))
    assert reported <= set(states.DeliveryState)
    assert {"pending", "no_report"}.isdisjoint(reported)  # only the server decides those


# ---------------------------------------------------------------- no server inside


@pytest.mark.parametrize("package", ["shared/cunxiang_shared", "agent/cunxiang_agent"])
def test_shared_and_agent_never_import_the_server(package: str) -> None:
    imported: set[str] = set()
    for path in (REPO / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                imported.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                imported.add(node.module.split(".")[0])
    assert imported & SERVER_PACKAGES == set()
    if package.startswith("shared"):
        assert "cunxiang_agent" not in imported
