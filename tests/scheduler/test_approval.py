"""Approval rules, quiet hours and planning, on SQLite and PostgreSQL with real speech synthesis."""

from __future__ import annotations

from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, select

from core import regions, users
from core.clock import utcnow
from core.models import Role
from core.settings import Settings
from playlists import service as playlist_service
from playlists.schemas import ItemIn
from scheduler import audit, planning, quiet
from scheduler import lifecycle as svc
from scheduler.exceptions import BroadcastError, Forbidden, InvalidState
from scheduler.models import Broadcast, BroadcastStatus, Occurrence, OccurrenceStatus, Priority
from scheduler.schemas import BroadcastCreate
from tts import service as tts_service

LUCHENG = "341225100000"  # 鹿城镇
VILLAGE = "341225100201"
OTHER_TOWNSHIP = "341225101000"
COUNTY = "341225000000"
SH = ZoneInfo("Asia/Shanghai")
NOTICE = "各位村民请注意。"


@pytest.fixture
def settings(tmp_path) -> Settings:
    return Settings(
        data_dir=tmp_path / "var",
        tts={"engine": "espeak", "fallback": []},
        scheduler={"quiet_start": "00:00", "quiet_end": "00:00", "horizon_hours": 48},
    )


@pytest.fixture
def people(session):
    regions.load_demo(session=session)

    def add(name, role, area=None):
        return users.create_user(
            session=session, username=name, password="password-1", role=role, area_code=area
        )

    return {
        "admin": add("admin", Role.admin),
        "county_approver": add("county_ap", Role.approver, COUNTY),
        "approver": add("lucheng_ap", Role.approver, LUCHENG),
        "approver2": add("lucheng_ap2", Role.approver, LUCHENG),
        "other_approver": add("other_ap", Role.approver, OTHER_TOWNSHIP),
        "staff": add("lucheng_staff", Role.staff, LUCHENG),
    }


def _create(session, settings, user, **kw):
    args = {"title": "通知", "text": NOTICE, "areas": [VILLAGE]} | kw
    if "recurrence_spec" in args:
        args["recurrence"] = args.pop("recurrence_spec")
    broadcast_in = BroadcastCreate(**args)
    broadcast = svc.create_broadcast(session=session, settings=settings, user=user, broadcast_in=broadcast_in)
    session.commit()
    return broadcast


def _actions(session, broadcast):
    return [
        (e.action, e.user_id)
        for e in audit.history(session=session, object_type="broadcast", object_id=broadcast.id)
    ]


def test_staff_submission_waits_for_an_approver_of_its_area(session, settings, people):
    b = _create(session, settings, people["staff"], start_at=utcnow() + timedelta(hours=2))
    assert b.status == BroadcastStatus.submitted and b.occurrences == []
    assert b.scope_code == VILLAGE and b.priority == Priority.village

    for who in ("staff", "other_approver"):
        with pytest.raises(Forbidden):
            svc.approve_broadcast(session=session, settings=settings, user=people[who], broadcast=b)
    planned = svc.approve_broadcast(
        session=session, settings=settings, user=people["approver"], broadcast=b, comment="同意"
    )
    assert b.status == BroadcastStatus.scheduled and len(planned) == 1
    assert (b.reviewed_by, b.review_comment) == (people["approver"].id, "同意")
    staff, approver = people["staff"].id, people["approver"].id
    assert _actions(session, b) == [("created", staff), ("submitted", staff), ("approved", approver)]
    with pytest.raises(InvalidState):  # approving twice
        svc.approve_broadcast(session=session, settings=settings, user=people["approver2"], broadcast=b)


def test_an_approvers_own_routine_broadcast_is_approved_on_submission(session, settings, people):
    b = _create(session, settings, people["approver"])
    assert b.status == BroadcastStatus.scheduled and len(b.occurrences) == 1
    entry = audit.history(session=session, object_type="broadcast", object_id=b.id)[-1]
    assert entry.action == "approved" and entry.detail["auto"] is True


def test_emergency_needs_a_second_person_even_for_admins(session, settings, people):
    for creator, second in (("approver", "approver2"), ("admin", "county_approver")):
        b = _create(session, settings, people[creator], priority=Priority.emergency_red, areas=[LUCHENG])
        assert b.status == BroadcastStatus.submitted and b.occurrences == []  # nothing airs on one say-so
        with pytest.raises(Forbidden, match="second person"):
            svc.approve_broadcast(session=session, settings=settings, user=people[creator], broadcast=b)
        svc.approve_broadcast(session=session, settings=settings, user=people[second], broadcast=b)
        assert b.status == BroadcastStatus.scheduled and len(b.occurrences) == 1
        assert b.reviewed_by == people[second].id != b.created_by


def test_reject_needs_a_reason_and_is_final(session, settings, people):
    b = _create(session, settings, people["staff"])
    with pytest.raises(BroadcastError) as err:
        svc.reject_broadcast(session=session, user=people["approver"], broadcast=b, comment=" ")
    assert err.value.field == "comment"
    svc.reject_broadcast(session=session, user=people["approver"], broadcast=b, comment="内容有误")
    assert b.status == BroadcastStatus.rejected and b.review_comment == "内容有误"
    with pytest.raises(InvalidState):
        svc.approve_broadcast(session=session, settings=settings, user=people["approver"], broadcast=b)


