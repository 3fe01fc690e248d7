"""The batched report writer: edges of the delivery rules, and writers that overlap in time."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import select

from core.db import session_scope
from core.models import Region, RegionLevel
from cunxiang_shared import protocol
from devices import report_writer
from devices import service as device_service
from devices.models import Delivery, DeliverySettlement, Device
from devices.models import Report as ReportRow

OCC = 11
# Whole seconds on purpose: a timestamp without microseconds must compare like any other.
T0 = datetime(2026, 3, 2, 8, 0, 0, tzinfo=UTC)


@pytest.fixture
def fleet(session):
    """One village with three speakers, each sent occurrence OCC (and a1 also OCC + 1)."""
    session.add_all(
        [
            Region(code="341225000000", name="阜南县", level=RegionLevel.county, population=1000),
            Region(
                code="341225100000", name="鹿城镇", level=RegionLevel.township, parent_code="341225000000",
                population=1000,
            ),
            Region(
                code="341225100201", name="张庄村", level=RegionLevel.village, parent_code="341225100000",
                population=1000,
            ),
        ]
    )  # fmt: skip
    session.flush()
    for dev_id in ("a1", "a2", "a3"):
        device_service.register(session=session, device_id=dev_id, name=dev_id, area_code="341225100201")
    devices = device_service.expand_targets(session=session, area_codes=["341225100201"], device_ids=[])
    device_service.snapshot_deliveries(session=session, occurrence_id=OCC, devices=devices)
    device_service.snapshot_deliveries(session=session, occurrence_id=OCC + 1, devices=devices[:1])
    session.commit()
    return session


def report(device_id: str, state: str, at: datetime, occurrence_id: int = OCC, **kw) -> protocol.Report:
    return protocol.Report(device_id=device_id, occurrence_id=occurrence_id, state=state, at=at, **kw)


def delivery(session, device_id: str, occurrence_id: int = OCC) -> Delivery:
    session.expire_all()
    return session.scalars(
        select(Delivery).where(Delivery.device_id == device_id, Delivery.occurrence_id == occurrence_id)
    ).one()


def test_a_whole_airing_in_one_batch_applies_in_arrival_order(fleet):
    result = report_writer.apply_reports(
        session=fleet,
        reports=[
            (report("a1", "received", T0), T0),
            (report("a2", "played", T0 + timedelta(seconds=60), seconds_played=60.0), T0),
            (report("a1", "playing", T0 + timedelta(seconds=5)), T0),
            (report("a2", "received", T0 - timedelta(seconds=30)), T0),  # QoS 1 resend, after the final
            (report("a1", "played", T0 + timedelta(seconds=65), seconds_played=60.0), T0),
            (report("a1", "playing", T0 + timedelta(seconds=5)), T0),  # resent again: stale
        ],
    )
    fleet.commit()
    assert (result.applied, result.stale, result.duplicate) == (4, 2, 1)
    a1 = delivery(fleet, "a1")
    assert (a1.state, a1.received_at, a1.playing_at, a1.finished_at, a1.seconds_played) == (
        "played", T0, T0 + timedelta(seconds=5), T0 + timedelta(seconds=65), 60.0,
    )  # fmt: skip
    # a2's first word was its final report: received_at is that report's time, not the resend's.
    a2 = delivery(fleet, "a2")
    assert (a2.state, a2.received_at, a2.playing_at, a2.finished_at) == (
        "played", T0 + timedelta(seconds=60), None, T0 + timedelta(seconds=60),
    )  # fmt: skip
    assert fleet.query(ReportRow).count() == 5  # stale reports are kept raw too, a resend once


def test_only_final_reports_set_seconds_and_error(fleet):
    report_writer.apply_reports(
        session=fleet,
        reports=[
            (report("a1", "playing", T0, seconds_played=0.0, error="warming up"), T0),
            (report("a2", "failed", T0, seconds_played=2.5, error="amplifier fault"), T0),
        ],
    )
    fleet.commit()
    a1, a2 = delivery(fleet, "a1"), delivery(fleet, "a2")
    assert (a1.state, a1.seconds_played, a1.error, a1.finished_at) == ("playing", None, None, None)
    assert (a2.state, a2.seconds_played, a2.error, a2.finished_at) == ("failed", 2.5, "amplifier fault", T0)


def test_no_report_deadline_counts_reports_that_arrived_up_to_it(fleet):
    report_writer.apply_reports(
        session=fleet, reports=[(report("a3", "received", T0 - timedelta(minutes=5)), T0)]
    )
    deadline = T0 + timedelta(minutes=10)
    device_service.finalize_deliveries(session=fleet, occurrence_id=OCC, at=deadline)
    fleet.commit()

    result = report_writer.apply_reports(
        session=fleet,
        reports=[
            # arrived exactly at the deadline: counts, whatever the speaker's clock says
            (report("a1", "played", deadline + timedelta(seconds=30), seconds_played=60.0), deadline),
            # arrived a microsecond after it, and the speaker says it finished after it: too late
            (
                report("a2", "played", deadline + timedelta(seconds=1), seconds_played=60.0),
                deadline + timedelta(microseconds=1),
            ),
            # arrived in time but not final: a no_report delivery only takes a final report
            (report("a3", "playing", T0), deadline - timedelta(minutes=1)),
        ],
    )  # fmt: skip
    fleet.commit()
    assert (result.applied, result.stale) == (1, 2)
    assert result.revised == {OCC: 1}  # a1 changed after the deadline job had settled it
    a1, a2, a3 = (delivery(fleet, d) for d in ("a1", "a2", "a3"))
    assert (a1.state, a1.finished_at, a1.received_at, a1.seconds_played) == (
        "played", deadline + timedelta(seconds=30), deadline + timedelta(seconds=30), 60.0,
    )  # fmt: skip
    assert (a2.state, a2.finished_at, a2.received_at) == ("no_report", deadline, None)
    assert (a3.state, a3.finished_at, a3.received_at) == ("no_report", deadline, T0 - timedelta(minutes=5))

    # Once it has taken a final report, the delivery is final like any other.
    late = report_writer.apply_reports(
        session=fleet, reports=[(report("a1", "failed", T0, error="x"), deadline - timedelta(minutes=2))]
    )
    fleet.commit()
    assert (late.applied, late.stale) == (0, 1)
    assert delivery(fleet, "a1").state == "played"


def test_an_airing_played_during_an_outage_counts_when_reported_days_later(fleet):
    """断网续播: a speaker cut off past the deadline plays from its local programme and reports on
    reconnect; its own time (corrected by its measured clock offset) decides, not the arrival."""
    deadline = T0 + timedelta(minutes=10)
    fleet.get(Device, "a2").clock_offset_s = 700.0  # 11:40 slow: its T0+60 s was our T0+12:40
    fleet.get(Device, "a3").clock_offset_s = -120.0  # 2 min fast: its deadline+60 s was our deadline-60 s
    report_writer.apply_reports(
        session=fleet, reports=[(report("a1", "received", T0 - timedelta(minutes=1)), T0)]
    )
    assert device_service.finalize_deliveries(session=fleet, occurrence_id=OCC, at=deadline) == 3
    fleet.commit()

    back = deadline + timedelta(days=3)  # the link came back three days later
    result = report_writer.apply_reports(
        session=fleet,
        reports=[
            (report("a1", "playing", T0), back),  # not final: stays no_report
            (report("a1", "played", T0 + timedelta(seconds=60), seconds_played=60.0), back),
            (report("a2", "played", T0 + timedelta(seconds=60), seconds_played=60.0), back),
            (report("a3", "failed", deadline + timedelta(seconds=60), error="amplifier fault"), back),
            (report("a1", "played", T0 + timedelta(seconds=60), seconds_played=60.0), back),  # resent
        ],
    )
    fleet.commit()
    assert (result.applied, result.stale) == (2, 3)
    assert result.revised == {OCC: 2}
    a1, a2, a3 = (delivery(fleet, d) for d in ("a1", "a2", "a3"))
    assert (a1.state, a1.finished_at, a1.seconds_played, a1.playing_at) == (
        "played", T0 + timedelta(seconds=60), 60.0, None,
    )  # fmt: skip
    assert (a2.state, a2.finished_at) == ("no_report", deadline)  # clearly late on our clock
    assert (a3.state, a3.error) == ("failed", "amplifier fault")
    revision = fleet.get(DeliverySettlement, OCC)
    assert (revision.settled_at, revision.no_report, revision.revised) == (deadline, 3, 2)
    assert revision.revised_at > deadline

    # A revision of another delivery of the occurrence later on adds to the record.
    fleet.get(Device, "a2").clock_offset_s = 0.0
    again = report_writer.apply_reports(
        session=fleet,
        reports=[(report("a2", "played", T0 + timedelta(seconds=61), seconds_played=60.0), back)],
    )
    fleet.commit()
    assert again.revised == {OCC: 1} and delivery(fleet, "a2").state == "played"
    fleet.expire_all()
    later = fleet.get(DeliverySettlement, OCC)
    assert later.revised == 3 and later.revised_at >= revision.revised_at


def test_late_reports_count_only_within_the_window(fleet):
    deadline = T0 + timedelta(minutes=10)
    device_service.finalize_deliveries(session=fleet, occurrence_id=OCC, at=deadline)
    fleet.commit()
    window = timedelta(seconds=report_writer.LATE_REPORT_WINDOW_S)
    at = T0 + timedelta(seconds=60)
    result = report_writer.apply_reports(
        session=fleet,
        reports=[
            (report("a1", "played", at, seconds_played=60.0), deadline + window - timedelta(minutes=1)),
            (report("a2", "played", at, seconds_played=60.0), deadline + window + timedelta(minutes=1)),
        ],
    )
    fleet.commit()
    assert (result.applied, result.stale, result.revised) == (1, 1, {OCC: 1})
    assert (delivery(fleet, "a1").state, delivery(fleet, "a2").state) == ("played", "no_report")


def test_a_speakers_local_time_is_stored_as_the_same_instant(fleet):
    beijing = timezone(timedelta(hours=8))
    at = datetime(2026, 3, 2, 16, 0, 0, 250000, tzinfo=beijing)  # 08:00:00.25 UTC
    report_writer.apply_reports(session=fleet, reports=[(report("a1", "received", at), T0)])
    fleet.commit()
    assert delivery(fleet, "a1").received_at == datetime(2026, 3, 2, 8, 0, 0, 250000, tzinfo=UTC)
    raw = fleet.scalars(select(ReportRow)).one()
    assert (raw.reported_at, raw.received_at) == (at, T0)


def test_counts_unknowns_and_keeps_raw_rows_only_for_deliveries(fleet):
    result = report_writer.apply_reports(
        session=fleet,
        reports=[
            (report("a1", "received", T0, occurrence_id=OCC + 1), T0),  # a1's other occurrence
            (report("a2", "received", T0, occurrence_id=OCC + 1), T0),  # not sent to a2
            (report("ghost", "played", T0), T0),
            (report("ghost", "received", T0), T0),
            (report("a1", "received", T0), T0),
        ],
    )
    fleet.commit()
    assert (result.applied, result.stale, result.unknown_delivery, result.unknown_device) == (2, 0, 1, 2)
    assert result.unknown_devices == {"ghost"}
    assert delivery(fleet, "a1", OCC + 1).state == "received" and delivery(fleet, "a1").state == "received"
    assert sorted(fleet.scalars(select(ReportRow.device_id)).all()) == ["a1", "a1"]


def test_deliveries_already_in_the_session_show_the_new_state(fleet):
    held = delivery(fleet, "a1")
    assert held.state == "pending"
    report_writer.apply_reports(session=fleet, reports=[(report("a1", "playing", T0), T0)])
    assert held.state == "playing" and held.playing_at == T0  # same session, no explicit refresh


def test_an_overlapping_writer_waits_and_never_moves_a_delivery_back(fleet, session_factory):
    """Two ingest workers (a shared subscription) with the same deliveries in flight at once."""
    first = session_factory()
    report_writer.apply_reports(
        session=first, reports=[(report("a1", "played", T0 + timedelta(seconds=60), seconds_played=60.0), T0)]
    )  # not committed yet: its locks are held

    outcome: dict[str, object] = {}

    def second_worker() -> None:
        try:
            with session_scope(session_factory) as s:
                outcome["result"] = report_writer.apply_reports(
                    session=s,
                    reports=[(report("a2", "received", T0), T0), (report("a1", "playing", T0), T0)],
                )
        except Exception as exc:  # reported below, in the test's own thread
            outcome["error"] = exc

    worker = threading.Thread(target=second_worker)
    worker.start()
    worker.join(timeout=0.5)
    assert worker.is_alive(), "the second writer should wait for the first one's rows"
    first.commit()
    first.close()
    worker.join(timeout=15)
    assert not worker.is_alive() and "error" not in outcome, outcome.get("error")
    result = outcome["result"]
    assert (result.applied, result.stale) == (1, 1)  # a1's `playing` came after its `played`
    assert delivery(fleet, "a1").state == "played" and delivery(fleet, "a2").state == "received"


def test_played_with_sound_replaces_an_earlier_failed_and_nothing_replaces_played(fleet):
    # The case that cost a broadcast its figures: a wrongly applied `failed`, then the genuine
    # `played` 14 s later. Sound came out of the loudspeaker: played wins. Nothing un-plays it.
    result = report_writer.apply_reports(
        session=fleet,
        reports=[
            (report("a1", "failed", T0 + timedelta(seconds=13), error="decoder"), T0),
            (report("a1", "played", T0 + timedelta(seconds=27), seconds_played=27.1), T0),
            (report("a2", "played", T0 + timedelta(seconds=27), seconds_played=27.1), T0),
            (report("a2", "failed", T0 + timedelta(seconds=40), error="late noise"), T0),
            (report("a3", "skipped", T0 + timedelta(seconds=1), error="expired"), T0),
            (report("a3", "played", T0 + timedelta(seconds=27), seconds_played=0.0), T0),  # no sound
        ],
    )
    fleet.commit()
    assert (result.applied, result.stale, result.out_of_order) == (4, 2, 0)
    a1 = delivery(fleet, "a1")
    assert (a1.state, a1.seconds_played, a1.error, a1.finished_at) == (
        "played", 27.1, None, T0 + timedelta(seconds=27),
    )  # fmt: skip
    assert (delivery(fleet, "a2").state, delivery(fleet, "a2").error) == ("played", None)
    assert (delivery(fleet, "a3").state, delivery(fleet, "a3").error) == ("skipped", "expired")


def test_a_report_dated_before_the_previous_step_is_refused_and_counted(fleet):
    first = report_writer.apply_reports(
        session=fleet,
        reports=[
            (report("a1", "playing", T0 + timedelta(seconds=5)), T0),
            (report("a2", "received", T0), T0),
            (report("a2", "playing", T0 - timedelta(seconds=5)), T0),  # dated before `received`
        ],
    )
    fleet.commit()
    assert (first.applied, first.stale, first.out_of_order) == (2, 0, 1)
    second = report_writer.apply_reports(
        session=fleet,
        reports=[
            (report("a1", "failed", T0 + timedelta(seconds=1), error="x"), T0),  # before `playing`
            (report("a1", "received", T0), T0),  # a resend: stale, not out of order
            (report("a2", "played", T0 + timedelta(seconds=30), seconds_played=30.0), T0),
        ],
    )
    fleet.commit()
    assert (second.applied, second.stale, second.out_of_order) == (1, 1, 1)
    assert delivery(fleet, "a1").state == "playing"
    assert delivery(fleet, "a2").state == "played"
    # Refused reports are still kept raw (audit), like every report for a delivery.
    assert len(fleet.scalars(select(ReportRow).where(ReportRow.device_id == "a1")).all()) == 3


def test_resent_reports_are_stored_raw_once(fleet):
    # A broker blip: the speaker resends its received and playing reports (same state, same `at`).
    first = [(report("a1", "received", T0), T0), (report("a1", "playing", T0 + timedelta(seconds=5)), T0)]
    report_writer.apply_reports(session=fleet, reports=first)
    fleet.commit()
    again = report_writer.apply_reports(
        session=fleet, reports=[*first, *first, (report("zz", "received", T0), T0)]
    )
    fleet.commit()
    assert (again.applied, again.duplicate, again.stale, again.unknown_device) == (0, 4, 4, 1)
    rows = fleet.scalars(select(ReportRow.state).where(ReportRow.device_id == "a1").order_by(ReportRow.id))
    assert rows.all() == ["received", "playing"]
    assert delivery(fleet, "a1").state == "playing"


def test_seconds_played_beyond_the_audio_is_clamped_and_flagged(fleet):
    occ = OCC + 2
    devices = device_service.expand_targets(session=fleet, area_codes=["341225100201"], device_ids=[])
    device_service.snapshot_deliveries(session=fleet, occurrence_id=occ, devices=devices, duration_s=27.1)
    fleet.commit()
    end = T0 + timedelta(seconds=40)
    report_writer.apply_reports(
        session=fleet,
        reports=[
            # A speaker frozen for 30 s: its wall-clock figure overshoots the audio.
            (report("a1", "played", end, occurrence_id=occ, seconds_played=35.3), T0),
            # Start latency: a little over, clamped but not flagged.
            (report("a2", "played", end, occurrence_id=occ, seconds_played=27.4), T0),
            (report("a3", "failed", end, occurrence_id=occ, seconds_played=12.0, error="x"), T0),
            # A delivery sent before deliveries knew their duration: no bound.
            (report("a1", "played", end, seconds_played=35.3), T0),
        ],
    )
    fleet.commit()
    a1, a2, a3 = (delivery(fleet, d, occ) for d in ("a1", "a2", "a3"))
    assert (a1.seconds_played, a1.seconds_reported) == (27.1, 35.3)
    assert (a2.seconds_played, a2.seconds_reported) == (27.1, None)
    assert (a3.seconds_played, a3.seconds_reported) == (12.0, None)
    old = delivery(fleet, "a1")
    assert (old.seconds_played, old.seconds_reported) == (35.3, None)
    # The raw report keeps the speaker's own figure.
    raw = fleet.scalars(select(ReportRow.seconds_played).where(ReportRow.occurrence_id == occ)).all()
    assert sorted(raw) == [12.0, 27.4, 35.3]
