"""The ingestor survives anything a speaker (or an intruder) publishes, over a real broker."""

from __future__ import annotations

import time
import uuid

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from sqlalchemy import event, select

from core.clock import utcnow
from core.db import session_scope
from core.models import Region, RegionLevel
from cunxiang_shared import protocol
from devices import report_writer
from devices import service as device_service
from devices.ingest import ReportIngestor, _Parsed
from devices.models import Delivery, Device
from devices.transport import MqttLink, parse_broker_url

OCC = 42


def _publisher(url: str) -> mqtt.Client:
    host, port, _, _ = parse_broker_url(url)
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"t-{uuid.uuid4().hex[:8]}",
                         protocol=MQTTProtocolVersion.MQTTv311)  # fmt: skip
    client.connect(host, port)
    client.loop_start()
    return client


def _wait(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.05)


@pytest.fixture
def ingestor(broker_url, session_factory):
    with session_scope(session_factory) as s:
        s.add(Region(code="341225100201", name="张庄村", level=RegionLevel.village))
        s.flush()
        for dev in ("sp-a", "sp-b"):
            device_service.register(session=s, device_id=dev, name=dev, area_code="341225100201")
        device_service.snapshot_deliveries(
            session=s, occurrence_id=OCC, devices=s.scalars(select(Device)).all()
        )
    link = MqttLink(broker_url, client_id=f"ingest-{uuid.uuid4().hex[:8]}")
    link.connect()
    ing = ReportIngestor(link=link, session_factory=session_factory)
    ing.start()
    time.sleep(0.3)  # let the SUBSCRIBE reach the broker
    # Other tests' retained online/status messages arrive on subscribe; count from after them.
    assert ing.flush()
    ing.baseline = dict(ing.counts)
    yield ing
    ing.stop()
    link.close()


def _states(session_factory) -> dict[str, str]:
    with session_factory() as s:
        return {d.device_id: d.state for d in s.scalars(select(Delivery)).all()}


def test_bad_messages_are_counted_and_good_ones_still_land(ingestor, broker_url, session_factory):
    pub = _publisher(broker_url)
    good = protocol.encode(
        protocol.Report(device_id="sp-a", occurrence_id=OCC, state="played", seconds_played=2)
    )
    forged = protocol.encode(protocol.Report(device_id="sp-b", occurrence_id=OCC, state="failed"))
    bad = [
        (protocol.device_topic("sp-a", "report"), b"not json"),
        (
            protocol.device_topic("sp-a", "report"),
            b'{"device_id": "sp-a", "occurrence_id": "x", "state": "played"}',
        ),
        (protocol.device_topic("sp-a", "report"), b"{" + b" " * (protocol.MAX_REPORT_BYTES + 10) + b"}"),
        (protocol.device_topic("sp-a", "report"), forged),  # sp-a claiming to speak for sp-b
        (protocol.device_topic("sp-a", "online"), b"maybe"),
        (protocol.device_topic("sp-a", "status"), b"[]"),
        (protocol.device_topic("ghost", "report"), good.replace(b"sp-a", b"ghost")),
    ]
    for topic, payload in bad:
        pub.publish(topic, payload, qos=1).wait_for_publish(5)
    pub.publish(protocol.device_topic("sp-a", "report"), good, qos=1).wait_for_publish(5)
    pub.publish(protocol.device_topic("sp-a", "online"), protocol.ONLINE, qos=1).wait_for_publish(5)

    def delta(key: str) -> int:
        return ingestor.counts[key] - ingestor.baseline.get(key, 0)

    _wait(lambda: delta("received") >= len(bad) + 2)
    assert ingestor.flush()
    assert delta("malformed") == 5
    assert delta("report_other_device") == 1
    assert delta("unknown_device") == 1
    assert delta("applied") == 1
    # the good report landed; the forged one did not touch sp-b
    assert _states(session_factory) == {"sp-a": "played", "sp-b": "pending"}
    with session_factory() as s:
        assert s.get(Device, "sp-a").online is True
    pub.loop_stop()
    pub.disconnect()


def test_statuses_land_with_bounded_history_and_deleted_retained_is_not_malformed(
    ingestor, broker_url, session_factory
):
    from datetime import UTC, datetime, timedelta

    from devices.models import DeviceCommand, DeviceCommandResult, DeviceStatus

    with session_scope(session_factory) as s:
        now = datetime.now(UTC)
        s.add(
            DeviceCommand(
                cmd_id="op-cmd-0001",
                type="set_volume",
                scope="device",
                target="sp-a",
                params={"volume": 40},
                expires_at=now + timedelta(minutes=5),
                targeted=1,
            )  # fmt: skip
        )
    pub = _publisher(broker_url)
    status_topic = protocol.device_topic("sp-a", "status")

    def status(**fields) -> bytes:
        return protocol.encode(protocol.Status(device_id="sp-a", firmware="fw/1", **fields))

    answered = protocol.CommandResult(cmd_id="op-cmd-0001", type="set_volume", ok=True)
    messages = [
        (status_topic, status(volume=80)),
        *[(status_topic, status(volume=80, uptime_s=n)) for n in range(1, 6)],  # heartbeats: no history
        (status_topic, status(volume=40, clock_offset_s=-0.02, commands=[answered])),  # a change
        (status_topic, status(volume=40, commands=[answered])),  # the same answer again: recorded once
        (status_topic, protocol.encode(protocol.Status(device_id="sp-b", volume=0))),  # a claims to be b
        (status_topic, b'{"device_id": "sp-a", "volume": 101}'),
        (status_topic, b"{" + b" " * protocol.MAX_REPORT_BYTES + b"}"),
        (protocol.device_topic("sp-b", "status"), b""),  # deleted retained messages
        (protocol.device_topic("sp-b", "online"), b""),
    ]

    def delta(key: str) -> int:
        return ingestor.counts[key] - ingestor.baseline.get(key, 0)

    for n, (topic, payload) in enumerate(messages, 1):  # one at a time: a batch keeps its newest status
        pub.publish(topic, payload, qos=1, retain=not payload).wait_for_publish(5)
        _wait(lambda n=n: delta("received") >= n)
        assert ingestor.flush()
    assert delta("malformed") == 2
    assert delta("status_other_device") == 1
    assert delta("retained_cleared") == 2
    with session_factory() as s:
        a, b = s.get(Device, "sp-a"), s.get(Device, "sp-b")
        assert (a.volume, a.firmware, a.clock_offset_s) == (40, "fw/1", None)  # the last status wins
        assert b.volume is None and b.status_at is None
        history = s.scalars(select(DeviceStatus).where(DeviceStatus.device_id == "sp-a")).all()
        assert [h.volume for h in history] == [80, 40, 40]  # first, change, clock offset gone
        results = s.scalars(select(DeviceCommandResult)).all()
        assert [(r.device_id, r.ok) for r in results] == [("sp-a", True)]
    pub.loop_stop()
    pub.disconnect()


