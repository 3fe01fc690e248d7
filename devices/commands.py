"""Sending commands to speakers: the one place a command becomes signed bytes on a topic.

Every sender (scheduler dispatch, device commands from the API, the fleet monitor's sync) goes
through `encode_command` and `publish`, so every command is signed without the sender knowing:
`publish` adds the topics it is sent to (`to`), the key id and the Ed25519 signature
(docs/protocol.md §9). The server process installs its signer once at start (`install_signer`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence

from cunxiang_shared import protocol
from cunxiang_shared.signing import SIG_FIELD, Signer
from devices.transport import Link

log = logging.getLogger(__name__)

_signer: Signer | None = None


class SigningKeyMissing(RuntimeError):
    """No command-signing key is installed in this process: commands cannot be sent."""


def install_signer(signer: Signer | None) -> None:
    """Make `signer` sign every command this process publishes (None to remove it)."""
    global _signer
    _signer = signer


def current_signer() -> Signer:
    """The installed signer, or raise SigningKeyMissing."""
    if _signer is None:
        raise SigningKeyMissing(
            "no command-signing key installed: the server loads it from the data directory at start "
            "(`cunxiang keys generate` creates one)"
        )
    return _signer


def encode_command(command: protocol.AnyCommand, *, topics: Iterable[str] | None = None) -> bytes:
    """The command's JSON; signed for `topics` when given, else `publish` signs it for its topics."""
    payload = protocol.encode(command)
    if topics is None:
        return payload
    return _sign(json.loads(payload), list(topics))


def _sign(message: dict[str, object], topics: Sequence[str]) -> bytes:
    signed = current_signer().sign(message, topics)
    return json.dumps(signed, ensure_ascii=False, separators=(",", ":")).encode()


def _signed_chunks(message: dict[str, object], topics: list[str]) -> list[tuple[list[str], bytes]]:
    """Sign for all topics at once, or for halves while the message would exceed the size limit."""
    payload = _sign(message, topics)
    if len(payload) <= protocol.MAX_COMMAND_BYTES or len(topics) == 1:
        return [(topics, payload)]
    half = len(topics) // 2
    return _signed_chunks(message, topics[:half]) + _signed_chunks(message, topics[half:])


def publish(*, link: Link, topics: Iterable[str], payload: bytes) -> int:
    """Sign the encoded command for these topics, publish it to each at the command QoS; return how many."""
    topics = list(dict.fromkeys(topics))
    if not topics:
        return 0
    message = json.loads(payload)
    if SIG_FIELD in message:
        chunks = [(topics, payload)]  # signed by the caller (encode_command with topics)
    else:
        chunks = _signed_chunks(message, topics)
    n = 0
    for chunk, signed in chunks:
        for topic in chunk:
            link.publish(topic, signed, qos=protocol.QOS_COMMAND)
            n += 1
    return n
