"""End to end: approval, preemption, cancel and a server restart mid-schedule.

A real server (uvicorn, SQLite, the scheduler) and real simulated speakers over a real broker;
the speakers download the audio, wait for start_at, and decide preemption themselves.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from core import users
from core.db import make_engine, make_session_factory, session_scope
from core.models import Role
from devices import service as device_service
from devices import simulate
from tests.api.conftest import ADMIN, LUCHENG, make_settings, seed
from tests.live import LiveServer, LiveSpeakers, free_port, server_keys

pytestmark = pytest.mark.slow

VILLAGE = "341225100201"
NEIGHBOUR = "341225100202"  # another village of the same township
APPROVER = ("lucheng_ap", "approver-password")
COUNTY_APPROVER = ("county_ap", "approver-password")
SH = ZoneInfo("Asia/Shanghai")
SHORT = "请注意。"
# About 15 seconds of speech: long enough to be interrupted.
LONG = (
    "各位村民请注意，今天下午三点在村委会召开村民大会，"
    "讨论今年的道路修建和医保缴费事宜，请每户派一名代表准时参加。"
)


def _world(database_url: str) -> dict[str, str]:
    """Demo county, accounts, and speakers: 2 in VILLAGE, 1 in NEIGHBOUR."""
    seed(database_url)
    engine = make_engine(database_url)
    areas = {f"{VILLAGE}-1": VILLAGE, f"{VILLAGE}-2": VILLAGE, f"{NEIGHBOUR}-1": NEIGHBOUR}
    with session_scope(make_session_factory(engine)) as s:
        users.create_user(
            session=s, username=APPROVER[0], password=APPROVER[1], role=Role.approver, area_code=LUCHENG
        )
        users.create_user(
            session=s, username=COUNTY_APPROVER[0], password=COUNTY_APPROVER[1], role=Role.approver
        )
        for device, area in areas.items():
            device_service.register(session=s, device_id=device, name=device, area_code=area)
    engine.dispose()
    return areas


def _settings(tmp_path, database_url, broker_url, port, **scheduler):
    settings = make_settings(tmp_path, database_url, broker_url, port, **scheduler)
    return settings.model_copy(
        update={"tts": settings.tts.model_copy(update={"engine": "espeak", "fallback": []})}
    )


def _wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def _states(client, broadcast_id: int) -> dict[str, str]:
    page = client.get(f"/api/v1/broadcasts/{broadcast_id}/deliveries", params={"limit": 1000}).json()
    return {d["device_id"]: d["state"] for d in page["items"]}


def _final(client, broadcast_id: int, timeout: float = 60) -> dict:
    return _wait(
        lambda: (r := client.get(f"/api/v1/broadcasts/{broadcast_id}/reach").json())["final"] and r,
        timeout,
        f"broadcast {broadcast_id} to be final",
    )


def test_emergency_interrupts_routine_needs_two_people_and_cancel_stops_speakers(
    tmp_path, sqlite_url, broker_url
):
    areas = _world(sqlite_url)
    specs = [simulate.SpeakerSpec(device_id=d, area_code=a) for d, a in sorted(areas.items())]
    port = free_port()
    settings = _settings(tmp_path, sqlite_url, broker_url, port)
    village_speakers = sorted(d for d, a in areas.items() if a == VILLAGE)
    with (
        LiveServer(settings, port) as server,
        LiveSpeakers(specs, broker_url, tmp_path / "speaker-cache", trusted_keys=server_keys(settings)) as sp,
        server.client(server.login(*APPROVER)) as approver,
        server.client(server.login(*COUNTY_APPROVER)) as county,
    ):
        routine = approver.post(
            "/api/v1/broadcasts", json={"title": "村民大会", "text": LONG, "areas": [VILLAGE]}
        )
        assert routine.status_code == 201, routine.text
        routine = routine.json()
        assert routine["status"] == "scheduled" and routine["priority"] == "village"  # own routine: approved
        _wait(
            lambda: set(_states(approver, routine["id"]).values()) == {"playing"}, 30, "routine to be playing"
        )

        emergency = approver.post(
            "/api/v1/broadcasts",
            json={"title": "暴雨红色预警", "text": SHORT, "areas": [LUCHENG], "priority": "emergency_red"},
        ).json()
        assert (
            emergency["status"] == "submitted" and emergency["occurrences"] == []
        )  # one person is not enough
        own = approver.post(f"/api/v1/broadcasts/{emergency['id']}/approve", json={"comment": "自己批"})
        assert own.status_code == 403 and "second person" in own.json()["detail"]
        approved = county.post(f"/api/v1/broadcasts/{emergency['id']}/approve", json={"comment": "同意播出"})
        assert approved.status_code == 200 and approved.json()["status"] == "scheduled", approved.text

        reach = _final(approver, emergency["id"])
        assert (reach["targeted"], reach["played"]) == (3, 3)
        routine_states = _states(approver, routine["id"])
        assert routine_states == dict.fromkeys(village_speakers, "preempted")
        emergency_occ = approved.json()["occurrences"][0]["id"]
        routine_occ = routine["occurrences"][0]["id"]
        outcomes = sp.sim.all_outcomes()
        for device in village_speakers:
            assert outcomes[device] == [(routine_occ, "preempted"), (emergency_occ, "played")]
        assert outcomes[f"{NEIGHBOUR}-1"] == [(emergency_occ, "played")]
        deliveries = approver.get(f"/api/v1/broadcasts/{routine['id']}/deliveries").json()["items"]
        assert all(f"preempted by occurrence {emergency_occ}" in d["error"] for d in deliveries)

        history = approver.get(f"/api/v1/broadcasts/{emergency['id']}/history").json()
        assert [h["action"] for h in history] == ["created", "submitted", "approved"]
        assert history[-1]["comment"] == "同意播出"

        # cancel while it plays: the speakers stop at once
        again = approver.post(
            "/api/v1/broadcasts", json={"title": "重播", "text": LONG, "areas": [VILLAGE]}
        ).json()
        _wait(lambda: set(_states(approver, again["id"]).values()) == {"playing"}, 30, "replay to be playing")
        cancelled = approver.post(f"/api/v1/broadcasts/{again['id']}/cancel", json={"comment": "播错了"})
        assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
        states = _wait(
            lambda: (s := _states(approver, again["id"])) and "playing" not in s.values() and s, 10, "stop"
        )
        assert states == dict.fromkeys(village_speakers, "failed")
        items = approver.get(f"/api/v1/broadcasts/{again['id']}/deliveries").json()["items"]
        assert all(d["error"] == "stopped by server" and d["seconds_played"] < 10 for d in items)


def test_restart_mid_schedule_loses_nothing_airs_nothing_twice_and_reports_the_missed(
    tmp_path, sqlite_url, embedded_broker_url
):
    areas = _world(sqlite_url)
    specs = [simulate.SpeakerSpec(device_id=d, area_code=a) for d, a in sorted(areas.items()) if a == VILLAGE]
    port = free_port()
    # late start 8 s: an airing up to 8 s overdue when the server comes back still airs, later ones are missed
    settings = _settings(tmp_path, sqlite_url, embedded_broker_url, port, late_start_s=8.0)
    with LiveSpeakers(
        specs, embedded_broker_url, tmp_path / "speaker-cache", trusted_keys=server_keys(settings)
    ) as sp:
        with LiveServer(settings, port) as server, server.client(server.login(*ADMIN)) as c:
            t0 = datetime.now(SH).replace(microsecond=0) + timedelta(seconds=2)
            # a: airs before the stop; b: falls while the server is down, > 8 s before it is back;
            # c: falls while down, < 8 s before it is back; d: after the restart
            plan = {"a": 4, "b": 10, "c": 17, "d": 28}
            times = {k: t0 + timedelta(seconds=s) for k, s in plan.items()}
            rule = {
                "freq": "daily",
                "times": [t.strftime("%H:%M:%S") for t in times.values()],
                "start_date": t0.date().isoformat(),
                "end_date": (t0.date() + timedelta(days=1)).isoformat(),
            }
            r = c.post(
                "/api/v1/broadcasts",
                json={"title": "定时广播", "text": SHORT, "areas": [VILLAGE], "recurrence": rule},
            )
            assert r.status_code == 201, r.text
            broadcast = r.json()
            occ = {
                o["start_at"]: o["id"]
                for o in c.get(f"/api/v1/broadcasts/{broadcast['id']}/occurrences").json()["items"]
            }
            ids = {
                k: occ[t.astimezone(ZoneInfo("UTC")).isoformat().replace("+00:00", "Z")]
                for k, t in times.items()
            }
            _wait(lambda: all(sp.sim.outcomes(d) for d in sp.sim.speakers), 20, "airing a to finish")
            assert datetime.now(SH) < times["b"] - timedelta(seconds=1.5), (
                "too slow to stop before b's dispatch"
            )
        # the server is down over b and c
        _wait(lambda: datetime.now(SH) >= times["c"] + timedelta(seconds=2), 30, "c to pass")
        with LiveServer(settings, port) as server, server.client(server.login(*ADMIN)) as c:
            _wait(
                lambda: all(len(sp.sim.outcomes(d)) >= 3 for d in sp.sim.speakers), 40, "airing d to finish"
            )
            listed = c.get(f"/api/v1/broadcasts/{broadcast['id']}/occurrences").json()["items"]
            status = {o["id"]: o for o in listed}
    for device in sp.sim.speakers:
        assert sp.sim.outcomes(device) == [(ids["a"], "played"), (ids["c"], "played"), (ids["d"], "played")]
    assert status[ids["b"]]["status"] == "missed" and "after the latest start" in status[ids["b"]]["detail"]
    assert status[ids["c"]]["status"] in ("dispatched", "done")
    assert len({o["start_at"] for o in listed}) == len(listed)  # planned twice, stored once
