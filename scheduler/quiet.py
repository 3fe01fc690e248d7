"""Quiet hours: local times when nothing but emergency may air (default 22:00-06:00).

An area may set its own; an area without inherits from the nearest ancestor that has, else the
default from settings. A broadcast is checked against the quiet hours of every target area and of
every area under a target that sets its own (a county-wide notice must respect a village's
stricter night), over the whole airing [start, start + duration).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session

from core import regions
from core.clock import utcnow
from core.errors import InvalidInput
from core.models import User
from core.settings import Settings
from scheduler.models import QuietHours


@dataclass(frozen=True)
class Window:
    """Quiet from `start` to `end` local time (crossing midnight when end <= start)."""

    area_code: str
    start: time
    end: time

    @property
    def empty(self) -> bool:
        return self.start == self.end

    def overlaps(self, begin: datetime, finish: datetime, zone: ZoneInfo) -> bool:
        """Whether the airing [begin, finish) touches this window."""
        if self.empty:
            return False
        local_begin = begin.astimezone(zone).replace(tzinfo=None)
        local_finish = finish.astimezone(zone).replace(tzinfo=None)
        day = local_begin.date() - timedelta(days=1)
        while day <= local_finish.date():
            w_begin = datetime.combine(day, self.start)
            w_end = datetime.combine(day + timedelta(days=1 if self.end <= self.start else 0), self.end)
            if w_begin < local_finish and local_begin < w_end:
                return True
            day += timedelta(days=1)
        return False

    def describe(self) -> str:
        return f"{self.start.strftime('%H:%M')}-{self.end.strftime('%H:%M')} ({self.area_code})"


def parse_time(value: str, field: str) -> time:
    """`HH:MM` to a time, or InvalidInput naming the field."""
    try:
        parsed = time.fromisoformat(value)
    except (TypeError, ValueError):
        raise InvalidInput(field, f"not a time of day (HH:MM): {value!r}") from None
    return parsed.replace(second=0, microsecond=0, tzinfo=None)


def default_window(settings: Settings, area_code: str) -> Window:
    sched = settings.scheduler
    start, end = parse_time(sched.quiet_start, "quiet_start"), parse_time(sched.quiet_end, "quiet_end")
    return Window(area_code, start, end)


def _window(row: QuietHours) -> Window:
    return Window(row.area_code, parse_time(row.start, "start"), parse_time(row.end, "end"))


def windows_for(*, session: Session, settings: Settings, area_codes: Sequence[str]) -> list[Window]:
    """The quiet-hour windows that apply to broadcasts into these areas."""
    return windows_for_each(session=session, settings=settings, area_sets=[area_codes])[0]


def windows_for_each(
    *, session: Session, settings: Settings, area_sets: Sequence[Sequence[str]]
) -> list[list[Window]]:
    """`windows_for` of each set of target areas, with one query for all (a dispatch batch).

    Areas that set their own quiet hours are few (a row each), so all of them are read and matched
    here: one statement of one shape, whatever the areas, which the database and SQLAlchemy's
    statement cache serve at once.
    """
    if not any(area_sets):
        return [[] for _ in area_sets]
    rows = session.scalars(select(QuietHours)).all()
    own = {row.area_code: row for row in rows}
    out: list[list[Window]] = []
    for area_codes in area_sets:
        windows: list[Window] = []
        for code in area_codes:
            nearest = next((own[c] for c in reversed(regions.chain(code)) if c in own), None)
            windows.append(default_window(settings, code) if nearest is None else _window(nearest))
        prefixes = [(code, regions.code_prefix(code)) for code in area_codes]
        for row in rows:  # areas below a target that set their own
            if any(row.area_code != code and row.area_code.startswith(prefix) for code, prefix in prefixes):
                windows.append(_window(row))
        out.append(list(dict.fromkeys(windows)))
    return out


def offending(
    *, windows: Iterable[Window], airings: Iterable[tuple[datetime, datetime]], zone: ZoneInfo
) -> list[tuple[datetime, Window]]:
    """Airings (start, end) that fall into a window, with the first window each touches."""
    windows = [w for w in windows if not w.empty]
    hits = []
    for begin, finish in airings:
        for window in windows:
            if window.overlaps(begin, finish, zone):
                hits.append((begin, window))
                break
    return hits


def get(*, session: Session, settings: Settings, area_code: str) -> tuple[Window, bool]:
    """The window that applies to an area, and whether the area sets it itself."""
    (window,) = windows_for(session=session, settings=settings, area_codes=[area_code])[:1]
    return window, window.area_code == area_code and session.get(QuietHours, area_code) is not None


def set_for_area(
    *, session: Session, user: User, area_code: str, start: time | None, end: time | None
) -> QuietHours | None:
    """Give an area its own quiet hours (start == end: none at all); None for both: inherit again."""
    row = session.get(QuietHours, area_code)
    if start is None or end is None:
        if row is not None:
            session.delete(row)
        return None
    if row is None:
        row = QuietHours(area_code=area_code, start="", end="")
        session.add(row)
    row.start, row.end = start.strftime("%H:%M"), end.strftime("%H:%M")
    row.updated_by, row.updated_at = user.id, utcnow()
    session.flush()
    return row
