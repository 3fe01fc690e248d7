"""docs/conformance/vectors.json: the project's own agent and ingest parser give every vector its outcome.

A vendor tests a speaker with the same file, without the server (docs/protocol.md §12).
"""

from __future__ import annotations

import importlib.util
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from cunxiang_agent.speaker import Speaker
from cunxiang_shared import protocol
from cunxiang_shared.protocol import ProtocolError
from cunxiang_shared.signing import read_public_keys

REPO = Path(__file__).resolve().parents[2]
VECTORS_FILE = REPO / "docs" / "conformance" / "vectors.json"
VECTORS = json.loads(VECTORS_FILE.read_text(encoding="utf-8"))
REFUSALS = {"malformed", "unsigned", "unknown_key", "bad_signature", "wrong_topic", "expired"}


def test_the_file_is_what_the_generator_writes() -> None:
    # Ed25519 is deterministic: the server's Signer signs the vectors to the same bytes every time.
    spec = importlib.util.spec_from_file_location(
        "make_vectors", REPO / "docs" / "conformance" / "make_vectors.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.render() == VECTORS_FILE.read_text(encoding="utf-8")


def test_every_outcome_and_refusal_reason_has_vectors() -> None:
    assert {v["outcome"] for v in VECTORS["commands"]} == REFUSALS | {"accepted", "duplicate"}
    assert {v["outcome"] for v in VECTORS["reports"]} == {"accepted", "malformed"}


def _speaker(tmp_path: Path, now: str) -> Speaker:
    speaker = Speaker(
        "fn-0101-01",
        "341225100201",
        broker="mqtt://127.0.0.1:1",
        cache=tmp_path / "cache",
        trusted_keys=read_public_keys(VECTORS["trusted_keys"]),
    )
    # The speaker's clock reads the vector's `now` (the simulation's clock error, set exactly).
    speaker.clock_skew_s = (datetime.fromisoformat(now) - datetime.now(UTC)).total_seconds()
    return speaker


@pytest.mark.parametrize("vector", VECTORS["commands"], ids=lambda v: v["name"])
def test_the_agent_gives_each_command_its_outcome(vector: dict, tmp_path: Path) -> None:
    speaker = _speaker(tmp_path, vector["now"])
    for cmd_id in vector.get("handled", []):
        speaker._cmd_ids[cmd_id] = datetime.fromisoformat(vector["now"])  # handled; kept at least till now
    payload = vector["payload"].encode()
    accepted = speaker._accept(vector["topic"], payload)
    if vector["outcome"] == "accepted":
        assert accepted is not None, speaker.last_rejection
        assert dict(speaker.rejected) == {}
    elif vector["outcome"] == "duplicate":
        assert accepted is None
        assert (speaker.counters["duplicate"], dict(speaker.rejected)) == (1, {})
    else:
        assert accepted is None
        assert dict(speaker.rejected) == {vector["outcome"]: 1}, speaker.last_rejection
    then = vector.get("then")
    if then is not None:  # what the speaker does next: handled afresh, as it arrives
        speaker = _speaker(tmp_path, vector["now"])
        speaker.handle(vector["topic"], payload)
        report = speaker.reports[-1]
        assert (report.occurrence_id, report.state) == (
            then["report"]["occurrence_id"],
            then["report"]["state"],
        )


@pytest.mark.parametrize("vector", VECTORS["reports"], ids=lambda v: v["name"])
def test_the_ingest_parser_gives_each_report_its_outcome(vector: dict) -> None:
    payload = vector["payload"].encode()
    if vector["outcome"] == "accepted":
        assert protocol.parse_report(payload).device_id == "fn-0101-01"
    else:
        with pytest.raises(ProtocolError):
            protocol.parse_report(payload)
