"""Which commands count towards a speaker's clock offset: authentic, new and fresh ones only.

Replayed genuine old commands (refused as `expired` after a restart) once pulled a speaker's
`clock_offset_s` to -314 s and raised a false `clock_drift` alarm.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cunxiang_agent.speaker import Speaker
from cunxiang_shared import protocol
from cunxiang_shared.signing import Signer

AREA = "341225100201"


def _speaker(tmp_path: Path, signer: Signer) -> Speaker:
    return Speaker(
        "spk-1", AREA, broker="mqtt://127.0.0.1:1", cache=tmp_path / "cache", trusted_keys=[signer.public_key]
    )


def _volume(signer: Signer, topic: str, issued_at: datetime, cmd_id: str) -> bytes:
    command = protocol.SetVolumeCommand(volume=40, issued_at=issued_at, cmd_id=cmd_id)
    return json.dumps(signer.sign(json.loads(protocol.encode(command)), [topic])).encode()


def test_replayed_old_commands_do_not_move_the_clock_offset(tmp_path: Path) -> None:
    signer = Signer.generate()
    speaker = _speaker(tmp_path, signer)
    topic = protocol.device_topic("spk-1", "cmd")
    now = datetime.now(UTC)
    # A restarted speaker knows nothing yet; genuine commands from 10 minutes ago are replayed.
    old = _volume(signer, topic, now - timedelta(seconds=614), "replayed-0001")
    speaker.handle(topic, old)
    speaker.handle(topic, old)
    assert speaker.rejected["expired"] == 2
    assert speaker.clock_offset_s is None
    assert speaker.status().clock_offset_s is None
    # A fresh command is a sample; its redelivery (a duplicate) is not one more.
    fresh = _volume(signer, topic, now - timedelta(seconds=2), "fresh-000001")
    speaker.handle(topic, fresh)
    speaker.handle(topic, fresh)
    assert speaker.counters["duplicate"] == 1
    assert speaker.clock_offset_s is not None and -3.0 < speaker.clock_offset_s <= -2.0
    assert len(speaker._clock_samples) == 1
    # A forged (badly signed) command with a far-future issued_at counts for nothing either.
    forged = json.loads(_volume(Signer.generate(), topic, now + timedelta(seconds=200), "forged-00001"))
    forged["key_id"] = signer.key_id
    speaker.handle(topic, json.dumps(forged).encode())
    assert speaker.rejected["bad_signature"] == 1
    assert len(speaker._clock_samples) == 1


def test_a_remembered_command_past_its_expiry_is_expired_not_a_duplicate(tmp_path: Path) -> None:
    signer = Signer.generate()
    speaker = _speaker(tmp_path, signer)
    topic = protocol.device_topic("spk-1", "cmd")
    issued = datetime.now(UTC) - timedelta(seconds=protocol.COMMAND_TTL_S - 60)
    payload = _volume(signer, topic, issued, "command-0001")
    speaker.handle(topic, payload)
    assert speaker.volume == 40
    speaker.clock_skew_s = 120.0  # two minutes later (on this speaker's clock) it has expired
    speaker.handle(topic, payload)
    assert (speaker.rejected["expired"], speaker.counters["duplicate"]) == (1, 0)
