"""Period reach reports and their daily roll-ups against a hand-counted scenario (SQLite and
PostgreSQL), and what the public village page may show."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from core import regions
from devices import service as device_service
from devices.models import Delivery, DeliveryState
from reports import export, public, reach
from reports import service as report_service
from reports.models import ReachDaily
from scheduler.models import Broadcast, BroadcastStatus, Occurrence, OccurrenceStatus, Priority

ZONE = ZoneInfo("Asia/Shanghai")
COUNTY, TOWN_A, TOWN_B = "341225000000", "341225100000", "341225101000"
A1, A2, B1 = "341225100201", "341225100202", "341225101201"
POP = {A1: 1000, A2: 500, B1: 700}


def local(y, m, d, hh, mm) -> datetime:
    return datetime(y, m, d, hh, mm, tzinfo=ZONE).astimezone(UTC)


@pytest.fixture
def scenario(session):
    """Airings on Mon 2 Nov 2026 (local) and Tue 3 Nov; one of Tue's is still open.

    o1 Mon 08:00  township A  a1-1 played, a1-2 failed, a2-1 no_report
    o2 Mon 23:30  village A2  a2-1 played
    o3 Tue 00:30  township B  b1-1 played, b1-2 skipped   (still Monday in UTC: 16:30Z)
    o4 Tue 10:00  township A  a1-1 pending                (dispatched, not final)
    o5 Mon 12:00  township A  cancelled broadcast, a1-1 played
    """
    rows = [
        (1, {"code": COUNTY, "name": "测试县"}),
        (2, {"code": TOWN_A, "name": "甲镇"}),
        (3, {"code": TOWN_B, "name": "乙镇"}),
        (4, {"code": A1, "name": "一村", "population": POP[A1]}),
        (5, {"code": A2, "name": "二村", "population": POP[A2]}),
        (6, {"code": B1, "name": "三村", "population": POP[B1]}),
    ]
    regions.import_rows(session=session, rows=rows)
    for dev, area in (("a1-1", A1), ("a1-2", A1), ("a2-1", A2), ("b1-1", B1), ("b1-2", B1)):
        device_service.register(session=session, device_id=dev, name=dev, area_code=area)

    def airing(title, areas, scope, start, status, deliveries, bstatus=BroadcastStatus.done):
        b = Broadcast(
            title=title, text=f"{title}的内容", priority=Priority.township, status=bstatus,
            target_areas=areas, target_devices=[], scope_code=scope,
        )  # fmt: skip
        session.add(b)
        session.flush()
        o = Occurrence(
            broadcast_id=b.id, start_at=start, expires_at=start + timedelta(minutes=1),
            deadline_at=start + timedelta(minutes=5), status=status,
        )  # fmt: skip
        session.add(o)
        session.flush()
        for dev, state in deliveries:
            area = {"a1": A1, "a2": A2, "b1": B1}[dev[:2]]
            session.add(Delivery(occurrence_id=o.id, device_id=dev, area_code=area, state=state))
        return b, o

    s = DeliveryState
    airing("一号通知", [TOWN_A], TOWN_A, local(2026, 11, 2, 8, 0), OccurrenceStatus.done,
           [("a1-1", s.played), ("a1-2", s.failed), ("a2-1", s.no_report)])  # fmt: skip
    airing("二号通知", [A2], A2, local(2026, 11, 2, 23, 30), OccurrenceStatus.done, [("a2-1", s.played)])
    airing("三号通知", [TOWN_B], TOWN_B, local(2026, 11, 3, 0, 30), OccurrenceStatus.done,
           [("b1-1", s.played), ("b1-2", s.skipped)])  # fmt: skip
    _, o4 = airing("四号通知", [TOWN_A], TOWN_A, local(2026, 11, 3, 10, 0), OccurrenceStatus.dispatched,
                   [("a1-1", s.pending)], bstatus=BroadcastStatus.scheduled)  # fmt: skip
    airing("撤回的通知", [TOWN_A], TOWN_A, local(2026, 11, 2, 12, 0), OccurrenceStatus.done,
           [("a1-1", s.played)], bstatus=BroadcastStatus.cancelled)  # fmt: skip
    session.commit()
    return o4


def report(session, kind, day, area=COUNTY, level=None, now=None):
    return report_service.period_report(
        session=session, area_code=area, period=report_service.period_of(kind=kind, day=day), zone=ZONE,
        level=level, now=now or local(2026, 11, 10, 12, 0),
    )  # fmt: skip


def figures(r) -> tuple:
    keys = ("targeted", "played", "failed", "no_report", "other", "population_targeted", "population_reached")
    return tuple(r[k] for k in keys)


def test_day_week_month_match_the_hand_count_and_use_rollups(session, scenario):
    monday, tuesday = date(2026, 11, 2), date(2026, 11, 3)
    # Monday (local): o1 (3 speakers), o2 (1), o5 (1) -> 5 targeted, 3 played, 1 failed, 1 no report
    mon = report(session, "day", monday)
    assert figures(mon) == (5, 3, 1, 1, 0, 1500, 1500)
    assert mon["reach_rate"] == 0.6
    assert [(e["code"], e["targeted"], e["played"]) for e in mon["by_area"]] == [(TOWN_A, 5, 3)]
    assert mon["rolled_up_days"] == ["2026-11-02"]
    # Tuesday: o3 (b1-1 played, b1-2 skipped) and the open o4 (a1-1 pending): not rolled up
    tue = report(session, "day", tuesday)
    assert figures(tue) == (3, 1, 0, 0, 2, 1700, 700)
    assert tue["rolled_up_days"] == []
    # The week, Mon 2 - Sun 8: a village counts once however often it was reached
    week = report(session, "week", date(2026, 11, 5))
    assert (week["first"], week["last"]) == ("2026-11-02", "2026-11-08")
    assert figures(week) == (8, 4, 1, 1, 2, 2200, 2200)
    assert [d["targeted"] for d in week["by_day"]] == [5, 3, 0, 0, 0, 0, 0]
    assert "2026-11-03" not in week["rolled_up_days"] and "2026-11-02" in week["rolled_up_days"]
    month = report(session, "month", monday)
    assert (month["first"], month["last"]) == ("2026-11-01", "2026-11-30")
    assert figures(month) == figures(week)
    # by village inside township A
    town = report(session, "week", monday, area=TOWN_A)
    assert [(e["code"], e["targeted"], e["played"], e["population_reached"]) for e in town["by_area"]] == [
        (A1, 4, 2, 1000), (A2, 2, 1, 500),
    ]  # fmt: skip
    assert report(session, "week", monday, area=TOWN_B)["targeted"] == 2

    # Monday now comes from the roll-up: raw deliveries no longer matter to it
    session.query(Delivery).filter(Delivery.occurrence_id != scenario.id).delete()
    session.commit()
    assert figures(report(session, "day", monday)) == (5, 3, 1, 1, 0, 1500, 1500)
    assert session.query(ReachDaily).filter(ReachDaily.day == monday).count() == 2  # villages A1, A2

    # o4 closes: its speaker never answered; Tuesday is rolled up at the next report
    scenario.status = OccurrenceStatus.done
    session.query(Delivery).filter(Delivery.occurrence_id == scenario.id).update(
        {"state": DeliveryState.no_report}
    )
    session.commit()
    assert report_service.closable(session=session, day=tuesday, zone=ZONE, now=local(2026, 11, 10, 0, 0))
    tue = report(session, "day", tuesday)
    assert tue["rolled_up_days"] == ["2026-11-03"]
    assert (tue["targeted"], tue["no_report"], tue["other"]) == (1, 1, 0)  # o3's rows were deleted above


def test_a_broadcast_and_a_period_speak_one_vocabulary(session, scenario):
    """Tuesday in township B is one airing (o3): its broadcast reach and the day's report give the
    same figures under the same names, totals and per village, and the CSV columns exist in both."""
    o3 = session.query(Occurrence).filter(Occurrence.start_at == local(2026, 11, 3, 0, 30)).one()
    one = reach.broadcast_reach(session=session, occurrence_ids=[o3.id], level="village")
    day = report(session, "day", date(2026, 11, 3), area=TOWN_B)
    assert figures(one) == figures(day) == (2, 1, 0, 0, 1, 700, 700)
    assert (one["skipped"], one["other"]) == (1, 1)
    assert one["by_area"] == day["by_area"]
    names = {"code", "name", "level", "reach_rate", *reach.COUNTS, *reach.POPULATIONS}
    assert set(one["by_area"][0]) == names | {reach.V1_AREA_POPULATION}
    headings_one, rows_one = export.table(one)
    assert (headings_one, rows_one) == export.table(day)
    assert rows_one[-1][1:] == ["合计", 2, 1, 0, 0, 0.5, 700, 700]


def test_today_is_never_rolled_up(session, scenario):
    monday = date(2026, 11, 2)
    during = report(session, "day", monday, now=local(2026, 11, 2, 23, 59))
    assert during["rolled_up_days"] == [] and during["targeted"] == 5


def test_public_page_lists_only_what_aired_in_the_village(session, scenario):
    before_o4 = local(2026, 11, 3, 9, 0)
    titles = [a.title for a in public.aired_in(session=session, village_code=A1, now=before_o4)]
    assert titles == ["一号通知"]  # not o2 (village A2 only), not the cancelled one, not o4 (later)
    assert [a.title for a in public.aired_in(session=session, village_code=A2, now=before_o4)] == [
        "二号通知", "一号通知",
    ]  # fmt: skip
    assert [a.title for a in public.aired_in(session=session, village_code=B1, now=before_o4)] == ["三号通知"]
    after = local(2026, 11, 3, 10, 30)
    assert [a.title for a in public.aired_in(session=session, village_code=A1, now=after)] == [
        "四号通知",
        "一号通知",
    ]
    aired = public.aired_in(session=session, village_code=A1, now=after)[1]
    assert aired.text == "一号通知的内容" and aired.aired_at == local(2026, 11, 2, 8, 0)


def test_report_from_raw_deliveries_matches_the_rollups_and_writes_nothing(session, scenario):
    monday = date(2026, 11, 2)

    def raw(area, level):
        return report_service.period_report(
            session=session, area_code=area, period=report_service.period_of(kind="week", day=monday),
            zone=ZONE, level=level, now=local(2026, 11, 10, 12, 0), rollups=False,
        )  # fmt: skip

    assert raw(COUNTY, None)["rolled_up_days"] == []
    assert session.query(ReachDaily).count() == 0
    for area, level in ((COUNTY, None), (COUNTY, "village"), (TOWN_A, None), (A1, None)):
        rolled = report(session, "week", monday, area=area, level=level)
        assert "2026-11-02" in rolled["rolled_up_days"] and "2026-11-03" not in rolled["rolled_up_days"]
        without = {k: v for k, v in raw(area, level).items() if k != "rolled_up_days"}
        assert {k: v for k, v in rolled.items() if k != "rolled_up_days"} == without