def test_out_of_range_values_are_malformed_not_a_lost_batch(ingestor, broker_url, session_factory):
    """Values that parse as JSON but no database column holds (or the parser cannot nest) are
    refused one by one; sp-b's good report in the same batch still lands."""
    pub = _publisher(broker_url)
    topic = protocol.device_topic("sp-a", "report")
    base = '{"v":1,"device_id":"sp-a","occurrence_id":%s,"state":"played"%s}'
    bad = [
        (base % ("99999999999999999999", "")).encode(),  # beyond a 32-bit id
        (base % (OCC, ',"at":"9999-12-31T23:00:00-05:00"')).encode(),  # overflows on the way to UTC
        (base % (OCC, ',"seconds_played":Infinity')).encode(),
        (base % (OCC, ',"seconds_played":1e400')).encode(),
        b"[" * 1500 + b"]" * 1500,  # under the size limit, deeper than the parser's recursion limit
    ]
    good = protocol.encode(protocol.Report(device_id="sp-b", occurrence_id=OCC, state="played"))
    for payload in bad:
        pub.publish(topic, payload, qos=1).wait_for_publish(5)
    pub.publish(protocol.device_topic("sp-b", "report"), good, qos=1).wait_for_publish(5)

    def delta(key: str) -> int:
        return ingestor.counts[key] - ingestor.baseline.get(key, 0)

    _wait(lambda: delta("received") >= len(bad) + 1)
    assert ingestor.flush()
    assert delta("malformed") == len(bad)
    assert delta("batch_errors") == delta("write_errors") == 0
    assert _states(session_factory) == {"sp-a": "pending", "sp-b": "played"}
    pub.loop_stop()
    pub.disconnect()


def test_a_batch_the_database_refuses_is_stored_message_by_message(
    ingestor, broker_url, session_factory, monkeypatch
):
    """If storing a batch fails (here: the writer raises for sp-a's report), the ingestor stores its
    messages one by one: sp-a's is counted as a write error, sp-b's report and online flag land."""
    real = report_writer.apply_reports

    def refuse_sp_a(*, session, reports):
        if any(r.device_id == "sp-a" for r, _ in reports):
            raise RuntimeError("database refused the row")
        return real(session=session, reports=reports)

    monkeypatch.setattr(report_writer, "apply_reports", refuse_sp_a)
    pub = _publisher(broker_url)
    for device in ("sp-a", "sp-b"):
        report = protocol.Report(device_id=device, occurrence_id=OCC, state="played")
        pub.publish(protocol.device_topic(device, "report"), protocol.encode(report), qos=1)
    pub.publish(protocol.device_topic("sp-b", "online"), protocol.ONLINE, qos=1).wait_for_publish(5)

    def delta(key: str) -> int:
        return ingestor.counts[key] - ingestor.baseline.get(key, 0)

    _wait(lambda: delta("received") >= 3)
    assert ingestor.flush()
    assert delta("write_errors") == 1
    assert delta("applied") == 1
    assert _states(session_factory) == {"sp-a": "pending", "sp-b": "played"}
    with session_factory() as s:
        assert s.get(Device, "sp-b").online is True
    pub.loop_stop()
    pub.disconnect()


def test_a_batch_of_online_flags_costs_a_few_statements_not_one_per_speaker(engine, session_factory):
    """50 speakers come online in one batch: their devices are loaded by one query and written by
    one flush, however many there are (each set_online used to load its device again)."""
    with session_scope(session_factory) as s:
        s.add(Region(code="341225100201", name="张庄村", level=RegionLevel.village))
        s.flush()
        for n in range(50):
            device_service.register(session=s, device_id=f"on-{n}", name=f"on-{n}", area_code="341225100201")
    statements: list[str] = []
    event.listen(engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    at = utcnow()
    ingestor = ReportIngestor(link=None, session_factory=session_factory)
    ingestor._store(_Parsed(online={f"on-{n}": (True, at) for n in range(50)}))
    selects = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
    assert len(selects) == 1, selects
    assert len(statements) <= 5, statements  # the load, the devices' UPDATE, the history INSERT(s)
    with session_factory() as s:
        devices = s.scalars(select(Device).where(Device.id.like("on-%"))).all()
        assert len(devices) == 50 and all(d.online and d.online_changed_at == at for d in devices)
