"""Client IP resolution behind trusted reverse proxies (X-Forwarded-For), fail-safe.

Only hops appended by proxies we trust are believed: the header is walked right to
left, skipping trusted proxies, and the first untrusted hop is the client. Anything a
client wrote itself (the left part of the header) can never win. Pure and framework-free.
"""

from __future__ import annotations

import ipaddress
from bisect import bisect_right
from collections.abc import Iterable
from functools import lru_cache

__all__ = ["TrustedProxies", "resolve_client_ip"]

_Key = tuple[int, int]  # (IP version, address as int): orders IPv4 before IPv6


@lru_cache(maxsize=4096)
def _parse_hop(entry: str) -> tuple[_Key, str] | None:
    """Parse one X-Forwarded-For entry (optional port, brackets, quotes); None if garbage.

    Returns the address's sort key and its normalised text (IPv4-mapped -> IPv4).
    """
    text = entry.strip().strip('"')
    if text.startswith("["):  # "[2001:db8::1]:443" or "[2001:db8::1]"
        text, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not (rest.startswith(":") and rest[1:].isdigit())):
            return None
    elif text.count(":") == 1:  # "192.0.2.1:8080"
        text, _, port = text.partition(":")
        if not port.isdigit():
            return None
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return (address.version, int(address)), str(address)


class TrustedProxies:
    """A set of trusted proxy networks (CIDRs or bare addresses), with O(log n) membership."""

    __slots__ = ("_ends", "_starts")

    def __init__(self, cidrs: Iterable[str]) -> None:
        """Parse ``cidrs`` such as ``["10.0.0.0/8", "2001:db8::/32", "192.0.2.7"]``.

        Host bits may be set (``10.1.2.3/8`` means ``10.0.0.0/8``); a lone string is one
        entry. Raises ValueError naming the first entry that is not an IP network.
        """
        if isinstance(cidrs, str):
            cidrs = [cidrs]
        v4: list[ipaddress.IPv4Network] = []
        v6: list[ipaddress.IPv6Network] = []
        for cidr in cidrs:
            try:
                network = ipaddress.ip_network(cidr.strip(), strict=False)
            except (ValueError, TypeError, AttributeError) as exc:
                raise ValueError(f"invalid trusted proxy network {cidr!r}: {exc}") from exc
            if isinstance(network, ipaddress.IPv4Network):
                v4.append(network)
            else:
                v6.append(network)
        # Keys are (version, int) so one sorted table serves both address families.
        bounds = [
            (4, int(n.network_address), int(n.broadcast_address))
            for n in ipaddress.collapse_addresses(v4)
        ]
        bounds += [
            (6, int(n.network_address), int(n.broadcast_address))
            for n in ipaddress.collapse_addresses(v6)
        ]
        self._starts = [(version, start) for version, start, _ in bounds]
        self._ends = [(version, end) for version, _, end in bounds]

    def __bool__(self) -> bool:
        return bool(self._starts)

    def __repr__(self) -> str:
        return f"TrustedProxies(<{len(self._starts)} networks>)"

    def _contains_key(self, key: _Key) -> bool:
        index = bisect_right(self._starts, key) - 1
        return index >= 0 and key <= self._ends[index]

    def contains(self, ip: str) -> bool:
        """Return True if ``ip`` is an address in a trusted network (False for non-IPs).

        IPv4-mapped IPv6 addresses (``::ffff:10.0.0.1``) are treated as IPv4.
        """
        parsed = _parse_hop(ip)
        return parsed is not None and self._contains_key(parsed[0])


def resolve_client_ip(peer_ip: str, x_forwarded_for: str | None, trusted: TrustedProxies) -> str:
    """Return the client IP for a request from ``peer_ip`` carrying ``x_forwarded_for``.

    An untrusted peer is the client (the header is ignored). Behind a trusted peer the
    header (comma-separated; several header values may be joined with commas; ports
    are stripped) is walked right to left: trusted hops are skipped and the right-most
    untrusted hop is returned. If every hop is trusted, the left-most is returned. A
    malformed entry stops the walk and the last valid hop to its right (or the peer)
    is returned. Returned hops are normalised (``[2001:DB8::1]:443`` -> ``2001:db8::1``).
    """
    if not x_forwarded_for or not trusted.contains(peer_ip):
        return peer_ip
    client = peer_ip
    for entry in reversed(x_forwarded_for.split(",")):
        if not entry or entry.isspace():
            continue  # empty list element, e.g. a trailing comma
        parsed = _parse_hop(entry)
        if parsed is None:
            break
        key, client = parsed
        if not trusted._contains_key(key):
            break
    return client
