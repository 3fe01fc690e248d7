"""The wire parses strictly: exact JSON types, RFC 3339 times, no repeated member names.

A vendor's typo must be refused (and counted), never turned into another figure: `"3"` is not the
occurrence 3, `true` is not 1, and `{"state": "failed", "state": "played"}` says nothing.
"""

from __future__ import annotations

import json

import pytest

from cunxiang_shared import protocol
from cunxiang_shared.protocol import ProtocolError

GOOD_REPORT = {
    "v": 1,
    "device_id": "spk-1",
    "occurrence_id": 3,
    "state": "played",
    "at": "2026-03-02T08:30:27.123Z",
    "seconds_played": 27.1,
    "error": None,
}


def _report(**changes: object) -> bytes:
    return json.dumps({**GOOD_REPORT, **changes}).encode()


def test_a_good_report_parses() -> None:
    report = protocol.parse_report(_report())
    assert (report.occurrence_id, report.state, report.seconds_played) == (3, "played", 27.1)
    # Without `v` a message is version 1; an integral number of seconds is a number of seconds.
    assert protocol.parse_report(_report(v=None, seconds_played=27).replace(b'"v": null, ', b"")).v == 1
    assert protocol.parse_report(_report(seconds_played=27)).seconds_played == 27.0


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"occurrence_id": "3"}, "occurrence_id"),
        ({"occurrence_id": True}, "occurrence_id"),
        ({"occurrence_id": 3.0}, "occurrence_id"),
        ({"v": True}, "v"),
        ({"v": "1"}, "v"),
        ({"v": 2}, "v"),
        ({"seconds_played": "27.1"}, "seconds_played"),
        ({"seconds_played": True}, "seconds_played"),
        ({"device_id": 7}, "device_id"),
        ({"state": "PLAYED"}, "state"),
        ({"at": 1772440227}, "at"),
        ({"at": "2026-03-02 08:30:27Z"}, "at"),  # RFC 3339 allows a space; our profile does not
        ({"at": "2026-03-02T08:30:27"}, "at"),  # no offset: a local time of nowhere
        ({"at": "2026-03-02T08:30Z"}, "at"),  # no seconds
        ({"at": "2026-W10-1T08:30:27Z"}, "at"),
        ({"error": 5}, "error"),
    ],
)
def test_a_report_of_the_wrong_json_type_is_refused(changes: dict[str, object], field: str) -> None:
    with pytest.raises(ProtocolError, match=field):
        protocol.parse_report(_report(**changes))


@pytest.mark.parametrize(
    "payload",
    [
        # The case that changed figures: the first `state` was taken by nobody, the last by us.
        b'{"v":1,"device_id":"spk-1","occurrence_id":3,"state":"played","at":"2026-03-02T08:30:27Z",'
        b'"state":"failed"}',
        b'{"v":1,"device_id":"spk-1","occurrence_id":3,"occurrence_id":4,"state":"played",'
        b'"at":"2026-03-02T08:30:27Z"}',
        # The same name spelt with an escape is the same name.
        b'{"v":1,"device_id":"spk-1","occurrence_id":3,"state":"played","at":"2026-03-02T08:30:27Z",'
        b'"st\\u0061te":"failed"}',
        # Spaces around the colon change nothing.
        b'{"v":1,"device_id":"spk-1","occurrence_id":3,"state" : "played","at":"2026-03-02T08:30:27Z",'
        b'"state"  :"failed"}',
    ],
)
def test_a_report_with_a_repeated_member_is_refused(payload: bytes) -> None:
    with pytest.raises(ProtocolError, match="duplicate member"):
        protocol.parse_report(payload)


def test_a_name_that_only_appears_in_a_value_is_not_a_repeat() -> None:
    payload = _report(state="failed", error='decoder said "state": broken')
    assert protocol.parse_report(payload).error == 'decoder said "state": broken'


def test_a_status_with_nested_objects_parses_and_a_repeat_inside_them_is_refused() -> None:
    status = {
        "device_id": "spk-1",
        "at": "2026-03-02T08:30:27Z",
        "last_rejection": {"reason": "expired", "at": "2026-03-02T08:30:20Z"},
        "commands": [{"cmd_id": "c1234567", "type": "stop", "ok": True, "at": "2026-03-02T08:30:21Z"}],
    }
    assert protocol.parse_status(json.dumps(status).encode()).last_rejection.reason == "expired"
    repeated = json.dumps(status).replace('"ok": true', '"ok": true, "ok": false').encode()
    with pytest.raises(ProtocolError, match="duplicate member 'ok'"):
        protocol.parse_status(repeated)
    with pytest.raises(ProtocolError, match="ok"):
        protocol.parse_status(json.dumps(status).replace('"ok": true', '"ok": 1').encode())


def test_commands_parse_strictly_on_the_agent_side() -> None:
    play = json.loads(protocol.encode(_play()))
    assert protocol.parse_command(json.dumps(play).encode()).occurrence_id == 3
    wrong = [("occurrence_id", "3"), ("priority", True), ("volume", 50.0), ("start_at", 1772440227)]
    for field, bad in wrong:
        with pytest.raises(ProtocolError, match=field):
            protocol.parse_command(json.dumps({**play, field: bad}).encode())
    text = json.dumps(play)
    with pytest.raises(ProtocolError, match="duplicate member 'occurrence_id'"):
        twice = text.replace('"occurrence_id": 3', '"occurrence_id": 3, "occurrence_id": 4')
        protocol.parse_command(twice.encode())
    # Sizes are still checked before anything else.
    with pytest.raises(ProtocolError, match="exceeds"):
        protocol.parse_report(b" " * (protocol.MAX_REPORT_BYTES + 1))


def _play() -> protocol.PlayCommand:
    from datetime import UTC, datetime, timedelta

    start = datetime(2026, 3, 2, 8, 30, tzinfo=UTC)
    return protocol.PlayCommand(
        occurrence_id=3, broadcast_id=1, audio_url="http://x/a.mp3", sha256="0" * 64, size_bytes=10,
        duration_s=27.1, start_at=start, expires_at=start + timedelta(minutes=5), priority=50,
        issued_at=start - timedelta(minutes=1), volume=None,
    )  # fmt: skip
