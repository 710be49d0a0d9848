"""GeoIP adapter: client IP address -> country (and coordinates when the database has them).

Databases are opened with :class:`geoip2.database.Reader`, the supported way to read
MaxMind GeoIP2/GeoLite2 and DB-IP files: Country databases (including the bundled
IPFire-derived one, see :func:`bundled_database_path`) and City databases. Lookups go
straight to the reader's underlying ``maxminddb`` reader and pre-filter addresses with
``socket.inet_pton``, which is several times faster than building geoip2 model objects
or ``ipaddress`` objects on every request.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from bisect import bisect_right
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import geoip2.database
import maxminddb

__all__ = ["GeoIpError", "GeoIpLocator", "IpLocation", "bundled_database_path"]


@dataclass(frozen=True, slots=True)
class IpLocation:
    """Where an IP address is: an upper-case ISO 3166-1 alpha-2 code, coordinates if known."""

    country: str
    latitude: float | None
    longitude: float | None


class GeoIpError(Exception):
    """The GeoIP database file is missing, unreadable, of an unsupported type or corrupt."""


def bundled_database_path() -> Path:
    """Return the path of the bundled IPFire country database (CC BY-SA 4.0)."""
    return Path(__file__).resolve().parent / "data" / "ipfire-country.mmdb"


def _intervals(networks: str) -> tuple[list[int], list[int]]:
    """Return sorted (starts, ends) integer bounds of disjoint same-version networks."""
    bounds = sorted(
        (int(net.network_address), int(net.broadcast_address))
        for net in map(ipaddress.ip_network, networks.split())
    )
    if any(prev[1] >= cur[0] for prev, cur in pairwise(bounds)):
        raise AssertionError(f"overlapping networks in {networks!r}")
    return [start for start, _ in bounds], [end for _, end in bounds]


# Addresses that never identify a client's location: private, shared (CGNAT), loopback,
# link-local, documentation, benchmarking, IETF-reserved, multicast, broadcast, unspecified.
_V4_STARTS, _V4_ENDS = _intervals(
    "0.0.0.0/8 10.0.0.0/8 100.64.0.0/10 127.0.0.0/8 169.254.0.0/16 172.16.0.0/12 "
    "192.0.0.0/24 192.0.2.0/24 192.88.99.0/24 192.168.0.0/16 198.18.0.0/15 "
    "198.51.100.0/24 203.0.113.0/24 224.0.0.0/4 240.0.0.0/4"
)
# Everything outside 2000::/3 (global unicast) is non-global, e.g. ::, ::1, fc00::/7,
# fe80::/10, ff00::/8; inside it: IETF protocol assignments (incl. Teredo), documentation.
_V6_STARTS, _V6_ENDS = _intervals("::/3 4000::/2 8000::/1 2001::/23 2001:db8::/32 3fff::/20")
_V4_MAPPED_HIGH_BITS = 0xFFFF  # ::ffff:0:0/96 >> 32
_SIX_TO_FOUR_HIGH_BITS = 0x2002  # 2002::/16 carries the client's IPv4 in bits 16..47


def _is_special(value: int, starts: list[int], ends: list[int]) -> bool:
    index = bisect_right(starts, value) - 1
    return index >= 0 and value <= ends[index]


def _public_address(ip: str) -> str | ipaddress.IPv4Address | None:
    """Return a lookup key for a public address, or None for special/invalid input.

    IPv4-mapped and 6to4 IPv6 addresses are unwrapped to the IPv4 address they carry.
    """
    try:
        if ":" in ip:
            packed = socket.inet_pton(socket.AF_INET6, ip)
        else:
            packed = socket.inet_pton(socket.AF_INET, ip)
    except (OSError, ValueError, TypeError):
        return None
    value = int.from_bytes(packed, "big")
    if len(packed) == 16:
        if value >> 32 == _V4_MAPPED_HIGH_BITS:
            value &= 0xFFFFFFFF
        elif value >> 112 == _SIX_TO_FOUR_HIGH_BITS:
            value = (value >> 80) & 0xFFFFFFFF
        else:
            return None if _is_special(value, _V6_STARTS, _V6_ENDS) else ip
        return None if _is_special(value, _V4_STARTS, _V4_ENDS) else ipaddress.IPv4Address(value)
    return None if _is_special(value, _V4_STARTS, _V4_ENDS) else ip


def _coordinate(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) else None


class GeoIpLocator:
    """Country/City MMDB lookups; safe to share between threads, cheap per call."""

    __slots__ = ("_closed", "_country_only", "_database_type", "_db", "_has_location", "_path")

    def __init__(self, path: str | os.PathLike[str]) -> None:
        """Open a GeoIP2/GeoLite2/DB-IP Country or City database (or the bundled one).

        Raises GeoIpError naming ``path`` if the file cannot be used.
        """
        self._path = os.fspath(path)
        try:
            reader = geoip2.database.Reader(self._path, mode=maxminddb.MODE_AUTO)
        except (OSError, ValueError, maxminddb.InvalidDatabaseError) as exc:
            raise GeoIpError(f"cannot open GeoIP database {self._path!r}: {exc}") from exc
        database_type = reader.metadata().database_type
        if "City" in database_type or "Enterprise" in database_type:
            self._has_location = True
        elif "Country" in database_type:
            self._has_location = False
        else:
            reader.close()
            raise GeoIpError(
                f"GeoIP database {self._path!r} has type {database_type!r}; "
                "expected a Country or City database"
            )
        self._database_type: str = database_type
        # geoip2's Reader wraps a maxminddb reader; reading records from it directly
        # skips building geoip2 model objects (~4x faster per lookup).
        self._db: maxminddb.Reader = reader._db_reader
        self._country_only: dict[str, IpLocation] = {}
        self._closed = False

    @property
    def database_type(self) -> str:
        """The ``database_type`` from the database metadata, e.g. ``"GeoLite2-City"``."""
        return self._database_type

    @property
    def has_location(self) -> bool:
        """True for City-level databases, whose results may carry coordinates."""
        return self._has_location

    @property
    def path(self) -> str:
        """The database file path as given."""
        return self._path

    def locate(self, ip: str) -> IpLocation | None:
        """Return the location of a public IP address.

        Returns None for non-IP strings, non-public addresses (private, loopback,
        link-local, reserved, unspecified, multicast...) and addresses the database
        does not place in a country.
        """
        key = _public_address(ip)
        if key is None:
            return None
        try:
            record = self._db.get(key)
        except ValueError as exc:  # e.g. an IPv6 address against an IPv4-only database
            if self._closed:
                raise GeoIpError(f"GeoIP database {self._path!r} is closed") from exc
            return None
        except maxminddb.InvalidDatabaseError as exc:
            raise GeoIpError(f"GeoIP database {self._path!r} is corrupt: {exc}") from exc
        if not isinstance(record, dict):
            return None
        country = record.get("country")
        if not isinstance(country, dict):
            return None
        code = country.get("iso_code")
        if not isinstance(code, str) or len(code) != 2:
            return None
        if self._has_location:
            position = record.get("location")
            if isinstance(position, dict):
                latitude = _coordinate(position.get("latitude"))
                longitude = _coordinate(position.get("longitude"))
                if latitude is not None and longitude is not None:
                    return IpLocation(code.upper(), latitude, longitude)
        location = self._country_only.get(code)
        if location is None:
            location = self._country_only[code] = IpLocation(code.upper(), None, None)
        return location

    def close(self) -> None:
        """Close the database; later lookups raise GeoIpError."""
        self._closed = True
        self._db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"GeoIpLocator({self._path!r}, database_type={self._database_type!r})"
