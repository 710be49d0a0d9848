"""GeoIP adapter and MMDB builder tests (tiny fixture DB + the bundled IPFire DB)."""

from __future__ import annotations

from pathlib import Path

import geoip2.database
import pytest
from mmdb_writer import MMDBWriter
from netaddr import IPSet

from regions.geoip import GeoIpError, GeoIpLocator, IpLocation, bundled_database_path
from scripts.geoip_build import DATABASE_TYPE, IpRange, build_database, read_ranges

FIXTURE_V4 = """\
# Location Database Export (test fixture)
# License:   CC BY-SA 4.0
16777216,16777471,AU
16777472,16777727,AU
134744064,134744071,US
1359101952,1359118335,UK
34603008,34604543,EU
50331648,50331903,??
"""
FIXTURE_V6 = """\
# comment
2001:200::,2001:200:ffff:ffff:ffff:ffff:ffff:ffff,JP
2a01:4f8::,2a01:4f8:ffff:ffff:ffff:ffff:ffff:ffff,DE
2a02:2e0::,2a02:2e0:ffff:ffff:ffff:ffff:ffff:ffff,ZZ
"""


@pytest.fixture(scope="module")
def tiny_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("geoip")
    (directory / "geoip").write_text(FIXTURE_V4)
    (directory / "geoip6").write_text(FIXTURE_V6)
    output = directory / "tiny.mmdb"
    stats = build_database(directory / "geoip", directory / "geoip6", output)
    assert (stats.ipv4_ranges, stats.ipv6_ranges) == (4, 2)  # AU merged; ??, ZZ dropped
    return output


@pytest.fixture(scope="module")
def tiny(tiny_db: Path) -> GeoIpLocator:
    return GeoIpLocator(tiny_db)


@pytest.fixture(scope="module")
def bundled() -> GeoIpLocator:
    return GeoIpLocator(bundled_database_path())


def test_read_ranges_normalises_merges_and_drops(tiny_db: Path) -> None:
    ranges = read_ranges(tiny_db.parent / "geoip", 4)
    assert ranges[0] == IpRange(16777216, 16777727, "AU")
    assert [r.code for r in ranges] == ["AU", "EU", "US", "GB"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("1,2,US\nnot-a-line\n", ":2: bad line"),
        ("1,2,US\n5,x,US\n", ":2: bad line"),
        ("1,10,US\n5,20,DE\n", "overlapping"),
        ("::1,::2,US\n", "expected an IPv4 address"),
    ],
)
def test_read_ranges_rejects_bad_input(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad"
    path.write_text(text)
    with pytest.raises(ValueError, match=message) as info:
        read_ranges(path, 4)
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    ("ip", "country"),
    [
        ("1.0.0.1", "AU"),
        ("1.0.1.200", "AU"),  # second half of the merged AU range
        ("8.8.8.0", "US"),
        ("8.8.8.7", "US"),
        ("81.2.69.160", "GB"),  # "UK" in the source
        ("::ffff:8.8.8.3", "US"),  # IPv4-mapped
        ("2001:200::1", "JP"),
        ("2a01:4f8:ffff::1", "DE"),
        ("8.8.8.8", None),  # just past the US range
        ("1.0.2.0", None),
        ("2.16.0.1", None),  # "EU": no country
        ("3.0.0.1", None),  # "??"
        ("2a01:4f9::1", None),
        ("2a02:2e0::1", None),  # "ZZ"
        ("2c0f:ff00::1", None),
    ],
)
def test_tiny_db_lookups(tiny: GeoIpLocator, ip: str, country: str | None) -> None:
    expected = None if country is None else IpLocation(country, None, None)
    assert tiny.locate(ip) == expected


def test_tiny_db_is_geoip2_country_compatible(tiny_db: Path) -> None:
    with geoip2.database.Reader(str(tiny_db)) as reader:
        metadata = reader.metadata()
        assert metadata.database_type == DATABASE_TYPE
        assert metadata.ip_version == 6
        assert "CC BY-SA 4.0" in metadata.description["en"]
        germany = reader.country("2a01:4f8::1")
        assert germany.country.iso_code == "DE"
        assert germany.country.name == "Germany"
        assert germany.country.is_in_european_union
        assert germany.continent.code == "EU"
        australia = reader.country("1.0.0.1")
        assert (australia.country.iso_code, australia.continent.code) == ("AU", "OC")
        assert not australia.country.is_in_european_union
        eu_only = reader.country("2.16.0.1")
        assert (eu_only.country.iso_code, eu_only.continent.code) == (None, "EU")


def test_locator_properties(tiny: GeoIpLocator, tiny_db: Path) -> None:
    assert tiny.database_type == DATABASE_TYPE
    assert not tiny.has_location
    assert tiny.path == str(tiny_db)


