"""Sending commands to speakers: the one place a command becomes signed bytes on a topic.

Every sender (scheduler dispatch, operator commands, the fleet monitor's sync) holds a
`CommandSender`, built once at start with the link and the server's signer, so every command is
signed without the sender knowing how: it adds the topics the command is sent to (`to`), the key
id and the Ed25519 signature (docs/protocol.md §9), and serialises the result once.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence

from cunxiang_shared import protocol
from cunxiang_shared.signing import Signer
from devices.transport import Link

log = logging.getLogger(__name__)


class CommandSender:
    """Signs commands with the server's key and publishes them on their topics at the command QoS."""

    def __init__(self, *, link: Link, signer: Signer) -> None:
        self.link = link
        self.signer = signer

    def sign(self, command: protocol.AnyCommand, topics: Sequence[str]) -> list[tuple[list[str], bytes]]:
        """The command signed for these topics: one payload, or several while one would exceed the limit."""
        message = command.model_dump(mode="json")
        return self._signed_chunks(message, list(dict.fromkeys(topics)))

    def send(self, command: protocol.AnyCommand, topics: Iterable[str]) -> int:
        """Sign the command for these topics and publish it to each; return how many publishes."""
        topics = list(dict.fromkeys(topics))
        if not topics:
            return 0
        n = 0
        for chunk, payload in self.sign(command, topics):
            for topic in chunk:
                self.link.publish(topic, payload, qos=protocol.QOS_COMMAND)
                n += 1
        return n

    def _encode(self, message: dict[str, object], topics: Sequence[str]) -> bytes:
        signed = self.signer.sign(message, topics)
        return json.dumps(signed, ensure_ascii=False, separators=(",", ":")).encode()

    def _signed_chunks(self, message: dict[str, object], topics: list[str]) -> list[tuple[list[str], bytes]]:
        """Sign for all topics at once, or for halves while the message would exceed the size limit."""
        payload = self._encode(message, topics)
        if len(payload) <= protocol.MAX_COMMAND_BYTES or len(topics) == 1:
            return [(topics, payload)]
        half = len(topics) // 2
        return self._signed_chunks(message, topics[:half]) + self._signed_chunks(message, topics[half:])
