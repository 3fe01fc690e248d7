"""The speaker wire protocol, version 1: topics and JSON messages (see docs/protocol.md).

Shared by the server and the speaker agent (package cunxiang-shared), so it imports nothing of
the server: only the standard library, pydantic and the sibling modules `areas` and `states`.
"""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal, TypeVar

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    Strict,
    TypeAdapter,
    ValidationError,
)

from cunxiang_shared import areas
from cunxiang_shared.states import ReportState

VERSION = 1
PREFIX = f"cx/v{VERSION}"

# Oversized messages are dropped before parsing: a play command is ~600 bytes.
MAX_COMMAND_BYTES = 16 * 1024
MAX_REPORT_BYTES = 4 * 1024

# A command other than `play` may be acted on until this long after it was issued (a play says
# itself how long it may start: its own `expires_at`).
COMMAND_TTL_S = 300.0
# An area's emergency stop-all (`stop` with occurrence_id null) means "now": one that reaches a
# speaker later than this (held by a broker outage) is void, so it cannot silence a later airing.
STOP_ALL_TTL_S = 30.0

QOS_COMMAND = 1
QOS_REPORT = 1
QOS_STATUS = 1

DEVICE_ID_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
SHA256_RE = r"^[0-9a-f]{64}$"
# Ids and counters fit a signed 32-bit column on every database; larger ones are malformed.
MAX_INT = 2**31 - 1
# Timestamps outside these years are malformed (and could not even be converted to UTC).
MIN_YEAR, MAX_YEAR = 2000, 2200
# The one time profile on the wire: RFC 3339 `date-time` with a `T`, seconds, an optional fraction
# and an explicit offset (`Z` or +hh:mm); no week dates, no missing seconds, no local times.
RFC3339_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})$")


class ProtocolError(ValueError):
    """A message that does not follow the protocol; the text says why."""


# ---------------------------------------------------------------- topics


def area_command_topic(area_code: str) -> str:
    """Commands for every speaker in an area (and all areas under it that subscribe)."""
    return f"{PREFIX}/area/{area_code}/cmd"


def device_topic(device_id: str, leaf: str) -> str:
    """`cmd`, `report`, `status` or `online` topic of one speaker."""
    return f"{PREFIX}/dev/{device_id}/{leaf}"


def area_chain(area_code: str) -> list[str]:
    """County, township and village codes an area belongs to, widest first, itself last.

    ``341225100201`` -> ``["341225000000", "341225100000", "341225100201"]``.
    """
    try:
        return areas.chain(area_code)
    except areas.InvalidAreaCode as exc:
        raise ProtocolError(str(exc)) from None


def subscriptions(device_id: str, area_code: str) -> list[str]:
    """Every topic a speaker subscribes to: its area chain's command topics and its own."""
    return [area_command_topic(code) for code in area_chain(area_code)] + [device_topic(device_id, "cmd")]


def device_id_from_topic(topic: str) -> tuple[str, str]:
    """Split ``cx/v1/dev/{id}/{leaf}`` into (id, leaf), or raise ProtocolError."""
    parts = topic.split("/")
    if len(parts) != 5 or f"{parts[0]}/{parts[1]}" != PREFIX or parts[2] != "dev":
        raise ProtocolError(f"not a device topic: {topic!r}")
    if not DEVICE_ID_RE.match(parts[3]):
        raise ProtocolError(f"bad device id in topic: {topic!r}")
    return parts[3], parts[4]


# ---------------------------------------------------------------- messages


def _rfc3339(value: object) -> object:
    # On the wire a time is a string; Python callers (the server building a command) pass datetimes.
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str) or not RFC3339_RE.match(value):
        raise ValueError("a time must be an RFC 3339 string with an offset, e.g. 2026-03-02T08:30:00Z")
    return value


def _sane_time(value: datetime) -> datetime:
    try:
        year = value.astimezone(UTC).year
    except OverflowError:
        raise ValueError("timestamp out of range") from None
    if not MIN_YEAR <= year <= MAX_YEAR:
        raise ValueError(f"timestamp must lie in the years {MIN_YEAR}-{MAX_YEAR}")
    return value


Id = Annotated[int, Field(ge=1, le=MAX_INT)]
Count = Annotated[int, Field(ge=0, le=MAX_INT)]

Timestamp = Annotated[
    AwareDatetime,
    # Strict elsewhere, but JSON has no time type: the string is checked against RFC3339_RE first.
    Strict(False),
    BeforeValidator(_rfc3339),
    AfterValidator(_sane_time),
    PlainSerializer(
        lambda v: v.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        return_type=str,
    ),
]


def _now() -> datetime:
    return datetime.now(UTC)


def new_cmd_id() -> str:
    """A fresh command id (also the nonce)."""
    return uuid.uuid4().hex


