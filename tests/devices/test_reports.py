"""Reports move deliveries forward only, never touch another device, and settle at the deadline."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from core.clock import utcnow
from core.models import Region, RegionLevel
from cunxiang_shared import protocol
from devices import report_writer
from devices import service as device_service
from devices.models import Delivery
from devices.models import Report as ReportRow
from reports import reach

OCC = 7


@pytest.fixture
def fleet(session):
    """A county, one township, two villages (1000 and 2000 people), three speakers."""
    session.add_all(
        [
            Region(code="341225000000", name="阜南县", level=RegionLevel.county, population=3000),
            Region(
                code="341225100000", name="鹿城镇", level=RegionLevel.township, parent_code="341225000000",
                population=3000,
            ),
            Region(
                code="341225100201", name="张庄村", level=RegionLevel.village, parent_code="341225100000",
                population=1000,
            ),
            Region(
                code="341225100202", name="李楼村", level=RegionLevel.village, parent_code="341225100000",
                population=2000,
            ),
        ]
    )  # fmt: skip
    session.flush()
    for dev_id, area in (("a1", "341225100201"), ("a2", "341225100201"), ("b1", "341225100202")):
        device_service.register(session=session, device_id=dev_id, name=dev_id, area_code=area)
    targets = device_service.expand_targets(session=session, area_codes=["341225100000"], device_ids=[])
    device_service.snapshot_deliveries(session=session, occurrence_id=OCC, devices=targets)
    session.commit()
    return session


def report(device_id: str, state: str, **kw) -> protocol.Report:
    return protocol.Report(device_id=device_id, occurrence_id=OCC, state=state, **kw)


def states(session) -> dict[str, str]:
    session.expire_all()
    return {d.device_id: d.state for d in session.scalars(select(Delivery)).all()}


def test_reports_move_forward_and_never_back(fleet):
    now = utcnow()
    result = report_writer.apply_reports(
        session=fleet,
        reports=[
            (report("a1", "received"), now),
            (report("a1", "playing"), now),
            (report("a1", "played", seconds_played=3.2), now),
            (report("a1", "received"), now),  # duplicate delivery by QoS 1, arrives late
            (report("a2", "playing"), now),
        ],
    )
    fleet.commit()
    assert (result.applied, result.stale) == (4, 1)
    assert states(fleet) == {"a1": "played", "a2": "playing", "b1": "pending"}
    played = fleet.scalars(select(Delivery).where(Delivery.device_id == "a1")).one()
    assert played.seconds_played == 3.2 and played.received_at is not None
    assert fleet.query(ReportRow).count() == 5  # every report is kept raw


def test_unknown_device_and_unknown_occurrence_are_counted_not_applied(fleet):
    now = utcnow()
    result = report_writer.apply_reports(
        session=fleet,
        reports=[
            (report("ghost", "played"), now),
            (protocol.Report(device_id="b1", occurrence_id=OCC + 1, state="played"), now),
        ],
    )
    fleet.commit()
    assert (result.applied, result.unknown_device, result.unknown_delivery) == (0, 1, 1)
    assert result.unknown_devices == {"ghost"}
    assert states(fleet) == {"a1": "pending", "a2": "pending", "b1": "pending"}


def test_deadline_turns_silence_into_no_report_and_late_reports_do_not_count(fleet):
    deadline = utcnow()
    report_writer.apply_reports(
        session=fleet, reports=[(report("a1", "played"), deadline), (report("a2", "playing"), deadline)]
    )
    n = device_service.finalize_deliveries(session=fleet, occurrence_id=OCC, at=deadline)
    fleet.commit()
    assert n == 2  # a2 vanished mid-broadcast, b1 never answered
    assert states(fleet) == {"a1": "played", "a2": "no_report", "b1": "no_report"}

    # b1's final report reached us before the deadline (it sat in the ingest batch): it counts.
    # a2's arrived after the deadline: it does not.
    result = report_writer.apply_reports(
        session=fleet,
        reports=[
            (report("b1", "played"), deadline - timedelta(milliseconds=20)),
            (report("a2", "played"), deadline + timedelta(seconds=1)),
        ],
    )
    fleet.commit()
    assert (result.applied, result.stale) == (1, 1)
    assert states(fleet) == {"a1": "played", "a2": "no_report", "b1": "played"}


def test_reach_counts_unique_devices_and_villages_once(fleet):
    now = utcnow()
    report_writer.apply_reports(
        session=fleet,
        reports=[(report("a1", "played"), now), (report("a2", "played"), now), (report("b1", "failed"), now)],
    )
    fleet.commit()
    figures = reach.broadcast_reach(session=fleet, occurrence_ids=[OCC], level="village")
    assert figures["targeted"] == 3
    assert (figures["played"], figures["failed"], figures["no_report"]) == (2, 1, 0)
    assert figures["reach_rate"] == round(2 / 3, 4)
    assert figures["population_targeted"] == 3000
    assert figures["population_reached"] == 1000  # 张庄村 once, although two of its speakers played
    by_code = {a["code"]: a for a in figures["by_area"]}
    assert by_code["341225100201"]["played"] == 2 and by_code["341225100201"]["population_reached"] == 1000
    assert by_code["341225100202"]["failed"] == 1 and by_code["341225100202"]["population_reached"] == 0

    township = reach.broadcast_reach(session=fleet, occurrence_ids=[OCC], level="township")
    assert [(a["code"], a["name"], a["targeted"], a["played"]) for a in township["by_area"]] == [
        ("341225100000", "鹿城镇", 3, 2)
    ]
