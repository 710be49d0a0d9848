"""Pseudonymisation of client addresses for the routing log (IP addresses are personal data)."""

from __future__ import annotations

import hashlib
import hmac


class IpPseudonymiser:
    """HMAC-SHA256 of an IP address with an operator-held key: same IP, same token; no reversal."""

    __slots__ = ("_key",)

    def __init__(self, key: bytes) -> None:
        if len(key) < 16:
            raise ValueError("the client-IP HMAC key must be at least 16 bytes")
        self._key = key

    def pseudonymise(self, ip: str | None) -> str | None:
        """Hex HMAC of `ip`, or None when there is no address."""
        if not ip:
            return None
        return hmac.new(self._key, ip.encode("ascii", "replace"), hashlib.sha256).hexdigest()
