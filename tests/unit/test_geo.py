"""Country centroid table and haversine distance tests."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest

from regions.geo import (
    ISO_COUNTRY_CODES,
    country_centroid,
    country_name,
    haversine_km,
    is_country_code,
)

CSV_PATH = Path(__file__).resolve().parents[2] / "regions" / "data" / "country_centroids.csv"


def _rows() -> list[dict[str, str]]:
    with CSV_PATH.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.parametrize(
    ("code", "latitude", "longitude"),
    [
        ("DE", 51.0, 10.0),
        ("IN", 21.0, 79.0),
        ("US", 39.0, -97.0),
        ("AU", -25.0, 134.0),
        ("BR", -14.0, -52.0),
        ("JP", 36.0, 138.0),
        ("GB", 54.0, -2.0),
        ("ZA", -30.0, 24.0),
    ],
)
def test_centroid_near_expected(code: str, latitude: float, longitude: float) -> None:
    centroid = country_centroid(code)
    assert centroid is not None
    assert haversine_km(*centroid, latitude, longitude) < 500


def test_centroid_is_case_insensitive() -> None:
    assert country_centroid("de") == country_centroid("DE")
    assert country_name("de") == "Germany"


@pytest.mark.parametrize("code", ["ZZ", "EU", "UK", "", "DEU", "D"])
def test_unknown_code_has_no_centroid(code: str) -> None:
    assert country_centroid(code) is None
    assert country_name(code) is None
    assert not is_country_code(code)


def test_csv_rows_are_well_formed() -> None:
    rows = _rows()
    codes = [row["iso2"] for row in rows]
    assert len(codes) == len(set(codes)) >= 249
    assert codes == sorted(codes)
    for row in rows:
        assert len(row["iso2"]) == 2 and row["iso2"].isascii() and row["iso2"].isupper()
        assert -90 <= float(row["latitude"]) <= 90
        assert -180 <= float(row["longitude"]) <= 180
        assert row["name"]
    assert frozenset(codes) == ISO_COUNTRY_CODES


@pytest.mark.parametrize("code", ["DE", "FR", "IN", "US", "CN", "BR", "SG", "XK", "AQ", "GB"])
def test_is_country_code(code: str) -> None:
    assert is_country_code(code)
    assert not is_country_code(code.lower())


@pytest.mark.parametrize(
    ("a", "b", "expected_km", "tolerance_km"),
    [
        ((50.1109, 8.6821), (51.5074, -0.1278), 640, 20),  # Frankfurt - London
        ((40.7128, -74.0060), (34.0522, -118.2437), 3936, 20),  # New York - Los Angeles
        ((48.8566, 2.3522), (35.6762, 139.6503), 9712, 30),  # Paris - Tokyo
        ((-33.8688, 151.2093), (1.3521, 103.8198), 6300, 30),  # Sydney - Singapore
        ((0.0, 0.0), (0.0, 180.0), math.pi * 6371.0088, 0.001),  # antipodes
    ],
)
def test_haversine_known_distances(
    a: tuple[float, float], b: tuple[float, float], expected_km: float, tolerance_km: float
) -> None:
    assert haversine_km(*a, *b) == pytest.approx(expected_km, abs=tolerance_km)
    assert haversine_km(*b, *a) == pytest.approx(haversine_km(*a, *b))


def test_haversine_zero_and_wraparound() -> None:
    assert haversine_km(51.0, 10.0, 51.0, 10.0) == 0.0
    assert haversine_km(0.0, 179.5, 0.0, -179.5) == pytest.approx(111.2, abs=0.5)
