"""Prefetch (断网续播): scheduled airings reach the speakers well before they start, then air on time."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

from core.db import make_engine, make_session_factory, session_scope
from devices import service as device_service
from devices import simulate
from tests.api.conftest import ADMIN, make_settings, seed
from tests.live import LiveServer, LiveSpeakers, free_port, server_keys

VILLAGE = "341225100201"


def _reach_when(client, broadcast_id: int, figure: str, value: int, *, timeout: float) -> dict:
    """Poll the broadcast's reach until `figure` is `value`; the reach then, or fail with it."""
    deadline = time.monotonic() + timeout
    while True:
        reach = client.get(f"/api/v1/broadcasts/{broadcast_id}/reach").json()
        if reach[figure] == value or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert reach[figure] == value, reach
    return reach


def test_prefetched_airing_is_on_the_speakers_long_before_it_starts(
    tmp_path, sqlite_url, embedded_broker_url
):
    seed(sqlite_url)
    engine = make_engine(sqlite_url)
    with session_scope(make_session_factory(engine)) as s:
        for n in (1, 2):
            device_service.register(session=s, device_id=f"pf-{n}", name=f"pf-{n}", area_code=VILLAGE)
    engine.dispose()
    port = free_port()
    settings = make_settings(tmp_path, sqlite_url, embedded_broker_url, port, prefetch_s=30.0)
    specs = [simulate.SpeakerSpec(device_id=f"pf-{n}", area_code=VILLAGE) for n in (1, 2)]
    with (
        LiveServer(settings, port) as server,
        LiveSpeakers(
            specs, embedded_broker_url, tmp_path / "cache", trusted_keys=server_keys(settings)
        ) as sp,
        server.client(server.login(*ADMIN)) as c,
    ):
        start = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=15)
        r = c.post(
            "/api/v1/broadcasts",
            json={"title": "预取", "text": "请注意。", "areas": [VILLAGE], "start_at": start.isoformat()},
        )
        assert r.status_code == 201, r.text
        bid = r.json()["id"]
        # Without prefetch the command would leave 1 s (lead time) before start; with it, at once.
        # Polled rather than slept: synthesis and dispatch take longer on a busy machine.
        _reach_when(c, bid, "received", 2, timeout=10)  # both hold it, waiting for start_at
        assert datetime.now(UTC) < start - timedelta(seconds=4), "held only shortly before start"
        occ = c.get(f"/api/v1/broadcasts/{bid}/occurrences").json()["items"][0]
        assert occ["status"] == "dispatched"

        _reach_when(c, bid, "played", 2, timeout=30)
        played = c.get(f"/api/v1/broadcasts/{bid}/deliveries").json()["items"]
        for d in played:
            began = datetime.fromisoformat(d["playing_at"].replace("Z", "+00:00"))
            assert abs((began - start).total_seconds()) < 1.0, d  # aired at start_at, not when received
        assert [o for o, _ in sp.sim.outcomes("pf-1")] == [occ["id"]]
