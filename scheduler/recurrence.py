"""Recurrence rules: local wall-clock times in an IANA zone, expanded into concrete UTC instants.

A rule is stored as it was written ("07:00 and 18:30, Mon-Fri, Dec 1 to Dec 31, except Dec 25,
Asia/Shanghai"), never as a list of instants, so a change of a zone's rules changes the instants
and not the wall-clock times people asked for. Dates come from dateutil's RFC 5545 `rrule`
(so "day 31 of every month" skips the months without one, as calendars do; -1 is the last day);
each date is combined with each time of day and localised with `zoneinfo`.

A local time that does not exist (skipped by a DST jump) or exists twice (repeated by the jump
back) is refused when the rule is accepted: `local_time_problems` lists them.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from dateutil import rrule

from core.errors import InvalidInput

DEFAULT_TIMEZONE = "Asia/Shanghai"
# Zone transitions repeat yearly: checking this far ahead finds every one an open-ended rule meets.
PROBLEM_SCAN = timedelta(days=2 * 366)


class Freq(enum.StrEnum):
    once = "once"  # start_date only, at each of the times
    daily = "daily"  # every `interval` days (optionally only on `weekdays`)
    weekly = "weekly"  # every `interval` weeks, on `weekdays`
    monthly = "monthly"  # every `interval` months, on `month_days` (negative: from the end)


WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_RRULE_FREQ = {Freq.once: rrule.DAILY, Freq.daily: rrule.DAILY, Freq.weekly: rrule.WEEKLY,
               Freq.monthly: rrule.MONTHLY}  # fmt: skip


class RecurrenceError(InvalidInput):
    """A rule that cannot be accepted; `field` names the offending part (relative to the rule)."""


@dataclass(frozen=True)
class Rule:
    """A validated recurrence rule (see `scheduler.schemas.Recurrence` for the API shape)."""

    freq: Freq
    times: tuple[time, ...]
    start_date: date
    end_date: date | None = None
    interval: int = 1
    weekdays: tuple[int, ...] = ()  # 0 = Monday
    month_days: tuple[int, ...] = ()
    except_dates: frozenset[date] = field(default_factory=frozenset)
    timezone: str = DEFAULT_TIMEZONE

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def last_date(self) -> date | None:
        """The last date the rule can fall on (None: open-ended)."""
        return self.start_date if self.freq == Freq.once else self.end_date

    def as_dict(self) -> dict:
        """JSON form, as stored in `broadcasts.recurrence`."""
        return {
            "freq": self.freq.value,
            "times": [t.isoformat() for t in self.times],
            "start_date": self.start_date.isoformat(),
            "end_date": self.end_date.isoformat() if self.end_date else None,
            "interval": self.interval,
            "weekdays": [WEEKDAYS[d] for d in self.weekdays],
            "month_days": list(self.month_days),
            "except_dates": sorted(d.isoformat() for d in self.except_dates),
            "timezone": self.timezone,
        }

    @classmethod
    def from_dict(cls, data: dict) -> Rule:
        """Parse and validate the JSON form; raise RecurrenceError naming the field."""
        return make_rule(
            freq=data.get("freq", "daily"),
            times=data.get("times") or [],
            start_date=data.get("start_date"),
            end_date=data.get("end_date"),
            interval=data.get("interval", 1),
            weekdays=data.get("weekdays") or [],
            month_days=data.get("month_days") or [],
            except_dates=data.get("except_dates") or [],
            timezone=data.get("timezone") or DEFAULT_TIMEZONE,
        )


def _as_date(value: date | str, name: str) -> date:
    if isinstance(value, datetime):
        raise RecurrenceError(name, "give a date (YYYY-MM-DD), not a date and time")
    if isinstance(value, date):
        return value
    try:
        return date.fromisoformat(str(value))
    except ValueError:
        raise RecurrenceError(name, f"not a date (YYYY-MM-DD): {value!r}") from None


def _as_time(value: time | str) -> time:
    if isinstance(value, time):
        parsed = value
    else:
        try:
            parsed = time.fromisoformat(str(value))
        except ValueError:
            raise RecurrenceError("times", f"not a time of day (HH:MM or HH:MM:SS): {value!r}") from None
    if parsed.tzinfo is not None:
        raise RecurrenceError("times", "times are local wall-clock times; give the zone in `timezone`")
    return parsed.replace(microsecond=0)


def make_rule(
    *,
    freq: Freq | str,
    times: list,
    start_date: date | str | None,
    end_date: date | str | None = None,
    interval: int = 1,
    weekdays: list = (),
    month_days: list = (),
    except_dates: list = (),
    timezone: str = DEFAULT_TIMEZONE,
) -> Rule:
    """Validate the parts of a rule and return it; raise RecurrenceError naming the field."""
    try:
        freq = Freq(freq)
    except ValueError:
        raise RecurrenceError("freq", f"one of {', '.join(f.value for f in Freq)}; not {freq!r}") from None
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise RecurrenceError("timezone", f"unknown IANA time zone {timezone!r}") from None
    if not times:
        raise RecurrenceError("times", "give at least one time of day")
    parsed_times = tuple(sorted({_as_time(t) for t in times}))
    if start_date is None:
        raise RecurrenceError("start_date", "required")
    start = _as_date(start_date, "start_date")
    end = _as_date(end_date, "end_date") if end_date is not None else None
    if end is not None and end < start:
        raise RecurrenceError("end_date", f"{end} is before start_date {start}")
    if not isinstance(interval, int) or not 1 <= interval <= 366:
        raise RecurrenceError("interval", "a whole number from 1 to 366")
    days: list[int] = []
    for name in weekdays:
        key = str(name).lower()[:3]
        if key not in WEEKDAYS:
            raise RecurrenceError("weekdays", f"one of {', '.join(WEEKDAYS)}; not {name!r}")
        days.append(WEEKDAYS.index(key))
    for day in month_days:
        if not isinstance(day, int) or day == 0 or not -31 <= day <= 31:
            raise RecurrenceError("month_days", f"1..31, or -1..-31 from the month's end; not {day!r}")
    if freq == Freq.weekly and not days:
        days = [start.weekday()]
    if freq == Freq.monthly and not month_days:
        month_days = [start.day]
    if freq != Freq.monthly and month_days:
        raise RecurrenceError("month_days", "only for freq=monthly")
    if freq in (Freq.once, Freq.monthly) and days:
        raise RecurrenceError("weekdays", f"not used with freq={freq.value}")
    exceptions = frozenset(_as_date(d, "except_dates") for d in except_dates)
    return Rule(
        freq=freq,
        times=parsed_times,
        start_date=start,
        end_date=end,
        interval=interval,
        weekdays=tuple(sorted(set(days))),
        month_days=tuple(sorted(set(month_days))),
        except_dates=exceptions,
        timezone=timezone,
    )


def _dates(rule: Rule, first: date, last: date) -> Iterator[date]:
    """The rule's dates within [first, last], in order."""
    first = max(first, rule.start_date)
    if rule.last_date is not None:
        last = min(last, rule.last_date)
    if last < first:
        return
    if rule.freq == Freq.once:
        candidates: Iterator[datetime] = iter([datetime.combine(rule.start_date, time())])
    else:
        kwargs: dict = {"dtstart": datetime.combine(rule.start_date, time()), "interval": rule.interval}
        if rule.weekdays:
            kwargs["byweekday"] = rule.weekdays
        if rule.month_days:
            kwargs["bymonthday"] = rule.month_days
        if rule.end_date is not None:
            kwargs["until"] = datetime.combine(rule.end_date, time())
        candidates = rrule.rrule(_RRULE_FREQ[rule.freq], **kwargs).xafter(
            datetime.combine(first, time()), inc=True
        )
    for moment in candidates:
        day = moment.date()
        if day > last:
            return
        if day >= first and day not in rule.except_dates:
            yield day


