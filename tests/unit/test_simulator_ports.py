"""`--simulator-ports`: which catalog regions move, to which ports, and what an existing
database keeps."""

from __future__ import annotations

import argparse

import pytest

from compliance.store.catalog_file import load_catalog
from gateway.simulator_ports import (
    SimulatedRegionsError,
    assign_ports,
    check_existing,
    loopback_port,
    parse_simulator_ports,
)
from regions.catalog import Region

DEMO_REGIONS = load_catalog()[0]


def _region(region_id: str, base_url: str) -> Region:
    return Region(region_id, region_id, "DE", 50.0, 8.0, base_url)


def test_a_base_port_gives_consecutive_ports_in_catalog_order() -> None:
    moved = assign_ports(DEMO_REGIONS, 9201)
    assert [r.base_url for r in moved] == [f"http://127.0.0.1:{p}" for p in range(9201, 9206)]
    assert [r.id for r in moved] == [r.id for r in DEMO_REGIONS]


def test_auto_gives_distinct_ports() -> None:
    ports = [loopback_port(r.base_url) for r in assign_ports(DEMO_REGIONS, "auto")]
    assert len(set(ports)) == len(DEMO_REGIONS)


def test_only_loopback_regions_move() -> None:
    regions = (
        _region("remote", "https://gpu.example.com:8000/v1"),
        _region("local", "http://[::1]:9101/v1"),
    )
    moved = assign_ports(regions, 9300)
    assert [r.base_url for r in moved] == [
        "https://gpu.example.com:8000/v1",
        "http://[::1]:9300/v1",
    ]


def test_a_base_too_high_for_the_regions_is_refused() -> None:
    with pytest.raises(SimulatedRegionsError, match="beyond 65535"):
        assign_ports(DEMO_REGIONS, 65533)


@pytest.mark.parametrize(("text", "value"), [("auto", "auto"), ("AUTO", "auto"), ("9201", 9201)])
def test_parse(text: str, value: object) -> None:
    assert parse_simulator_ports(text) == value


@pytest.mark.parametrize("text", ["", "nine", "0", "70000"])
def test_parse_refuses(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        parse_simulator_ports(text)


def test_an_existing_database_keeps_its_ports() -> None:
    check_existing([9103, 9101, 9102], 9101)
    check_existing([9101, 9102], "auto")
    with pytest.raises(SimulatedRegionsError, match="ports 9101, 9102; the flag applies only"):
        check_existing([9101, 9102], 9201)
