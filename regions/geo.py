"""Country reference data (approximate centroids, names) and great-circle distance.

The table lives in ``regions/data/country_centroids.csv`` (``iso2,latitude,longitude,name``):
every ISO 3166-1 alpha-2 code plus ``XK`` (Kosovo, the user-assigned code used by
MaxMind and DB-IP). Coordinates are approximate geographic centres, good to a few
hundred kilometres - enough to rank regions by distance, not for anything finer.
"""

from __future__ import annotations

import csv
import io
import math
from functools import cache
from importlib.resources import files
from typing import NamedTuple

__all__ = [
    "ISO_COUNTRY_CODES",
    "country_centroid",
    "country_name",
    "haversine_km",
    "is_country_code",
]

EARTH_RADIUS_KM = 6371.0088
"""Mean Earth radius (IUGG), in kilometres."""


class _Country(NamedTuple):
    latitude: float
    longitude: float
    name: str


@cache
def _countries() -> dict[str, _Country]:
    text = files("regions").joinpath("data", "country_centroids.csv").read_text("utf-8")
    table: dict[str, _Country] = {}
    for row in csv.DictReader(io.StringIO(text)):
        table[row["iso2"]] = _Country(float(row["latitude"]), float(row["longitude"]), row["name"])
    return table


ISO_COUNTRY_CODES: frozenset[str] = frozenset(_countries())
"""Upper-case country codes known to this module (ISO 3166-1 alpha-2 plus ``XK``)."""


def is_country_code(code: str) -> bool:
    """Return True if ``code`` is a known upper-case country code (``"DE"``, not ``"de"``)."""
    return code in ISO_COUNTRY_CODES


def country_centroid(iso2: str) -> tuple[float, float] | None:
    """Return the approximate ``(latitude, longitude)`` of a country, or None if unknown.

    The lookup is case-insensitive.
    """
    country = _countries().get(iso2.upper())
    return None if country is None else (country.latitude, country.longitude)


def country_name(iso2: str) -> str | None:
    """Return the English short name of a country, or None if unknown (case-insensitive)."""
    country = _countries().get(iso2.upper())
    return None if country is None else country.name


def haversine_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Return the great-circle distance in kilometres between two points given in degrees."""
    phi1 = math.radians(lat1)
    phi2 = math.radians(lat2)
    dphi = phi2 - phi1
    dlambda = math.radians(lon2 - lon1)
    a = math.sin(dphi / 2) ** 2 + math.cos(phi1) * math.cos(phi2) * math.sin(dlambda / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(a)))
