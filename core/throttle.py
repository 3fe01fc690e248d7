"""Throttling password guesses: per account and per address, with lockout windows that grow.

Each wrong password counts against the account tried and against the address it came from, in
several moving windows (the `limits` library, in memory). When any window is full, logins for that
account or from that address are refused unchecked, even with the right password, until the
oldest failure in it expires: a guesser is stopped after 5 tries for up to a minute, after 20 for
up to an hour, after 50 for up to a day. A right password clears the account's counts (not the
address's). The counts live in the serving process: a restart forgets them, and several server
processes each count their own (see docs/security.md).
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass

from limits import RateLimitItem, parse_many
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

# Wrong passwords allowed per account before it is locked, per window; each longer window is a
# longer lockout, so the wait grows with persistence. Anyone may lock an account this way (for
# at most a day): the price of stopping guessing; an admin sees it in the audit log.
ACCOUNT_LIMITS = "5/minute;20/hour;50/day"
# Wrong passwords allowed per client address (any accounts) per window: more, since one office or
# a village's NAT shares an address.
ADDRESS_LIMITS = "30/minute;100/hour;300/day"
MAX_KEY = 128  # characters of a typed username kept as a key (longer ones are cut)


@dataclass(frozen=True)
class Lockout:
    """A window that has just filled: logins for `key` (an account or an address) wait."""

    scope: str  # "account" or "address"
    key: str
    limit: str  # e.g. "5 per 1 minute"
    retry_after: int  # seconds


class LoginThrottle:
    """Counts wrong passwords and says how long a login must wait (thread-safe, one per server)."""

    def __init__(self, *, account_limits: str = ACCOUNT_LIMITS, address_limits: str = ADDRESS_LIMITS) -> None:
        self._limiter = MovingWindowRateLimiter(MemoryStorage())
        self._limits: dict[str, list[RateLimitItem]] = {
            "account": parse_many(account_limits),
            "address": parse_many(address_limits),
        }
        self._lock = threading.Lock()

    def _keys(self, username: str, address: str) -> dict[str, str]:
        return {"account": username.strip().casefold()[:MAX_KEY], "address": address}

    def _wait(self, item: RateLimitItem, scope: str, key: str) -> int:
        reset = self._limiter.get_window_stats(item, scope, key).reset_time
        return max(1, math.ceil(reset - time.time()))

    def retry_after(self, username: str, address: str) -> int | None:
        """Seconds a login for this account from this address must wait, or None if it may try."""
        waits = [
            self._wait(item, scope, key)
            for scope, key in self._keys(username, address).items()
            for item in self._limits[scope]
            if not self._limiter.test(item, scope, key)
        ]
        return max(waits) if waits else None

    def failed(self, username: str, address: str) -> list[Lockout]:
        """Count a wrong password; the lockouts this failure has just started (usually none)."""
        started = []
        with self._lock:
            for scope, key in self._keys(username, address).items():
                for item in self._limits[scope]:
                    counted = self._limiter.hit(item, scope, key)  # False: this window was full already
                    if counted and self._limiter.get_window_stats(item, scope, key).remaining == 0:
                        started.append(Lockout(scope, key, str(item), self._wait(item, scope, key)))
        return started

    def succeeded(self, username: str) -> None:
        """The right password: forget the account's wrong ones."""
        key = self._keys(username, "")["account"]
        for item in self._limits["account"]:
            self._limiter.clear(item, "account", key)