def local_instant(day: date, at: time, zone: ZoneInfo) -> datetime:
    """The UTC instant of a wall-clock time (the earlier one when it is ambiguous)."""
    return datetime.combine(day, at, tzinfo=zone).astimezone(UTC)


def expand(rule: Rule, start: datetime, end: datetime) -> list[datetime]:
    """Every instant (aware UTC) the rule falls on with start <= instant < end, in order."""
    zone = rule.zone
    # A day in the zone can begin up to 14 h from UTC midnight: widen by a day each side.
    first = start.astimezone(zone).date() - timedelta(days=1)
    last = end.astimezone(zone).date() + timedelta(days=1)
    out = []
    for day in _dates(rule, first, last):
        for at in rule.times:
            instant = local_instant(day, at, zone)
            if start <= instant < end:
                out.append(instant)
    return out


def describe_local(instant: datetime, timezone: str) -> str:
    """`2026-12-01 07:00 Asia/Shanghai` for messages."""
    return f"{instant.astimezone(ZoneInfo(timezone)).strftime('%Y-%m-%d %H:%M:%S')} {timezone}"


def local_time_problems(rule: Rule, *, limit: int = 10) -> list[str]:
    """Wall-clock times of the rule that do not exist or exist twice in its zone."""
    zone = rule.zone
    last = rule.last_date or rule.start_date + PROBLEM_SCAN
    last = min(last, rule.start_date + PROBLEM_SCAN)
    problems: list[str] = []
    for day in _dates(rule, rule.start_date, last):
        for at in rule.times:
            local = datetime.combine(day, at, tzinfo=zone)
            round_trip = local.astimezone(UTC).astimezone(zone).replace(tzinfo=None)
            if round_trip != local.replace(tzinfo=None):
                problems.append(f"{day} {at.isoformat()} does not exist in {rule.timezone} (clocks jump)")
            elif local.utcoffset() != local.replace(fold=1).utcoffset():
                problems.append(f"{day} {at.isoformat()} happens twice in {rule.timezone} (clocks go back)")
            if len(problems) >= limit:
                return problems
    return problems
