"""Speech test fixtures. No test reaches the real edge service (see tests/conftest.py).

Tests of the online engine start the local fake service (tests/tts/fake_edge.py) and point the
real edge-tts client at it with the ``fake_edge`` fixture.
"""

from __future__ import annotations

from collections.abc import Iterator

import edge_tts.communicate
import edge_tts.voices
import pytest

from tests.tts.fake_edge import FakeEdge


@pytest.fixture
def fake_edge(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeEdge]:
    """A local fake edge service, with the real edge-tts client pointed at it."""
    with FakeEdge() as fake:
        monkeypatch.setattr(edge_tts.communicate, "WSS_URL", fake.wss_url)
        monkeypatch.setattr(edge_tts.voices, "VOICE_LIST", fake.voices_url)
        yield fake