def test_draft_then_submit_and_cancel(session, settings, people):
    b = _create(session, settings, people["staff"], submit=False, start_at=utcnow() + timedelta(hours=1))
    assert b.status == BroadcastStatus.draft
    svc.submit_broadcast(session=session, settings=settings, user=people["staff"], broadcast=b)
    svc.approve_broadcast(session=session, settings=settings, user=people["approver"], broadcast=b)
    plan = svc.cancel_broadcast(session=session, user=people["staff"], broadcast=b, comment="改期")
    assert b.status == BroadcastStatus.cancelled
    assert plan.cancelled == [b.occurrences[0].id] and plan.occurrence_ids == []
    assert b.occurrences[0].status == OccurrenceStatus.cancelled
    with pytest.raises(InvalidState):
        svc.cancel_broadcast(session=session, user=people["staff"], broadcast=b)


def test_routine_in_quiet_hours_is_refused_with_the_times_listed(session, settings, people):
    settings = settings.model_copy(
        update={
            "scheduler": settings.scheduler.model_copy(update={"quiet_start": "22:00", "quiet_end": "06:00"})
        }
    )
    tomorrow = (utcnow().astimezone(SH) + timedelta(days=1)).date()
    rule = {"freq": "daily", "times": ["05:30", "12:00", "23:15"], "start_date": tomorrow.isoformat(),
            "end_date": (tomorrow + timedelta(days=2)).isoformat()}  # fmt: skip
    with pytest.raises(BroadcastError) as err:
        _create(session, settings, people["approver"], recurrence_spec=rule)
    assert err.value.field == "recurrence"
    assert err.value.message.startswith("6 airing(s) fall in quiet hours")
    assert f"{tomorrow} 05:30:00 Asia/Shanghai" in err.value.message and "12:00" not in err.value.message
    session.rollback()
    assert session.scalar(select(func.count()).select_from(Broadcast)) == 0  # nothing half-created

    # emergency is never refused
    b = _create(session, settings, people["approver"], recurrence_spec=rule, priority=Priority.emergency_blue)
    assert b.status == BroadcastStatus.submitted

    # a village's own quiet hours bind a township-wide broadcast too
    quiet.set_for_area(
        session=session, user=people["admin"], area_code=VILLAGE, start=time(11, 0), end=time(13, 0)
    )
    noon = datetime.combine(tomorrow, time(12, 0), tzinfo=SH)
    with pytest.raises(BroadcastError, match=rf"quiet 11:00-13:00 \({VILLAGE}\)"):
        _create(session, settings, people["approver"], areas=[LUCHENG], start_at=noon)


def test_recurring_broadcast_is_planned_over_a_rolling_horizon_without_duplicates(session, settings, people):
    today = utcnow().astimezone(SH).date()
    rule = {"freq": "daily", "times": ["07:00", "18:30"], "start_date": today.isoformat(),
            "end_date": (today + timedelta(days=9)).isoformat()}  # fmt: skip
    b = _create(session, settings, people["approver"], recurrence_spec=rule)
    horizon = utcnow() + timedelta(hours=48 + 12)
    starts = [o.start_at for o in b.occurrences]
    assert starts and all(utcnow() - timedelta(minutes=1) < s < horizon for s in starts)
    assert len(starts) in (4, 5, 6)  # 2 a day over 2.5 days, minus those already past today

    # 36 h past the first plan's end (now + 60 h): the gap holds airings whatever the time of day (a
    # 12 h gap held none when the test ran between 06:30 and 07:00 Shanghai time)
    later = utcnow() + timedelta(days=4)
    planning.extend_horizon(session=session, settings=settings, now=later)
    planning.extend_horizon(session=session, settings=settings, now=later)  # a second tick adds nothing
    session.commit()
    rows = session.scalars(
        select(Occurrence).where(Occurrence.broadcast_id == b.id).order_by(Occurrence.start_at)
    ).all()
    assert len({r.start_at for r in rows}) == len(rows)
    # the airings between the end of the first plan and `later` were never dispatched: missed, not aired late
    gap = [r for r in rows if r.start_at not in starts and r.start_at < later - timedelta(minutes=1)]
    assert gap and all(r.status == OccurrenceStatus.missed and "not running" in r.detail for r in gap)
    assert all(r.status == OccurrenceStatus.scheduled for r in rows if r.start_at > later)

    end = planning.extend_horizon(session=session, settings=settings, now=utcnow() + timedelta(days=12))
    session.commit()
    total = session.scalar(
        select(func.count()).select_from(Occurrence).where(Occurrence.broadcast_id == b.id)
    )
    assert end >= 0 and total <= 20  # never beyond the rule's end date


def test_playlist_is_assembled_once_at_submission_and_edits_do_not_touch_it(session, settings, people):
    staff = people["staff"]
    playlist = playlist_service.create(
        session=session, user=staff, name="早间节目",
        items=[ItemIn(kind="text", text="第一条通知。"), ItemIn(kind="text", text="第二条通知。")],
        repeat=2, gap_ms=500,
    )  # fmt: skip
    session.commit()
    b = _create(session, settings, staff, text=None, playlist_id=playlist.id)
    first_asset = tts_service.get_asset(session=session, asset_id=b.asset_id)
    parts = [tts_service.synthesize_sync(session=session, settings=settings, text=t).asset
             for t in ("第一条通知。", "第二条通知。")]  # fmt: skip
    # two rounds of both items with three 500 ms gaps, joined without crossfade (MP3 frame padding aside)
    expected = 2 * sum(p.duration_ms for p in parts) + 3 * 500
    assert abs(first_asset.duration_ms - expected) < 4 * 60, (first_asset.duration_ms, expected)

    playlist_service.update(session=session, playlist=playlist, items=[ItemIn(kind="text", text="改了。")])
    session.commit()
    assert b.asset_id == first_asset.id  # what the approver will hear is what was submitted
    again = _create(session, settings, staff, text=None, playlist_id=playlist.id)
    assert again.asset_id != first_asset.id
