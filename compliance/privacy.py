"""Pseudonymisation of client addresses for the routing log (IP addresses are personal data)."""

from __future__ import annotations

import hashlib
import hmac

_CACHE_LIMIT = 65536


class IpPseudonymiser:
    """HMAC-SHA256 of an IP address with an operator-held key: same IP, same token; no reversal."""

    __slots__ = ("_cache", "_key")

    def __init__(self, key: bytes) -> None:
        if len(key) < 16:
            raise ValueError("the client-IP HMAC key must be at least 16 bytes")
        self._key = key
        self._cache: dict[str, str] = {}

    def pseudonymise(self, ip: str | None) -> str | None:
        """Hex HMAC of `ip`, or None when there is no address."""
        if not ip:
            return None
        token = self._cache.get(ip)
        if token is None:
            token = hmac.new(self._key, ip.encode("ascii", "replace"), hashlib.sha256).hexdigest()
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache.clear()
            self._cache[ip] = token
        return token
