"""Shared fixtures: real databases (tests/fixtures_db.py) and real brokers (tests/fixtures_mqtt.py).

No test reaches the real edge-tts service: the default engine chain is edge then espeak, so by
default edge points at a closed local port (refused at once, as with no network) and every
synthesis falls back to espeak-ng. Tests of the online engine use the local fake service
(tests/tts/fake_edge.py, fixture ``fake_edge``).
"""

from __future__ import annotations

from collections.abc import Iterator

import edge_tts.communicate
import edge_tts.voices
import pytest

from tests.live import free_port
from tts import edge, voices

pytest_plugins = ["tests.fixtures_db", "tests.fixtures_mqtt"]


@pytest.fixture(autouse=True)
def _edge_offline(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    closed = free_port()  # nothing listens there
    monkeypatch.setattr(
        edge_tts.communicate, "WSS_URL", f"ws://127.0.0.1:{closed}/edge/v1?TrustedClientToken=x"
    )
    monkeypatch.setattr(
        edge_tts.voices, "VOICE_LIST", f"http://127.0.0.1:{closed}/voices/list?trustedclienttoken=x"
    )
    edge.reset_health()
    voices.reset()
    yield
    edge.reset_health()
    voices.reset()


# Tests that take both a database and a broker run on two of the four pairs: SQLite with the
# embedded broker (the demo's set-up) and PostgreSQL with Mosquitto (production's). Each backend
# and each broker is still exercised by every such test; the crossed pairs added ~2 minutes to the
# suite and no failure of their own.
_PAIRS = {("sqlite", "embedded"), ("postgresql", "mosquitto")}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    keep, drop = [], []
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        pair = (params.get("database_url"), params.get("broker_url"))
        (drop if None not in pair and pair not in _PAIRS else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
