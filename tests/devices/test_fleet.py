"""Alarms raised and cleared with their timestamps, and the health roll-up, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from core.models import Region, RegionLevel
from devices import fleet
from devices import service as device_service
from devices.models import Delivery, DeliveryState, Device, DeviceAlarm

COUNTY, TOWN, V1, V2 = "341225000000", "341225100000", "341225100201", "341225100202"
RULES = fleet.AlarmRules(offline_after_s=600, clock_drift_s=30, failures_in_a_row=3)
T0 = datetime(2026, 6, 1, 8, 0, tzinfo=UTC)


def _world(session) -> None:
    session.add_all(
        [
            Region(code=COUNTY, name="阜南县", level=RegionLevel.county),
            Region(code=TOWN, name="鹿城镇", level=RegionLevel.township, parent_code=COUNTY),
            Region(code=V1, name="张庄村", level=RegionLevel.village, parent_code=TOWN),
            Region(code=V2, name="李庄村", level=RegionLevel.village, parent_code=TOWN),
        ]
    )
    session.flush()
    for device, area in (("a1", V1), ("a2", V1), ("b1", V2), ("t1", TOWN), ("never", V2)):
        device_service.register(session=session, device_id=device, name=device, area_code=area)


def _alarms(session, active: bool = True) -> set[tuple[str, str]]:
    query = select(DeviceAlarm)
    query = query.where(DeviceAlarm.cleared_at.is_(None) if active else DeviceAlarm.cleared_at.is_not(None))
    return {(a.device_id, a.kind.value) for a in session.scalars(query).all()}


def test_offline_alarm_is_raised_after_the_threshold_and_cleared_on_return(session) -> None:
    _world(session)
    for device in ("a1", "a2", "b1"):
        device_service.set_online(session=session, device_id=device, online=True, at=T0)
    device_service.set_online(session=session, device_id="a2", online=False, at=T0 + timedelta(minutes=1))

    assert fleet.evaluate_alarms(session=session, rules=RULES, now=T0 + timedelta(minutes=5)).raised == []
    changes = fleet.evaluate_alarms(session=session, rules=RULES, now=T0 + timedelta(minutes=11, seconds=1))
    assert changes.raised == [("a2", "offline")]
    # evaluated again: still one active alarm, not a second one
    fleet.evaluate_alarms(session=session, rules=RULES, now=T0 + timedelta(minutes=12))
    assert _alarms(session) == {("a2", "offline")}
    alarm = session.scalars(select(DeviceAlarm)).one()
    assert alarm.raised_at == T0 + timedelta(minutes=11, seconds=1) and alarm.area_code == V1
    assert "offline since" in alarm.detail
    # "never" has never connected: no alarm for it

    device_service.set_online(session=session, device_id="a2", online=True, at=T0 + timedelta(minutes=20))
    changes = fleet.evaluate_alarms(session=session, rules=RULES, now=T0 + timedelta(minutes=20, seconds=5))
    assert changes.cleared == [("a2", "offline")]
    assert _alarms(session) == set() and _alarms(session, active=False) == {("a2", "offline")}
    assert alarm.cleared_at == T0 + timedelta(minutes=20, seconds=5)


def test_repeated_failures_and_clock_drift(session) -> None:
    _world(session)
    for n, (device, state) in enumerate(
        [
            ("a1", "failed"),
            ("a1", "failed"),
            ("a1", "failed"),
            ("b1", "played"),
            ("b1", "failed"),
            ("b1", "failed"),
            ("a2", "failed"),
            ("a2", "failed"),
        ]  # fmt: skip
    ):
        session.add(
            Delivery(
                occurrence_id=100 + n,
                device_id=device,
                area_code=V1,
                state=DeliveryState(state),
                finished_at=T0 + timedelta(minutes=n),
                error="player exited with code 1",
            )  # fmt: skip
        )
    session.get(Device, "t1").clock_offset_s = -120.0
    session.get(Device, "b1").clock_offset_s = 2.5
    session.flush()
    now = T0 + timedelta(hours=1)
    changes = fleet.evaluate_alarms(session=session, rules=RULES, now=now)
    assert sorted(changes.raised) == [("a1", "failures"), ("t1", "clock_drift")]
    # a1 plays again: its failure streak ends and the alarm clears; t1's clock is fixed
    session.add(Delivery(occurrence_id=200, device_id="a1", area_code=V1, state=DeliveryState.played,
                         finished_at=now))  # fmt: skip
    session.get(Device, "t1").clock_offset_s = 0.01
    session.flush()
    changes = fleet.evaluate_alarms(session=session, rules=RULES, now=now + timedelta(minutes=1))
    assert sorted(changes.cleared) == [("a1", "failures"), ("t1", "clock_drift")]


def test_health_rolls_up_by_township_and_village(session) -> None:
    _world(session)
    now = datetime.now(UTC)
    for device in ("a1", "a2", "t1"):
        device_service.set_online(session=session, device_id=device, online=True, at=now)
    for device in ("a1", "t1"):
        session.get(Device, device).status_at = now
    session.get(Device, "a1").state = "playing"
    session.get(Device, "a2").fault = "player: exit 1"
    device_service.set_online(session=session, device_id="b1", online=False, at=now)
    session.flush()

    total, children = fleet.health(session=session, area_code=TOWN, now=now)
    assert (total.devices, total.online, total.online_rate) == (5, 3, 0.6)
    lines = {c.code: c for c in children}
    assert list(lines) == [TOWN, V1, V2]
    assert (lines[V1].online, lines[V1].online_rate, lines[V1].playing, lines[V1].faulted) == (2, 1.0, 1, 1)
    assert lines[V1].silent == 1  # a2 is online but has sent no status
    assert (lines[V2].devices, lines[V2].online, lines[V2].never_connected) == (2, 0, 1)
    assert lines[TOWN].name == "鹿城镇（本级）"
    county, towns = fleet.health(session=session, area_code=COUNTY, now=now)
    assert [(t.code, t.devices, t.online) for t in towns] == [(TOWN, 5, 3)]
