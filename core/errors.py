"""The error family: every refusal a service raises for a caller to answer is a CunxiangError.

Services raise these; `api/errors.py` maps them to HTTP once (the console and the CLI map them by
type too). Nobody decides anything by matching message text: a caller that must tell two refusals
of the same type apart reads `reason`, a short stable code (e.g. ``emergency_second_person``).

    CunxiangError
    ├── NotFound        no such thing (404)
    ├── Forbidden       the user may not do this here (403)
    ├── Conflict        the action does not fit the current state (409)
    ├── InvalidInput    a request field is wrong; `field` names it (422)
    └── Unavailable     a service we depend on could not serve: broker, speech engine (503)
"""

from __future__ import annotations


class CunxiangError(Exception):
    """Base of the family. `message` is English for logs and the API; `reason` a stable code."""

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason


class NotFound(CunxiangError):
    """No such broadcast, area, device, playlist, asset or command."""


class Forbidden(CunxiangError):
    """The user's role or area does not allow this action."""


class Conflict(CunxiangError):
    """The action does not fit the object's state (approving a draft, cancelling a finished item)."""


class InvalidInput(CunxiangError):
    """A request that cannot be accepted as given; `field` names the offending input (dotted path)."""

    def __init__(self, field: str, message: str, *, reason: str | None = None) -> None:
        super().__init__(message, reason=reason)
        self.field = field

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


class Unavailable(CunxiangError):
    """Something the action needs did not answer (MQTT broker, speech engine, signing key)."""
