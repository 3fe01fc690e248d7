"""Speech tests never reach the real edge service: by default edge points at a closed local port.

Tests of the online engine start the local fake service (tests/tts/fake_edge.py) and point the
real edge-tts client at it with the ``fake_edge`` fixture.
"""

from __future__ import annotations

from collections.abc import Iterator

import edge_tts.communicate
import edge_tts.voices
import pytest

from tests.live import free_port
from tests.tts.fake_edge import FakeEdge
from tts import edge, voices


@pytest.fixture(autouse=True)
def _edge_offline(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    closed = free_port()  # nothing listens there: connection refused at once, like no network
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


@pytest.fixture
def fake_edge(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeEdge]:
    """A local fake edge service, with the real edge-tts client pointed at it."""
    with FakeEdge() as fake:
        monkeypatch.setattr(edge_tts.communicate, "WSS_URL", fake.wss_url)
        monkeypatch.setattr(edge_tts.voices, "VOICE_LIST", fake.voices_url)
        yield fake
