"""A gateway started while PostgreSQL is unreachable: it stays up and says why it is not ready,
answers 503 rather than deciding from nothing, routes from its signed snapshot cache if an
earlier run left one (never from a tampered one), and takes over once the database answers.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from compliance.store.policy_store import PolicyStore
from compliance.store.routing_log_store import RoutingLogStore
from regions.catalog import RegionStatus
from tests.integration.conftest import DEMO_KEY, HTTP, IP_CN, IP_DE, wait_all_healthy
from tests.integration.replicas_support import (
    PgGatewayProcess,
    chat,
    cut_off,
    pg_database_or_skip,
    reconnect,
    refused_status,
    wait_for,
)

pytestmark = [pytest.mark.integration, pytest.mark.postgres]

ANSWER_TIMEOUT_S = 20.0
"""Bound on a hang: how long a starting gateway may take to answer /readyz at all."""
RECOVERY_TIMEOUT_S = 20.0
"""Bound on a hang: the retry pause doubles up to 5 s, plus migrating and seeding."""
CACHE_FILE = "policy-snapshot-cache.json"


@pytest.fixture
def database() -> Iterator[str]:
    """A throwaway PostgreSQL database, reopened whatever the test did to it."""
    with pg_database_or_skip("rg_start") as url:
        try:
            yield url
        finally:
            reconnect(url)


def _readyz(gateway: PgGatewayProcess) -> tuple[int, dict[str, Any]] | None:
    """(status, report) of /readyz; None while the process does not answer (it must be up)."""
    assert gateway.process is not None
    code = gateway.process.poll()
    assert code is None, f"gateway exited with {code}; output:\n{gateway.output()}"
    try:
        response = HTTP.get(f"{gateway.base_url}/readyz", timeout=1.0)
    except httpx.HTTPError:
        return None
    return response.status_code, response.json()


def _answering(gateway: PgGatewayProcess) -> tuple[int, dict[str, Any]]:
    answer, _ = wait_for(
        lambda: _readyz(gateway), lambda r: r is not None, ANSWER_TIMEOUT_S, "no /readyz"
    )
    assert answer is not None
    return answer


def _ready(gateway: PgGatewayProcess, source: str) -> dict[str, Any]:
    answer, _ = wait_for(
        lambda: _readyz(gateway),
        lambda r: r is not None and r[0] == 200 and r[1]["snapshot_source"] == source,
        RECOVERY_TIMEOUT_S,
        f"not ready from the {source}",
    )
    assert answer is not None
    return answer[1]


def _post_chat(gateway: PgGatewayProcess) -> httpx.Response:
    return HTTP.post(
        f"{gateway.base_url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {DEMO_KEY}", "X-Forwarded-For": IP_DE},
        json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
    )


def _earlier_run(catalog: Path, data_dir: Path, url: str) -> int:
    """Run a gateway once with the database up (eu-frankfurt drained); its policy version."""
    with PgGatewayProcess(catalog, data_dir, url) as gateway:
        seeded = _ready(gateway, "database")["policy_version"]
        store = PolicyStore(url)
        try:
            store.set_region_status("eu-frankfurt", RegionStatus.DRAINING)
        finally:
            store.close()
        version, _ = wait_for(
            lambda: HTTP.get(f"{gateway.base_url}/readyz").json()["policy_version"],
            lambda v: v > seeded,
            5.0,
            "the drain was not loaded",
        )
    assert isinstance(version, int)
    return version


def test_database_down_and_no_cache_not_ready_then_recovers(
    catalog: Path, temp_dir: Path, database: str
) -> None:
    cut_off(database)  # before the gateway ever reached it: not even migrated yet
    gateway = PgGatewayProcess(catalog, temp_dir / "gw", database)
    try:
        gateway.launch()
        status, report = _answering(gateway)
        assert status == 503
        assert report["ready"] is False and report["database_ok"] is False
        assert report["status"].startswith("not ready: policy not loaded")
        assert report["snapshot_source"] is None and report["policy_version"] is None

        refused = _post_chat(gateway)
        assert refused.status_code == 503
        assert refused.json()["error"]["code"] == "policy_not_loaded"
        models = HTTP.get(
            f"{gateway.base_url}/v1/models", headers={"Authorization": f"Bearer {DEMO_KEY}"}
        )
        assert models.status_code == 503
        assert models.json()["error"]["code"] == "policy_not_loaded"
        assert not (gateway.data_dir / CACHE_FILE).exists()

        reconnect(database)
        report = _ready(gateway, "database")
        assert report["database_ok"] is True and report["status"] == "ok"
        wait_all_healthy(gateway)
        region, decision_id = chat(gateway, IP_DE)
        assert region in {"eu-frankfurt", "uk-london", "us-oregon"}
        assert gateway.record(decision_id, timeout=10.0)["served_region"] == region
        assert (gateway.data_dir / CACHE_FILE).stat().st_mode & 0o777 == 0o600
    finally:
        gateway.stop()


def test_database_down_routes_from_the_cache_of_an_earlier_run(
    catalog: Path, temp_dir: Path, database: str
) -> None:
    version = _earlier_run(catalog, temp_dir / "gw", database)
    cut_off(database)
    gateway = PgGatewayProcess(catalog, temp_dir / "gw", database)
    try:
        gateway.launch()
        report = _ready(gateway, "cache")
        assert report["policy_version"] == version
        assert report["database_ok"] is False and report["status"].startswith("degraded")
        wait_all_healthy(gateway)
        decisions = []
        for _ in range(3):
            region, decision_id = chat(gateway, IP_DE)
            assert region == "uk-london"  # eu-frankfurt is drained in the cached policy
            decisions.append(decision_id)
        status, decision_id = refused_status(gateway, IP_CN)
        assert status == 451
        decisions.append(decision_id)

        reconnect(database)
        report = _ready(gateway, "database")
        assert report["policy_version"] == version
        # The routing-log drain, stuck while the database was away, moves again on its next
        # retry (back-off up to 5 s): readiness then says ok.
        wait_for(
            lambda: _readyz(gateway),
            lambda r: r is not None and r[1]["status"] == "ok",
            RECOVERY_TIMEOUT_S,
            "status never came back to ok",
        )
        log = RoutingLogStore(database)
        try:
            rows, _ = wait_for(
                lambda: [log.get(d) for d in decisions],
                all,
                RECOVERY_TIMEOUT_S,
                "records routed from the cache were not stored",
            )
        finally:
            log.close()
        assert {r["outcome"] for r in rows if r} == {"routed", "refused"}
    finally:
        gateway.stop()


def test_tampered_cache_is_refused(catalog: Path, temp_dir: Path, database: str) -> None:
    _earlier_run(catalog, temp_dir / "gw", database)
    cache = temp_dir / "gw" / CACHE_FILE
    envelope = json.loads(cache.read_text("utf-8"))
    policy = json.loads(envelope["payload"])
    for region in policy["regions"]:  # widen: every region becomes a German one
        region["country"] = "DE"
        region["status"] = "active"
    envelope["payload"] = json.dumps(policy)
    cache.write_text(json.dumps(envelope), "utf-8")

    cut_off(database)
    gateway = PgGatewayProcess(catalog, temp_dir / "gw", database)
    try:
        gateway.launch()
        status, report = _answering(gateway)
        assert status == 503 and report["snapshot_source"] is None
        assert _post_chat(gateway).status_code == 503
        output, _ = wait_for(
            gateway.output, lambda text: "snapshot cache" in text, 5.0, "no log line"
        )
        assert "refused" in output and "signature does not verify" in output
    finally:
        gateway.stop()
