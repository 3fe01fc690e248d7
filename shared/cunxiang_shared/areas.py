"""Area codes: the structure of a 12-digit Chinese administrative code, from the code alone.

A code is 6 digits county (GB/T 2260) + 3 township + 3 village: ``341225000000`` is a county,
``341225100000`` a township under it, ``341225100201`` a village under that township. The server
(core.regions, which adds names, populations and the database) and the speaker agent (which
subscribes to its area chain) both read codes with these functions.
"""

from __future__ import annotations

import enum


class AreaLevel(enum.StrEnum):
    county = "county"
    township = "township"
    village = "village"


class InvalidAreaCode(ValueError):
    """A string that is not a valid 12-digit area code; the text says why."""


def validate(code: str) -> AreaLevel:
    """The level of a 12-digit area code, or raise InvalidAreaCode."""
    if not isinstance(code, str) or len(code) != 12 or not code.isascii() or not code.isdigit():
        raise InvalidAreaCode(f"area code must be 12 digits, got {code!r}")
    if code[:6] == "000000":
        raise InvalidAreaCode(f"area code {code} has no county part")
    if code[6:] == "000000":
        return AreaLevel.county
    if code[6:9] == "000":
        raise InvalidAreaCode(f"area code {code} has a village part but no township part")
    if code[9:] == "000":
        return AreaLevel.township
    return AreaLevel.village


def level(code: str) -> AreaLevel:
    """The level encoded in a code (same as validate)."""
    return validate(code)


def parent(code: str) -> str | None:
    """The code-derived parent: village -> township, township -> county, county -> None."""
    found = validate(code)
    if found is AreaLevel.village:
        return code[:9] + "000"
    if found is AreaLevel.township:
        return code[:6] + "000000"
    return None


def chain(code: str) -> list[str]:
    """The codes from the county down to `code` itself, widest first.

    ``341225100201`` -> ``["341225000000", "341225100000", "341225100201"]``.
    """
    codes = [code]
    while (up := parent(codes[0])) is not None:
        codes.insert(0, up)
    return codes


def prefix(code: str) -> str:
    """The significant digits of a code: every code under it (and it) starts with these."""
    found = validate(code)
    return {AreaLevel.county: code[:6], AreaLevel.township: code[:9], AreaLevel.village: code}[found]


def is_under(code: str, ancestor: str) -> bool:
    """True if `code` is `ancestor` or lies inside it (by code structure alone)."""
    validate(code)
    return code.startswith(prefix(ancestor))
