"""End to end: text in over HTTP, speech, schedule, MQTT to simulated speakers, reports, reach.

Everything is real: uvicorn, SQLite/PostgreSQL, the embedded broker and Mosquitto, espeak-ng and
ffmpeg, the speaker agent code downloading audio over HTTP and checking its sha256.
"""

from __future__ import annotations

import time
from collections import defaultdict

import pytest
from sqlalchemy import func, select

from core import regions
from core.db import make_engine, make_session_factory, session_scope
from core.models import Region, RegionLevel
from devices import service as device_service
from devices import simulate
from tests.api.conftest import ADMIN, make_settings, seed
from tests.live import LiveServer, LiveSpeakers, free_port, server_keys

pytestmark = pytest.mark.slow

NOTICE = "各位村民请注意，明天上午停水。"


def _fleet(database_url: str) -> tuple[str, str, dict[str, str], dict[str, int]]:
    """Register 2 speakers per village in the smallest township and 1 in its neighbour."""
    engine = make_engine(database_url)
    with session_scope(make_session_factory(engine)) as s:
        counts = s.execute(
            select(Region.parent_code, func.count())
            .where(Region.level == RegionLevel.village)
            .group_by(Region.parent_code)
            .order_by(func.count(), Region.parent_code)
        ).all()
        target, other = counts[0][0], counts[1][0]
        areas: dict[str, str] = {}
        population: dict[str, int] = {}
        for township, per_village in ((target, 2), (other, 1)):
            for village in regions.descendant_villages(session=s, code=township):
                population[village.code] = village.population
                for n in range(1, per_village + 1):
                    dev = f"{village.code}-{n}"
                    device_service.register(session=s, device_id=dev, name=dev, area_code=village.code)
                    areas[dev] = village.code
    engine.dispose()
    return target, other, areas, population


def _wait_final(client, broadcast_id: int, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        reach = client.get(f"/api/v1/broadcasts/{broadcast_id}/reach").json()
        if reach["final"]:
            return reach
        time.sleep(0.25)
    raise AssertionError(f"reach not final after {timeout} s: {reach}")


def _run(tmp_path, database_url, broker_url, behaviour_of) -> tuple[dict, dict, str, str, dict, dict]:
    seed(database_url)
    target, other, areas, population = _fleet(database_url)
    specs = [
        simulate.SpeakerSpec(
            device_id=d, area_code=a, behaviour=behaviour_of(d) if a.startswith(target[:9]) else "ok"
        )
        for d, a in sorted(areas.items())
    ]
    port = free_port()
    settings = make_settings(tmp_path, database_url, broker_url, port)
    with (
        LiveServer(settings, port) as server,
        LiveSpeakers(specs, broker_url, tmp_path / "speaker-cache", trusted_keys=server_keys(settings)) as sp,
    ):
        token = server.login(*ADMIN)
        with server.client(token) as c:
            r = c.post("/api/v1/broadcasts", json={"title": "停水通知", "text": NOTICE, "areas": [target]})
            assert r.status_code == 201, r.text
            broadcast = r.json()
            reach = _wait_final(c, broadcast["id"])
            deliveries = c.get(
                f"/api/v1/broadcasts/{broadcast['id']}/deliveries", params={"limit": 1000}
            ).json()
        outcomes = sp.sim.all_outcomes()
    occ = broadcast["occurrences"][0]["id"]
    return (
        reach,
        outcomes,
        target,
        other,
        {d["device_id"]: d for d in deliveries["items"]},
        {
            "occ": occ,
            "areas": areas,
            "population": population,
        },
    )


def test_township_broadcast_reaches_every_speaker_there_and_none_elsewhere(
    tmp_path, database_url, broker_url
):
    reach, outcomes, target, other, deliveries, ctx = _run(tmp_path, database_url, broker_url, lambda d: "ok")
    in_target = [d for d, a in ctx["areas"].items() if a.startswith(target[:9])]
    elsewhere = [d for d in ctx["areas"] if d not in in_target]

    assert reach["targeted"] == len(in_target) == len(deliveries)
    assert reach["played"] == len(in_target)
    assert reach["reach_rate"] == 1.0
    assert (reach["failed"], reach["no_report"], reach["pending"]) == (0, 0, 0)
    villages = {ctx["areas"][d] for d in in_target}
    assert (
        reach["population_reached"]
        == reach["population_targeted"]
        == sum(ctx["population"][v] for v in villages)
    )
    assert [(a["code"], a["played"]) for a in reach["by_area"]] == sorted((v, 2) for v in villages)

    for device in in_target:
        assert outcomes[device] == [(ctx["occ"], "played")], device
        assert deliveries[device]["seconds_played"] > 1
    for device in elsewhere:
        assert outcomes[device] == [], f"{device} outside {target} heard the broadcast"


def test_failing_and_silent_speakers_are_counted_exactly(tmp_path, database_url, broker_url):
    behaviours: dict[str, str] = {}

    def behaviour_of(device_id: str) -> str:
        # Village by village: the first speaker of every 3rd village fails, of every 4th goes silent.
        village_index = int(device_id[9:12]) - 201
        first = device_id.endswith("-1")
        b = (
            "fail"
            if first and village_index % 3 == 0
            else "silent"
            if first and village_index % 4 == 1
            else "ok"
        )
        behaviours[device_id] = b
        return b

    reach, outcomes, target, _other, deliveries, ctx = _run(tmp_path, database_url, broker_url, behaviour_of)
    in_target = {d: b for d, b in behaviours.items() if ctx["areas"][d].startswith(target[:9])}
    expected = defaultdict(int)
    for b in in_target.values():
        expected[{"ok": "played", "fail": "failed", "silent": "no_report"}[b]] += 1
    assert expected["failed"] > 0 and expected["no_report"] > 0

    assert reach["targeted"] == len(in_target)
    assert (reach["played"], reach["failed"], reach["no_report"]) == (
        expected["played"], expected["failed"], expected["no_report"],
    )  # fmt: skip
    assert reach["reach_rate"] == round(expected["played"] / len(in_target), 4)
    for device, b in in_target.items():
        want = {"ok": "played", "fail": "failed", "silent": "no_report"}[b]
        assert deliveries[device]["state"] == want, device
        if b == "fail":
            assert "simulated playback failure" in deliveries[device]["error"]
    # every village still has a speaker that played (the second one), so all its people were reached
    assert reach["population_reached"] == reach["population_targeted"]
