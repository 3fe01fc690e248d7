"""Delivery states: where one occurrence stands on one speaker, as the server records it.

A speaker reports the states in REPORTED_STATES (docs/protocol.md §5.1); the server adds
`pending` (sent, nothing heard yet) and `no_report` (the deadline passed without a final report).
"""

from __future__ import annotations

import enum
from typing import Literal


class DeliveryState(enum.StrEnum):
    pending = "pending"  # snapshotted, nothing heard yet
    received = "received"
    playing = "playing"
    played = "played"  # played to the end
    failed = "failed"
    skipped = "skipped"  # the speaker decided not to play (expired, busy with higher priority)
    preempted = "preempted"
    no_report = "no_report"  # deadline passed without a final report


# A delivery only moves forward through these ranks; final states never change.
STATE_RANK: dict[DeliveryState, int] = {
    DeliveryState.pending: 0,
    DeliveryState.received: 1,
    DeliveryState.playing: 2,
    DeliveryState.played: 3,
    DeliveryState.failed: 3,
    DeliveryState.skipped: 3,
    DeliveryState.preempted: 3,
    DeliveryState.no_report: 3,
}
FINAL_STATES: frozenset[DeliveryState] = frozenset(s for s, rank in STATE_RANK.items() if rank == 3)

# What a speaker may say in a report (the wire form of the states it can reach by itself).
ReportState = Literal["received", "playing", "played", "failed", "skipped", "preempted"]
