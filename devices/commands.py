"""Sending commands to speakers: the one place a command becomes bytes on a topic.

Signing (issue "Speakers") belongs here, so every sender (scheduler dispatch, device
commands from the API) gets it without knowing about it.
"""

from __future__ import annotations

from collections.abc import Iterable

from devices import protocol
from devices.transport import Link


def encode_command(command: protocol.PlayCommand | protocol.StopCommand | protocol.SetVolumeCommand
                   | protocol.TestToneCommand | protocol.SyncCommand) -> bytes:  # fmt: skip
    """The bytes a speaker receives for this command."""
    return protocol.encode(command)


def publish(*, link: Link, topics: Iterable[str], payload: bytes) -> int:
    """Publish one encoded command to each topic at the command QoS; return how many."""
    n = 0
    for topic in topics:
        link.publish(topic, payload, qos=protocol.QOS_COMMAND)
        n += 1
    return n
