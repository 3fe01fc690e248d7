"""Errors of the scheduling domain."""

from __future__ import annotations


class BroadcastError(ValueError):
    """A broadcast request that cannot be accepted; `field` names the offending input."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class NotFound(LookupError):
    """No such broadcast or occurrence."""


class Forbidden(PermissionError):
    """The user may not act on these areas."""


class InvalidState(RuntimeError):
    """The action does not fit the broadcast's state (e.g. approving a draft)."""
