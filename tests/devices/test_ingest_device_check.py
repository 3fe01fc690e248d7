"""A report or status whose payload names another device than its topic's is refused, counted
under its own name and logged once, and changes no delivery."""

from __future__ import annotations

import logging

import pytest
from sqlalchemy import select

from core.db import session_scope
from core.models import Region, RegionLevel
from cunxiang_shared import protocol
from devices import service as device_service
from devices.ingest import ReportIngestor
from devices.models import Delivery, Device
from devices.transport import MemoryLink

OCC = 7


@pytest.fixture
def ingestor(session_factory):
    with session_scope(session_factory) as s:
        s.add(Region(code="341225100201", name="张庄村", level=RegionLevel.village))
        s.flush()
        for dev in ("dc-a", "dc-b"):
            device_service.register(session=s, device_id=dev, name=dev, area_code="341225100201")
        devices = s.scalars(select(Device)).all()
        device_service.snapshot_deliveries(session=s, occurrence_id=OCC, devices=devices)
    link = MemoryLink()
    ing = ReportIngestor(link=link, session_factory=session_factory)
    ing.start()
    yield ing, link
    ing.stop()


def test_a_report_naming_another_device_is_refused_counted_and_logged_once(ingestor, session_factory, caplog):
    ing, link = ingestor
    forged = protocol.encode(protocol.Report(device_id="dc-b", occurrence_id=OCC, state="failed"))
    genuine = protocol.encode(protocol.Report(device_id="dc-a", occurrence_id=OCC, state="played"))
    with caplog.at_level(logging.WARNING, logger="devices.ingest"):
        for _ in range(3):
            link.publish(protocol.device_topic("dc-a", "report"), forged, qos=1)
        link.publish(protocol.device_topic("dc-a", "report"), genuine, qos=1)
        assert ing.flush()
    assert ing.counts["report_other_device"] == 3
    assert ing.counts["malformed"] == 0
    assert ing.counts["applied"] == 1
    assert sum("report_other_device" in r.getMessage() for r in caplog.records) == 1
    with session_factory() as s:
        states = {d.device_id: d.state for d in s.scalars(select(Delivery)).all()}
    assert states == {"dc-a": "played", "dc-b": "pending"}
