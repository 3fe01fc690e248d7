"""Regions: 12-digit administrative area codes, lookups, and bulk import from CSV or JSON.

A code is 6 digits county (GB/T 2260) + 3 township + 3 village. The level and the parent
follow from the code alone: ``341225000000`` is a county, ``341225100000`` a township under
it, ``341225100201`` a village under that township. That structure lives in cunxiang_shared.areas
(the speaker agent reads codes too); the functions here wrap it so that a bad code is an
InvalidRegionCode, an InvalidInput of the error family.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.orm import Session

from core.errors import InvalidInput
from core.models import Region, RegionLevel
from cunxiang_shared import areas

log = logging.getLogger(__name__)

DEMO_FILE = Path(__file__).parent / "data" / "demo_county.json"
IMPORT_COLUMNS = ("code", "name", "level", "parent_code", "population", "households")
REQUIRED_COLUMNS = ("code", "name")
NAME_MAX = 100  # length of regions.name
# Rows per IN (...) lookup: well under SQLite's and PostgreSQL's bound-parameter limits.
LOOKUP_CHUNK = 500
# A region file is a list of flat objects (depth 2): anything much deeper is not one, and
# json.loads recurses once per bracket (100,000 of them end in RecursionError).
MAX_JSON_DEPTH = 4
# Strings (skipped whole), brackets and newlines: enough to measure nesting and count lines.
_JSON_STRUCTURE = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}\n]')
# Control characters (NUL, newline, escape, ...) have no place in a region's name or code.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
MAX_REPORTED_ERRORS = 10  # how many errors the exception message spells out

_LEVEL_ORDER = {RegionLevel.county: 0, RegionLevel.township: 1, RegionLevel.village: 2}


class InvalidRegionCode(InvalidInput, areas.InvalidAreaCode):
    """A string that is not a valid 12-digit area code (field "area")."""

    def __init__(self, message: str) -> None:
        super().__init__("area", message, reason="invalid_area_code")


class RegionImportError(InvalidInput):
    """An import file had bad rows; nothing was written. `errors` holds (line, message)."""

    def __init__(self, errors: list[tuple[int, str]]) -> None:
        self.errors = errors
        shown = "; ".join(f"line {line}: {msg}" for line, msg in errors[:MAX_REPORTED_ERRORS])
        more = f" (and {len(errors) - MAX_REPORTED_ERRORS} more)" if len(errors) > MAX_REPORTED_ERRORS else ""
        super().__init__("file", f"{len(errors)} bad row(s), nothing imported: {shown}{more}")


@dataclass(frozen=True)
class ImportResult:
    """What an import did."""

    created: int = 0
    updated: int = 0

    @property
    def total(self) -> int:
        return self.created + self.updated


# --- code structure -------------------------------------------------------------------


def validate_code(code: str) -> RegionLevel:
    """Return the level of a 12-digit area code, or raise InvalidRegionCode."""
    try:
        return RegionLevel(areas.validate(code))
    except areas.InvalidAreaCode as exc:
        raise InvalidRegionCode(str(exc)) from None


def level_of(code: str) -> RegionLevel:
    """The level encoded in a code (same as validate_code)."""
    return validate_code(code)


def parent_of(code: str) -> str | None:
    """The code-derived parent: village -> township, township -> county, county -> None."""
    try:
        return areas.parent(code)
    except areas.InvalidAreaCode as exc:
        raise InvalidRegionCode(str(exc)) from None


def township_of(code: str) -> str:
    """The township code holding a township or village code (a county code is returned as is)."""
    codes = chain(code)  # [county, township, village][:level]
    return codes[1] if len(codes) > 1 else code


def county_of(code: str) -> str:
    """The county code holding any code."""
    return chain(code)[0]


def at_level(code: str, level: RegionLevel | str) -> str:
    """The area at `level` holding `code` (or `code` itself when it is at that level or above)."""
    level = RegionLevel(level)
    if level is RegionLevel.county:
        return county_of(code)
    if level is RegionLevel.township and validate_code(code) is RegionLevel.village:
        return township_of(code)
    return code


def narrowest_common(codes: Iterable[str]) -> str | None:
    """The narrowest county, township or village code holding every code (None: several counties)."""
    codes = list(dict.fromkeys(codes))
    if not codes:
        return None
    if len(codes) == 1:
        return codes[0]
    if len({township_of(c) for c in codes}) == 1 and level_of(codes[0]) is not RegionLevel.county:
        return township_of(codes[0])
    if len({county_of(c) for c in codes}) == 1:
        return county_of(codes[0])
    return None


def chain(code: str) -> list[str]:
    """The codes from the county down to `code` itself, e.g. [county, township, village]."""
    try:
        return areas.chain(code)
    except areas.InvalidAreaCode as exc:
        raise InvalidRegionCode(str(exc)) from None


def code_prefix(code: str) -> str:
    """The significant digits of a code: every code under it (and it) starts with these."""
    try:
        return areas.prefix(code)
    except areas.InvalidAreaCode as exc:
        raise InvalidRegionCode(str(exc)) from None


def is_under(code: str, ancestor: str) -> bool:
    """True if `code` is `ancestor` or lies inside it (by code structure alone)."""
    try:
        return areas.is_under(code, ancestor)
    except areas.InvalidAreaCode as exc:
        raise InvalidRegionCode(str(exc)) from None


def code_range(code: str) -> tuple[str, str]:
    """Smallest and largest code inside `code`; a BETWEEN on the primary key uses its index."""
    prefix = code_prefix(code)
    return prefix.ljust(12, "0"), prefix.ljust(12, "9")


# --- queries --------------------------------------------------------------------------


def get_by_code(*, session: Session, code: str) -> Region | None:
    """Return the region with this 12-digit area code, or None."""
    return session.get(Region, code)


def list_children(
    *, session: Session, parent_code: str | None, limit: int = 100, offset: int = 0
) -> tuple[list[Region], int]:
    """Return one page of the direct children of `parent_code` (None: the roots) and their total."""
    if parent_code is None:
        condition = Region.parent_code.is_(None)
    else:
        condition = Region.parent_code == parent_code
    total = session.scalar(select(func.count()).select_from(Region).where(condition)) or 0
    items = session.scalars(
        select(Region).where(condition).order_by(Region.code).limit(limit).offset(offset)
    ).all()
    return list(items), total


def descendant_villages(*, session: Session, code: str) -> list[Region]:
    """Return the villages inside `code` (a village returns itself), ordered by code."""
    low, high = code_range(code)
    stmt = (
        select(Region)
        .where(Region.code.between(low, high), Region.level == RegionLevel.village)
        .order_by(Region.code)
    )
    return list(session.scalars(stmt).all())


def count_regions(*, session: Session) -> int:
    """Return how many regions are stored."""
    return session.scalar(select(func.count()).select_from(Region)) or 0


# --- import ---------------------------------------------------------------------------


@dataclass
class _Row:
    line: int
    code: str
    name: str
    level: RegionLevel
    parent_code: str | None
    population: int
    households: int


def _read_csv(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    try:
        text = path.read_text(encoding="utf-8-sig")  # utf-8-sig: a BOM is dropped if present
    except UnicodeDecodeError as exc:
        raise RegionImportError([(1, f"file is not UTF-8: {exc}")]) from exc
    reader = csv.DictReader(io.StringIO(text, newline=""))
    header = [h.strip() for h in (reader.fieldnames or [])]
    problems = [f"unknown column {h!r}" for h in header if h not in IMPORT_COLUMNS]
    problems += [f"missing column {c!r}" for c in REQUIRED_COLUMNS if c not in header]
    if problems:
        raise RegionImportError([(1, "; ".join(problems) + f" (expected {','.join(IMPORT_COLUMNS)})")])
    reader.fieldnames = header
    try:
        for raw in reader:
            # A row with more fields than the header puts the extras under the None key.
            if raw.get(None):  # type: ignore[call-overload]
                yield reader.line_num, {"__extra__": raw[None]}  # type: ignore[index]
                continue
            yield reader.line_num, raw
    except csv.Error as exc:  # e.g. a field larger than csv.field_size_limit()
        raise RegionImportError([(reader.line_num + 1, f"not a readable CSV row: {exc}")]) from exc


def _too_deep(text: str) -> int | None:
    """The line where JSON nesting first goes deeper than MAX_JSON_DEPTH, or None."""
    depth, line = 0, 1
    for match in _JSON_STRUCTURE.finditer(text):
        token = match.group()
        if token == "\n":
            line += 1
        elif token in "[{":
            depth += 1
            if depth > MAX_JSON_DEPTH:
                return line
        elif token in "]}":
            depth -= 1
        else:
            line += token.count("\n")  # a (malformed) string across lines
    return None


def _read_json(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise RegionImportError([(0, f"not a valid UTF-8 JSON file: {exc}")]) from exc
    deep = _too_deep(text)
    if deep is not None:
        raise RegionImportError([(deep, f"JSON nested deeper than {MAX_JSON_DEPTH} levels")])
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise RegionImportError([(exc.lineno, f"not valid JSON: {exc.msg} (column {exc.colno})")]) from exc
    except RecursionError as exc:  # not reached after _too_deep; kept so no traceback escapes
        raise RegionImportError([(0, "JSON nested too deeply")]) from exc
    if not isinstance(data, list):
        raise RegionImportError([(0, "JSON file must hold a list of region objects")])
    for index, item in enumerate(data, start=1):
        if not isinstance(item, dict):
            yield index, {"__not_object__": item}
            continue
        yield index, item


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value)
    return str(value).strip()


def _count(value: Any, field: str, errors: list[str]) -> int:
    if value is None or value == "":
        return 0
    if isinstance(value, bool) or isinstance(value, float):
        errors.append(f"{field} must be a non-negative integer, got {value!r}")
        return 0
    text = _text(value)
    if not (text.isascii() and text.isdigit()):
        errors.append(f"{field} must be a non-negative integer, got {value!r}")
        return 0
    return int(text)


def _parse_row(line: int, raw: dict[str, Any]) -> tuple[_Row | None, list[str]]:
    """Check one row on its own (not against other rows or the database)."""
    if "__extra__" in raw:
        return None, [f"more fields than the header has: {raw['__extra__']!r}"]
    if "__not_object__" in raw:
        return None, [f"expected an object, got {raw['__not_object__']!r}"]
    errors: list[str] = []
    unknown = sorted(set(raw) - set(IMPORT_COLUMNS))
    if unknown:
        errors.append(f"unknown key(s) {', '.join(map(repr, unknown))}")
    for field in ("code", "name", "level", "parent_code"):
        bad = _CONTROL.search(_text(raw.get(field)))
        if bad:
            errors.append(f"{field} contains a control character (U+{ord(bad.group()):04X})")
    code = _text(raw.get("code"))
    level: RegionLevel | None = None
    try:
        level = validate_code(code)
    except InvalidRegionCode as exc:
        errors.append(exc.message)
    name = _text(raw.get("name"))
    if not name:
        errors.append("name is empty")
    elif len(name) > NAME_MAX:
        errors.append(f"name is longer than {NAME_MAX} characters")
    given_level = _text(raw.get("level"))
    if given_level and level is not None and given_level != level.value:
        errors.append(f"level {given_level!r} does not match code {code}, which is a {level.value}")
    elif given_level and given_level not in RegionLevel.__members__:
        errors.append(f"unknown level {given_level!r}")
    given_parent = _text(raw.get("parent_code")) or None
    parent = parent_of(code) if level is not None else None
    if level is not None and given_parent != parent and given_parent is not None:
        expected = parent or "empty (a county has no parent)"
        errors.append(f"parent_code {given_parent} is not the parent of {code}; expected {expected}")
    population = _count(raw.get("population"), "population", errors)
    households = _count(raw.get("households"), "households", errors)
    if errors or level is None:
        return None, errors
    return _Row(line, code, name, level, parent, population, households), []


def _existing_codes(session: Session, codes: Iterable[str]) -> set[str]:
    found: set[str] = set()
    wanted = sorted(set(codes))
    for start in range(0, len(wanted), LOOKUP_CHUNK):
        chunk = wanted[start : start + LOOKUP_CHUNK]
        found.update(session.scalars(select(Region.code).where(Region.code.in_(chunk))))
    return found


def _validate(session: Session, rows: Iterable[tuple[int, dict[str, Any]]]) -> list[_Row]:
    """Check every row (alone, against each other, against the DB); raise RegionImportError."""
    errors: list[tuple[int, str]] = []
    parsed: list[_Row] = []
    first_line: dict[str, int] = {}
    seen_codes: set[str] = set()
    for line, raw in rows:
        row, row_errors = _parse_row(line, raw)
        errors.extend((line, msg) for msg in row_errors)
        code = _text(raw.get("code")) if "__extra__" not in raw and "__not_object__" not in raw else ""
        if code:
            if code in first_line:
                errors.append((line, f"duplicate code {code} (first on line {first_line[code]})"))
                continue
            first_line[code] = line
            seen_codes.add(code)
        if row is not None:
            parsed.append(row)

    # Parents must be in the file (even on a bad row: that row is reported on its own) or the DB.
    outside = {row.parent_code for row in parsed if row.parent_code and row.parent_code not in seen_codes}
    in_db = _existing_codes(session, outside) if outside else set()
    for row in parsed:
        if row.parent_code and row.parent_code not in seen_codes and row.parent_code not in in_db:
            message = f"parent {row.parent_code} of {row.code} is neither in the file nor stored"
            errors.append((row.line, message))
    if errors:
        errors.sort(key=lambda e: e[0])
        raise RegionImportError(errors)
    return parsed


def import_rows(*, session: Session, rows: Iterable[tuple[int, dict[str, Any]]]) -> ImportResult:
    """Validate (line, row) pairs, then insert new and update existing regions, and commit."""
    parsed = _validate(session, rows)
    existing = _existing_codes(session, (row.code for row in parsed))
    parsed.sort(key=lambda r: (_LEVEL_ORDER[r.level], r.code))  # parents before children
    values = [
        {
            "code": r.code,
            "name": r.name,
            "level": r.level,
            "parent_code": r.parent_code,
            "population": r.population,
            "households": r.households,
        }
        for r in parsed
    ]
    new = [v for v in values if v["code"] not in existing]
    old = [v for v in values if v["code"] in existing]
    # Bulk statements (executemany / multi-row VALUES), not one ORM object per row.
    if new:
        session.execute(insert(Region), new)
    if old:
        session.execute(update(Region), old)
    # TODO(issue 17): the caller's to commit, once every caller does (tests/scheduler/test_approval.py
    # loads the demo county and rolls back later, expecting it to stay).
    session.commit()
    session.expire_all()  # bulk UPDATE bypasses the identity map
    return ImportResult(created=len(new), updated=len(old))


def import_file(*, session: Session, path: Path | str) -> ImportResult:
    """Import regions from a .csv or .json file: all rows valid, or nothing written."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".csv":
        rows = list(_read_csv(path))
    elif suffix == ".json":
        rows = list(_read_json(path))
    else:
        raise RegionImportError([(0, f"unsupported file type {path.suffix!r}; use .csv or .json")])
    result = import_rows(session=session, rows=rows)
    log.info("imported regions from %s: %s created, %s updated", path, result.created, result.updated)
    return result


def load_demo(*, session: Session) -> ImportResult:
    """Import the shipped demo county (阜南县) if no region is stored yet."""
    if count_regions(session=session):
        return ImportResult()
    return import_file(session=session, path=DEMO_FILE)
