"""Throttling of failed authentication per client address (tenant API keys, operator tokens).

After `limit` failed attempts from one address within `window` seconds, that address is refused
(429 with Retry-After) for `window` seconds, before its key is even looked at: a throttled
address cannot learn whether a guess was right. Only a wrong key *different* from the address's
previous wrong key counts: repeating one stale key (a new key a replica has not loaded yet, a
revoked one) teaches nothing, and retrying it must not lock a client out. A success does not
reset the count (a tenant guessing another tenant's key could otherwise reset it with its own).
IPv6 addresses are counted per /64 (one host usually holds a whole /64). Memory is bounded:
the least recently failing addresses are forgotten first. State is per process (each worker
counts on its own).
"""

from __future__ import annotations

import ipaddress
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from gateway.errors import ApiError
from gateway.http.asgi import Scope

logger = logging.getLogger("gateway.api.access")

UNKNOWN_ADDRESS = "unknown"


def address_key(address: str | None) -> str:
    """The counting key of an address: IPv4 as is, IPv6 by its /64, else `unknown`."""
    if not address:
        return UNKNOWN_ADDRESS
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return UNKNOWN_ADDRESS
    if isinstance(parsed, ipaddress.IPv6Address):
        if parsed.ipv4_mapped is not None:
            return str(parsed.ipv4_mapped)
        return str(ipaddress.IPv6Network((int(parsed) >> 64 << 64, 64)))
    return str(parsed)


@dataclass(slots=True)
class _Entry:
    started: float
    failures: int
    blocked_until: float = 0.0
    last_key: int | None = None  # hash() of the previous wrong key (per-process, never stored)


class AuthThrottle:
    """Counts failures per address key; bounded to `max_addresses` entries (LRU)."""

    def __init__(
        self,
        limit: int,
        window: float,
        max_addresses: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = limit
        self.window = window
        self.max_addresses = max_addresses
        self._clock = clock
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._last_block_end = 0.0  # no address is blocked once the clock passes this

    @property
    def enabled(self) -> bool:
        """False when the limit is 0 (throttling off)."""
        return self.limit > 0

    def maybe_blocked(self) -> bool:
        """Cheap pre-check for the hot path: False means no address is blocked right now."""
        return self.enabled and self._clock() < self._last_block_end

    def retry_after(self, key: str) -> int | None:
        """Seconds until `key` may try again, or None if it is not blocked."""
        if not self.maybe_blocked():
            return None
        entry = self._entries.get(key)
        if entry is None:
            return None
        remaining = entry.blocked_until - self._clock()
        return max(1, math.ceil(remaining)) if remaining > 0 else None

    def failed(self, key: str, wrong: int | None = None) -> int | None:
        """Count one failure of address `key` with a wrong key/token whose hash() is `wrong`
        (None: always counts); returns the Retry-After seconds if `key` is now blocked."""
        if not self.enabled:
            return None
        now = self._clock()
        entry = self._entries.get(key)
        if entry is None or (now - entry.started >= self.window and now >= entry.blocked_until):
            entry = _Entry(now, 0)
            self._entries[key] = entry
        self._entries.move_to_end(key)
        if wrong is not None and wrong == entry.last_key:
            return self.retry_after(key)  # the same stale key again: not a new guess
        entry.last_key = wrong
        entry.failures += 1
        if entry.failures >= self.limit and entry.blocked_until <= now:
            entry.blocked_until = now + self.window
            entry.started = entry.blocked_until  # a fresh count once the block ends
            entry.failures = 0
            self._last_block_end = max(self._last_block_end, entry.blocked_until)
            logger.warning(
                "authentication throttled: %s failed %d times within %gs; refused for %gs",
                key,
                self.limit,
                self.window,
                self.window,
            )
        while len(self._entries) > self.max_addresses:
            self._entries.popitem(last=False)
        return self.retry_after(key)

    def __len__(self) -> int:
        return len(self._entries)


class AuthGuard:
    """The throttle bound to the gateway's view of the client address (trusted proxies)."""

    def __init__(self, throttle: AuthThrottle, client_ip: Callable[[Scope], str | None]) -> None:
        self.throttle = throttle
        self._client_ip = client_ip

    def check(self, scope: Scope) -> None:
        """Raise 429 if the caller's address is throttled (before any key is looked at)."""
        if not self.throttle.maybe_blocked():
            return
        seconds = self.throttle.retry_after(address_key(self._client_ip(scope)))
        if seconds is not None:
            raise throttled(seconds)

    def failed(self, scope: Scope, wrong: str) -> None:
        """Count the wrong key or token `wrong` from the caller's address."""
        if self.throttle.enabled:
            self.throttle.failed(address_key(self._client_ip(scope)), hash(wrong))


def throttled(seconds: int) -> ApiError:
    """The 429 answer for a throttled address."""
    return ApiError(
        429,
        f"too many failed authentication attempts from this address; try again in {seconds} s",
        "too_many_auth_failures",
        headers={"Retry-After": str(seconds)},
    )
