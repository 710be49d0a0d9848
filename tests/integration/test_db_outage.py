"""PostgreSQL outage: the gateway keeps routing on its last good snapshot, never widens, says so
on /readyz and /metrics, loses no routing record, and recovers by itself.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from compliance.store.policy_store import PolicyStore
from compliance.store.routing_log_store import RoutingLogStore
from regions.catalog import RegionStatus
from tests.integration.conftest import HTTP, IP_CN, IP_DE, readiness, wait_all_healthy
from tests.integration.replicas_support import (
    RELOAD_BOUND_S,
    PgGatewayProcess,
    chat,
    cut_off,
    pg_database_or_skip,
    reconnect,
    refused_status,
    wait_for,
)

pytestmark = [pytest.mark.integration, pytest.mark.postgres]

RECOVERY_TIMEOUT_S = 15.0
"""Generous: the listener backs off up to 5 s between reconnects, the writer up to 5 s."""


@pytest.fixture
def gateway_pg(catalog: Path, temp_dir: Path) -> Iterator[PgGatewayProcess]:
    """A gateway on a throwaway PostgreSQL database, which is reopened whatever happens."""
    with pg_database_or_skip("rg_outage") as url:
        try:
            with PgGatewayProcess(catalog, temp_dir / "gw", url) as running:
                wait_all_healthy(running)
                yield running
        finally:
            reconnect(url)


def _database_up_metric(gateway: PgGatewayProcess) -> float:
    text = HTTP.get(f"{gateway.base_url}/metrics").text
    match = re.search(r"^gateway_database_up\w*(?:\{[^}]*\})? (\S+)$", text, re.MULTILINE)
    assert match, text
    return float(match.group(1))


def _set_status(url: str, region: str, status: RegionStatus) -> None:
    store = PolicyStore(url)
    try:
        store.set_region_status(region, status)
    finally:
        store.close()


def test_outage_keeps_last_snapshot_and_recovers(gateway_pg: PgGatewayProcess) -> None:
    url = gateway_pg.database_url
    # Drained before the outage: an outage must never make it eligible again.
    _set_status(url, "eu-frankfurt", RegionStatus.DRAINING)
    wait_for(
        lambda: chat(gateway_pg, IP_DE)[0], lambda r: r == "uk-london", RELOAD_BOUND_S, "drain"
    )
    version = readiness(gateway_pg)["policy_version"]

    cut_off(url)
    report, _ = wait_for(
        lambda: readiness(gateway_pg), lambda r: not r["database_ok"], 5.0, "outage not reported"
    )
    assert report["status"].startswith("degraded")
    assert report["policy_version"] == version
    assert _database_up_metric(gateway_pg) == 0.0

    decisions = _traffic_during_outage(gateway_pg)
    assert readiness(gateway_pg)["routing_log_pending"] > 0  # held, not dropped

    reconnect(url)
    report, recovered = wait_for(
        lambda: readiness(gateway_pg),
        lambda r: r["database_ok"] and r["routing_log_pending"] == 0,
        RECOVERY_TIMEOUT_S,
        "gateway did not recover",
    )
    print(f"recovered {recovered:.2f}s after the database came back")
    assert report["status"] == "ok"
    assert _database_up_metric(gateway_pg) == 1.0
    _assert_logged_once(url, decisions)

    _set_status(url, "eu-frankfurt", RegionStatus.ACTIVE)
    wait_for(
        lambda: chat(gateway_pg, IP_DE)[0],
        lambda r: r == "eu-frankfurt",
        RELOAD_BOUND_S,
        "a change after recovery was not picked up",
    )
    wait_for(
        lambda: readiness(gateway_pg)["policy_updates"],
        lambda state: state == "listening",
        RECOVERY_TIMEOUT_S,
        "change listener did not reconnect",
    )


def _traffic_during_outage(gateway: PgGatewayProcess) -> list[str]:
    """Routed requests still go to the allowed region, refusals are still 451."""
    decisions = []
    for _ in range(10):
        region, decision_id = chat(gateway, IP_DE)
        assert region == "uk-london"
        decisions.append(decision_id)
    for _ in range(3):
        status, decision_id = refused_status(gateway, IP_CN)
        assert status == 451
        decisions.append(decision_id)
    assert not readiness(gateway)["database_ok"]
    return decisions


def _assert_logged_once(url: str, decisions: list[str]) -> None:
    log = RoutingLogStore(url)
    try:
        rows: list[dict[str, Any]] = [log.get(d) or {} for d in decisions]
    finally:
        log.close()
    missing = [d for d, row in zip(decisions, rows, strict=True) if not row]
    assert not missing, f"routing records lost in the outage: {missing}"
    assert {row["outcome"] for row in rows} == {"routed", "refused"}
    assert {row["served_region"] for row in rows if row["outcome"] == "routed"} == {"uk-london"}
    assert len({row["seq"] for row in rows}) == len(decisions)