class _Message(BaseModel):
    # Unknown fields are ignored so a newer server can add fields without breaking old speakers.
    # Infinity and NaN are not JSON, but Python's parser accepts them: refuse them.
    # Strict: exact JSON types ("3" and true are not the integer 3 or 1; 3.0 is not an integer),
    # so a vendor's typo is refused, never silently turned into another figure.
    model_config = ConfigDict(extra="ignore", frozen=True, allow_inf_nan=False, strict=True)
    # Optional: a message without `v` is version 1; any other value (true, "1", 2) is refused.
    v: Annotated[int, Field(ge=VERSION, le=VERSION)] = VERSION


class _Command(_Message):
    cmd_id: str = Field(default_factory=new_cmd_id, min_length=8, max_length=64)
    issued_at: Timestamp = Field(default_factory=_now)
    # After this the command is void: a speaker drops it (a late play is reported `skipped`).
    expires_at: Timestamp = Field(
        default_factory=lambda data: data["issued_at"] + timedelta(seconds=COMMAND_TTL_S)
    )


class PlayCommand(_Command):
    """Download the audio, check it, play it at start_at."""

    type: Literal["play"] = "play"
    occurrence_id: Id
    broadcast_id: Id
    title: str = Field(default="", max_length=200)
    audio_url: str = Field(min_length=1, max_length=2048)
    sha256: str = Field(pattern=SHA256_RE)
    size_bytes: int = Field(ge=0, le=2**40)
    duration_s: float = Field(gt=0, le=24 * 3600)
    start_at: Timestamp
    expires_at: Timestamp
    priority: int = Field(ge=0, le=100)
    volume: int | None = Field(default=None, ge=0, le=100)


class StopCommand(_Command):
    """Stop an occurrence (or whatever plays, when occurrence_id is null) and forget it."""

    type: Literal["stop"] = "stop"
    occurrence_id: Id | None = None


class SetVolumeCommand(_Command):
    type: Literal["set_volume"] = "set_volume"
    volume: int = Field(ge=0, le=100)


class TestToneCommand(_Command):
    type: Literal["test_tone"] = "test_tone"
    duration_s: float = Field(default=3.0, gt=0, le=60)


class SyncCommand(_Command):
    """Republish status now; with reports_since, also every report made since then (server time)."""

    type: Literal["sync"] = "sync"
    reports_since: Timestamp | None = None


Command = Annotated[
    PlayCommand | StopCommand | SetVolumeCommand | TestToneCommand | SyncCommand,
    Field(discriminator="type"),
]
_command_adapter: TypeAdapter[Command] = TypeAdapter(Command)


class Report(_Message):
    """What a speaker did with one occurrence."""

    device_id: str = Field(pattern=DEVICE_ID_RE.pattern)
    occurrence_id: Id
    state: ReportState
    at: Timestamp = Field(default_factory=_now)
    seconds_played: float | None = Field(default=None, ge=0, le=24 * 3600)
    error: str | None = Field(default=None, max_length=500)


class CommandResult(_Message):
    """What a speaker did with one non-play command (set_volume, test_tone, stop, sync)."""

    cmd_id: str = Field(min_length=1, max_length=64)
    type: str = Field(max_length=16)
    ok: bool
    error: str | None = Field(default=None, max_length=200)
    at: Timestamp = Field(default_factory=_now)


class Rejection(_Message):
    """The last command a speaker refused: unsigned, badly signed, expired, replayed or malformed."""

    reason: str = Field(max_length=32)
    detail: str = Field(default="", max_length=200)
    cmd_id: str | None = Field(default=None, max_length=64)
    topic: str = Field(default="", max_length=200)
    at: Timestamp = Field(default_factory=_now)


class Status(_Message):
    """Retained heartbeat of a speaker."""

    device_id: str = Field(pattern=DEVICE_ID_RE.pattern)
    state: Literal["idle", "downloading", "playing"] = "idle"
    volume: int = Field(default=80, ge=0, le=100)
    occurrence_id: Id | None = None
    firmware: str = Field(default="", max_length=64)
    uptime_s: float = Field(default=0, ge=0)
    fault: str | None = Field(default=None, max_length=200)
    last_cmd_id: str | None = Field(default=None, max_length=64)
    at: Timestamp = Field(default_factory=_now)
    # Added in the "Speakers" issue; optional, so older speakers stay valid.
    clock_offset_s: float | None = Field(default=None, ge=-86400 * 366, le=86400 * 366)
    pending: Count | None = Field(default=None, description="airings held locally, not yet final")
    queued_reports: Count | None = None
    rejected: dict[str, Count] | None = Field(default=None, max_length=16)
    last_rejection: Rejection | None = None
    commands: list[CommandResult] | None = Field(default=None, max_length=8)


ONLINE = b"1"
OFFLINE = b"0"


def encode(message: BaseModel) -> bytes:
    """Compact UTF-8 JSON of a message."""
    return message.model_dump_json(exclude_none=False).encode()