def _write_db(path: Path, database_type: str, ip_version: int = 6) -> Path:
    writer = MMDBWriter(
        ip_version=ip_version, ipv4_compatible=ip_version == 6, database_type=database_type
    )
    writer.insert_network(
        IPSet(["81.2.69.0/24"]),
        {"country": {"iso_code": "GB"}, "location": {"latitude": 51.5142, "longitude": -0.0931}},
    )
    writer.insert_network(IPSet(["8.8.8.0/24"]), {"country": {"iso_code": "us"}})
    writer.insert_network(IPSet(["9.9.9.0/24"]), {"registered_country": {"iso_code": "US"}})
    writer.to_db_file(str(path))
    return path


@pytest.mark.parametrize("database_type", ["GeoLite2-City", "GeoIP2-City", "DBIP-City-Lite"])
def test_city_database_reports_coordinates(tmp_path: Path, database_type: str) -> None:
    with GeoIpLocator(_write_db(tmp_path / "city.mmdb", database_type)) as locator:
        assert locator.has_location
        assert locator.locate("81.2.69.160") == IpLocation("GB", 51.5142, -0.0931)
        assert locator.locate("8.8.8.8") == IpLocation("US", None, None)  # no location
        assert locator.locate("9.9.9.9") is None  # registered country only
        assert locator.locate("2a01:4f8::1") is None


def test_ipv4_only_database_returns_none_for_ipv6(tmp_path: Path) -> None:
    with GeoIpLocator(_write_db(tmp_path / "v4.mmdb", "GeoLite2-Country", 4)) as locator:
        assert locator.locate("81.2.69.160") == IpLocation("GB", None, None)
        assert locator.locate("2a01:4f8::1") is None


@pytest.mark.parametrize(
    ("ip", "country"),
    [
        # Each verified against /usr/share/tor/geoip{,6} (IPFire export).
        ("193.99.144.80", "DE"),
        ("46.4.0.1", "DE"),
        ("14.139.0.1", "IN"),
        ("117.192.0.1", "IN"),
        ("8.8.8.8", "US"),
        ("4.2.2.2", "US"),
        ("81.2.69.160", "GB"),
        ("212.58.244.1", "GB"),
        ("133.1.0.1", "JP"),
        ("210.130.0.1", "JP"),
        ("1.1.1.1", "AU"),
        ("2a01:4f8::1", "DE"),
        ("2001:200::1", "JP"),
        ("2001:4860:4860::8888", "US"),
        ("2001:67c:2e8::1", "NL"),
        ("::ffff:8.8.8.8", "US"),  # IPv4-mapped
        ("2002:808:808::1", "US"),  # 6to4 wrapping 8.8.8.8
    ],
)
def test_bundled_database_known_addresses(bundled: GeoIpLocator, ip: str, country: str) -> None:
    assert bundled.locate(ip) == IpLocation(country, None, None)


@pytest.mark.parametrize(
    "ip",
    [
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "100.64.0.1",
        "169.254.1.1",
        "0.0.0.0",
        "255.255.255.255",
        "224.0.0.1",
        "240.0.0.1",
        "192.0.2.1",
        "::",
        "::1",
        "fe80::1",
        "fc00::1",
        "ff02::1",
        "2001:db8::1",
        "2001::1",  # Teredo
        "::ffff:10.0.0.1",
        "2002:c0a8:101::1",  # 6to4 wrapping 192.168.1.1
        "2.16.0.1",  # IPFire "EU": no country
        "not an ip",
        "",
        "1.2.3",
        "8.8.8.8:443",
        " 8.8.8.8",
        "[2001:4860:4860::8888]",
        "999.1.1.1",
        "01.2.3.4",
    ],
)
def test_bundled_database_returns_none(bundled: GeoIpLocator, ip: str) -> None:
    assert bundled.locate(ip) is None


def test_bundled_database_metadata(bundled: GeoIpLocator) -> None:
    assert bundled_database_path().is_file()
    assert bundled.database_type == DATABASE_TYPE
    assert not bundled.has_location


def test_missing_file_raises_geoip_error(tmp_path: Path) -> None:
    path = tmp_path / "missing.mmdb"
    with pytest.raises(GeoIpError) as info:
        GeoIpLocator(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("content", [b"", b"not a maxmind database\n", b"\x00" * 4096])
def test_non_mmdb_file_raises_geoip_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bogus.mmdb"
    path.write_bytes(content)
    with pytest.raises(GeoIpError) as info:
        GeoIpLocator(path)
    assert str(path) in str(info.value)


def test_directory_raises_geoip_error(tmp_path: Path) -> None:
    with pytest.raises(GeoIpError) as info:
        GeoIpLocator(tmp_path)
    assert str(tmp_path) in str(info.value)


def test_unsupported_database_type_raises_geoip_error(tmp_path: Path) -> None:
    path = _write_db(tmp_path / "asn.mmdb", "GeoLite2-ASN")
    with pytest.raises(GeoIpError, match=r"asn\.mmdb.*GeoLite2-ASN"):
        GeoIpLocator(path)


def test_lookup_after_close_raises_geoip_error(tiny_db: Path) -> None:
    locator = GeoIpLocator(tiny_db)
    locator.close()
    with pytest.raises(GeoIpError, match="closed"):
        locator.locate("1.0.0.1")
