"""Errors of the scheduling domain, in the one family (core.errors)."""

from __future__ import annotations

from core.errors import Conflict, Forbidden, InvalidInput, NotFound

# The family's classes under the names this domain has always used.
InvalidState = Conflict
__all__ = ["BroadcastError", "Conflict", "Forbidden", "InvalidInput", "InvalidState", "NotFound",
           "QuietHoursRefusal"]  # fmt: skip


class BroadcastError(InvalidInput):
    """A broadcast request that cannot be accepted; `field` names the offending input."""


class QuietHoursRefusal(BroadcastError):
    """Routine airings that fall in quiet hours: `count` of them, `listed` spelled out (local times)."""

    def __init__(self, field: str, *, count: int, listed: str) -> None:
        super().__init__(
            field,
            f"{count} airing(s) fall in quiet hours, when only emergency broadcasts may air: {listed}",
            reason="quiet_hours",
        )
        self.count = count
        self.listed = listed