def _unique_members(pairs: list[tuple[str, object]]) -> dict[str, object]:
    """object_pairs_hook: an object whose member names repeat is not a message (RFC 8259 §4 leaves
    it to the parser; last-wins would let `"state"` say two things)."""
    data = dict(pairs)
    if len(data) != len(pairs):
        seen: set[str] = set()
        name = next(k for k, _ in pairs if k in seen or seen.add(k))  # type: ignore[func-returns-value]
        raise ProtocolError(f"duplicate member {name!r}")
    return data


def _may_repeat_members(payload: bytes, names: tuple[bytes, ...]) -> bool:
    """False when none of the model's member names occurs twice in the text and nothing is escaped
    (the common case, decided in C); True when one might repeat. Members the model does not know
    are ignored, whether or not they repeat: they change nothing."""
    return b"\\" in payload or max(map(payload.count, names)) > 1


_quoted_names: dict[type[BaseModel], tuple[bytes, ...]] = {}


def _names(model: type[BaseModel]) -> tuple[bytes, ...]:
    names = _quoted_names.get(model)
    if names is None:
        names = _quoted_names[model] = tuple(f'"{name}"'.encode() for name in model.model_fields)
    return names


def _load(payload: bytes, limit: int) -> object:
    if len(payload) > limit:
        raise ProtocolError(f"message of {len(payload)} bytes exceeds {limit}")
    try:
        return json.loads(payload, object_pairs_hook=_unique_members)
    except ProtocolError:
        raise
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProtocolError(f"not JSON: {exc}") from None
    except (RecursionError, ValueError) as exc:  # nesting too deep, numbers too long
        raise ProtocolError(f"not acceptable JSON: {type(exc).__name__}") from None


def _explain(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "message"
    return f"{where}: {first['msg']}"


AnyCommand = PlayCommand | StopCommand | SetVolumeCommand | TestToneCommand | SyncCommand


def load_command(payload: bytes) -> dict[str, object]:
    """The JSON object of a command message (size and syntax checked), or raise ProtocolError."""
    data = _load(payload, MAX_COMMAND_BYTES)
    if not isinstance(data, dict):
        raise ProtocolError("a command must be a JSON object")
    return data


# Members a message must carry on the wire, although a model built in Python fills them itself
# (a fresh cmd_id, the time now): on the wire a missing one would be invented, not read.
COMMAND_WIRE_REQUIRED = ("cmd_id", "issued_at", "expires_at")
REPORT_WIRE_REQUIRED = ("at",)


def _require(message: BaseModel, names: tuple[str, ...]) -> None:
    for name in names:
        if name not in message.model_fields_set:
            raise ProtocolError(f"{name}: Field required")


def command_from(data: object, *, wire: bool = False) -> AnyCommand:
    """Validate a loaded command object, or raise ProtocolError saying which field is wrong.

    `wire=True` for a command received (the speaker): cmd_id, issued_at and expires_at must be in
    it. Without, the server builds one from an operator's fields and those are filled in."""
    try:
        command = _command_adapter.validate_python(data)
    except ValidationError as exc:
        raise ProtocolError(_explain(exc)) from None
    if wire:
        _require(command, COMMAND_WIRE_REQUIRED)
    return command


def parse_command(payload: bytes) -> AnyCommand:
    """Parse a received command, or raise ProtocolError saying which field is wrong."""
    return command_from(_load(payload, MAX_COMMAND_BYTES), wire=True)


_M = TypeVar("_M", bound=_Message)


def parse_report(payload: bytes) -> Report:
    """Parse a playback report, or raise ProtocolError."""
    report = _parse_json(Report, payload, MAX_REPORT_BYTES)
    _require(report, REPORT_WIRE_REQUIRED)
    return report


def parse_status(payload: bytes) -> Status:
    """Parse a status heartbeat, or raise ProtocolError."""
    status = _parse_json(Status, payload, MAX_REPORT_BYTES)
    _require(status, REPORT_WIRE_REQUIRED)
    return status


def _parse_json(model: type[_M], payload: bytes, limit: int) -> _M:
    """The message from its JSON bytes, parsed and checked in one pass by pydantic-core: about half
    the time of `json.loads` then validating the dict (the ingest path parses every report).
    pydantic-core keeps the last of repeated member names, so a quick count of the model's names
    comes first, and only a payload where one might repeat is parsed again by the exact check."""
    if len(payload) > limit:
        raise ProtocolError(f"message of {len(payload)} bytes exceeds {limit}")
    if _may_repeat_members(payload, _names(model)):
        _load(payload, limit)  # the exact check: raises on a repeated member name in any object
    try:
        return model.model_validate_json(payload)
    except ValidationError as exc:
        first = exc.errors()[0]
        if first["type"] == "json_invalid":
            raise ProtocolError(f"not JSON: {first['msg']}") from None
        raise ProtocolError(_explain(exc)) from None
