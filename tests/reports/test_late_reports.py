"""A speaker's late report (an airing played during an outage, reported after the deadline) changes
the reach of a day already rolled up: the day is rolled up again (SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from core import regions
from cunxiang_shared import protocol
from devices import report_writer
from devices import service as device_service
from reports import service as report_service
from reports.models import ReachDaily, ReachDay
from scheduler.models import Broadcast, BroadcastStatus, Occurrence, OccurrenceStatus, Priority

ZONE = ZoneInfo("Asia/Shanghai")
COUNTY, TOWN, VILLAGE = "341225000000", "341225100000", "341225100201"
DAY = date(2026, 11, 2)
START = datetime(2026, 11, 2, 8, 0, tzinfo=ZONE).astimezone(UTC)
DEADLINE = START + timedelta(minutes=5)
LATER = datetime(2026, 11, 10, 12, 0, tzinfo=ZONE).astimezone(UTC)  # "now" for the reports


@pytest.fixture
def airing(session) -> int:
    """One airing on Mon 2 Nov (local) to three speakers: s1 played, s2 and s3 silent at the deadline."""
    regions.import_rows(
        session=session,
        rows=[
            (1, {"code": COUNTY, "name": "测试县"}),
            (2, {"code": TOWN, "name": "甲镇"}),
            (3, {"code": VILLAGE, "name": "一村", "population": 800}),
        ],
    )
    for dev in ("s1", "s2", "s3"):
        device_service.register(session=session, device_id=dev, name=dev, area_code=VILLAGE)
    b = Broadcast(
        title="通知", text="通知的内容", priority=Priority.township, status=BroadcastStatus.done,
        target_areas=[TOWN], target_devices=[], scope_code=TOWN,
    )  # fmt: skip
    session.add(b)
    session.flush()
    o = Occurrence(
        broadcast_id=b.id, start_at=START, expires_at=START + timedelta(minutes=1), deadline_at=DEADLINE,
        status=OccurrenceStatus.done,
    )  # fmt: skip
    session.add(o)
    session.flush()
    targets = device_service.expand_targets(session=session, area_codes=[TOWN], device_ids=[])
    device_service.snapshot_deliveries(session=session, occurrence_id=o.id, devices=targets)
    played = protocol.Report(
        device_id="s1",
        occurrence_id=o.id,
        state="played",
        at=START + timedelta(seconds=40),
        seconds_played=40.0,
    )
    report_writer.apply_reports(session=session, reports=[(played, START + timedelta(seconds=41))])
    assert device_service.finalize_deliveries(session=session, occurrence_id=o.id, at=DEADLINE) == 2
    session.commit()
    return o.id


def day_report(session, now=LATER) -> dict:
    return report_service.period_report(
        session=session, area_code=TOWN, period=report_service.period_of(kind="day", day=DAY), zone=ZONE,
        now=now,
    )  # fmt: skip


def counts(r: dict) -> tuple:
    return tuple(r[k] for k in ("targeted", "played", "no_report", "population_reached"))


def late_played(occurrence_id: int, device_id: str, arrived: datetime) -> list:
    report = protocol.Report(
        device_id=device_id, occurrence_id=occurrence_id, state="played", at=START + timedelta(seconds=40),
        seconds_played=40.0,
    )  # fmt: skip
    return [(report, arrived)]


def test_a_late_report_rolls_the_day_up_again(session, airing):
    first = day_report(session)
    assert first["rolled_up_days"] == [DAY.isoformat()]
    assert counts(first) == (3, 1, 2, 800)
    rolled_at = session.scalars(select(ReachDay.rolled_up_at)).one()

    # Asked again with nothing new: read from the roll-up, not redone.
    assert counts(day_report(session)) == (3, 1, 2, 800)
    assert session.scalars(select(ReachDay.rolled_up_at)).one() == rolled_at

    # s2 comes back two days after the airing and reports it played on time.
    result = report_writer.apply_reports(
        session=session, reports=late_played(airing, "s2", DEADLINE + timedelta(days=2))
    )
    session.commit()
    assert result.revised == {airing: 1}

    again = day_report(session)
    assert again["rolled_up_days"] == [DAY.isoformat()]
    assert counts(again) == (3, 2, 1, 800)
    assert [(e["code"], e["played"], e["no_report"]) for e in again["by_area"]] == [(VILLAGE, 2, 1)]
    rows = session.scalars(select(ReachDaily).where(ReachDaily.day == DAY)).all()
    assert [(r.area_code, r.targeted, r.played, r.no_report) for r in rows] == [(VILLAGE, 3, 2, 1)]
    assert session.scalars(select(ReachDay.rolled_up_at)).one() > rolled_at
    # The roll-up agrees with the raw deliveries it summarises.
    raw = report_service.period_report(
        session=session, area_code=TOWN, period=report_service.period_of(kind="day", day=DAY), zone=ZONE,
        now=LATER, rollups=False,
    )  # fmt: skip
    assert counts(raw) == counts(again) and raw["rolled_up_days"] == []

    # A week report covering the day sees the same.
    week = report_service.period_report(
        session=session, area_code=TOWN, period=report_service.period_of(kind="week", day=DAY), zone=ZONE,
        now=LATER,
    )  # fmt: skip
    assert counts(week) == (3, 2, 1, 800)


def test_a_stale_report_changes_nothing_and_redoes_nothing(session, airing):
    day_report(session)
    rolled_at = session.scalars(select(ReachDay.rolled_up_at)).one()
    # s3 reports after the window, s1 (already played) once more: neither changes a delivery.
    window = timedelta(seconds=report_writer.LATE_REPORT_WINDOW_S)
    result = report_writer.apply_reports(
        session=session,
        reports=late_played(airing, "s3", DEADLINE + window + timedelta(hours=1))
        + late_played(airing, "s1", DEADLINE + timedelta(days=1)),
    )
    session.commit()
    assert (result.applied, result.stale, result.revised) == (0, 2, {})
    assert counts(day_report(session)) == (3, 1, 2, 800)
    assert session.scalars(select(ReachDay.rolled_up_at)).one() == rolled_at


def test_a_day_rolled_up_before_it_closed_falls_back_to_the_raw_figures(session, airing):
    # Rolled up by hand while the day is still open (the occurrence is on the last day in "now").
    report_service.rollup_day(session=session, day=DAY, zone=ZONE)
    session.commit()
    report_writer.apply_reports(
        session=session, reports=late_played(airing, "s3", DEADLINE + timedelta(hours=1))
    )
    session.commit()
    still_open = datetime(2026, 11, 2, 20, 0, tzinfo=ZONE).astimezone(UTC)
    now = day_report(session, now=still_open)
    assert now["rolled_up_days"] == [] and counts(now) == (3, 2, 1, 800)
    assert session.scalars(select(ReachDaily).where(ReachDaily.day == DAY)).all() == []
    # Once the day has closed, the next report rolls it up with the new figures.
    later = day_report(session)
    assert later["rolled_up_days"] == [DAY.isoformat()] and counts(later) == (3, 2, 1, 800)
