"""Two gateway replicas on one PostgreSQL database: a change through one reaches both in 2 s."""

from __future__ import annotations

import contextlib
import io
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest

from compliance.store.access_store import AccessStore, Role
from compliance.store.routing_log_store import RoutingLogStore
from gateway.cli import build_parser
from regions.simulator.fleet import SimulatorFleet
from tests.integration.conftest import (
    HTTP,
    IP_DE,
    readiness,
    sim_requests,
    wait_all_healthy,
)
from tests.integration.replicas_support import (
    RELOAD_BOUND_S,
    PgGatewayProcess,
    chat,
    pg_database_or_skip,
    wait_for,
)

pytestmark = [pytest.mark.integration, pytest.mark.postgres]

# Periodic checks every minute: within the test only LISTEN/NOTIFY can deliver the change.
NOTIFY_ONLY = {"GATEWAY_SNAPSHOT_REFRESH_INTERVAL": "60"}


@pytest.fixture
def replicas(catalog: Path, temp_dir: Path) -> Iterator[tuple[PgGatewayProcess, PgGatewayProcess]]:
    """Two gateway processes sharing one throwaway PostgreSQL database."""
    with (
        pg_database_or_skip("rg_replicas") as url,
        PgGatewayProcess(catalog, temp_dir / "a", url, NOTIFY_ONLY) as first,
        PgGatewayProcess(catalog, temp_dir / "b", url, NOTIFY_ONLY) as second,
    ):
        for replica in (first, second):
            wait_all_healthy(replica)
            assert readiness(replica)["policy_updates"] == "listening"
        yield first, second


def _served_elsewhere(replica: PgGatewayProcess, decisions: list[str]) -> str:
    region, decision_id = chat(replica, IP_DE)
    decisions.append(decision_id)
    return region


def test_drain_through_one_replica_reaches_both_within_bound(
    replicas: tuple[PgGatewayProcess, PgGatewayProcess], fleet: SimulatorFleet
) -> None:
    first, second = replicas
    decisions: list[str] = []
    for replica in replicas:
        assert _served_elsewhere(replica, decisions) == "eu-frankfurt"

    token = _admin_token(first)
    sent = time.monotonic()  # the commit happens after this: measuring from here is stricter
    response = HTTP.patch(
        f"{first.base_url}/admin/regions/eu-frankfurt",
        json={"status": "draining"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 200, response.text
    version = response.json()["policy_version"]
    # The other replica first: the one written through waits for its own reload anyway.
    for replica in (second, first):
        wait_for(
            partial(_served_elsewhere, replica, decisions),
            lambda region: region != "eu-frankfurt",
            RELOAD_BOUND_S - (time.monotonic() - sent),
            f"replica on port {replica.port} still routing to the drained region",
        )
    print(f"PostgreSQL: drain served by both {time.monotonic() - sent:.3f}s after the PATCH")

    before = sim_requests(fleet, "eu-frankfurt")
    for replica in replicas:
        assert readiness(replica)["policy_version"] == version
        for _ in range(5):
            assert _served_elsewhere(replica, decisions) == "uk-london"
    assert sim_requests(fleet, "eu-frankfurt") == before

    _assert_one_log(first, decisions)


def _admin_token(replica: PgGatewayProcess) -> str:
    """An admin token in the shared database (what `gateway tokens create` stores)."""
    store = AccessStore(replica.database_url)
    try:
        return store.create("rollout", Role.ADMIN)
    finally:
        store.close()


def _assert_one_log(replica: PgGatewayProcess, decisions: list[str]) -> None:
    """Every decision of both replicas is in the shared log exactly once (and verifies)."""
    log = RoutingLogStore(replica.database_url)
    try:
        wait_for(log.count, lambda n: n >= len(decisions), 5.0, "routing records written")
        logged = [row["decision_id"] for row in log.recent(limit=len(decisions) + 10)]
    finally:
        log.close()
    assert sorted(logged) == sorted(decisions)
    assert len(set(decisions)) == len(decisions)
    _verify_chain(replica)


def _verify_chain(replica: PgGatewayProcess) -> None:
    """Run `gateway audit verify` on the shared database once the command exists."""
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            build_parser().parse_args(["audit", "verify"])
    except SystemExit:
        return  # not there yet: the exactly-once check above is what we can assert
    result = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "audit", "verify"],
        env=replica.env,
        cwd=replica.data_dir,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_replicas_started_together_migrate_one_database(catalog: Path, temp_dir: Path) -> None:
    """A rollout starts every replica at once on a fresh database: exactly one migrates/seeds."""
    with pg_database_or_skip("rg_rollout") as url:
        # Three start-ups at once on two cores, two of them waiting for the migration lock:
        # a generous bound, since on a busy machine the last one took over 20 s.
        replicas = [
            PgGatewayProcess(catalog, temp_dir / f"r{i}", url, NOTIFY_ONLY, startup_timeout=90)
            for i in range(3)
        ]
        errors: list[BaseException] = []

        def start(replica: PgGatewayProcess) -> None:
            try:
                replica.start()
            except BaseException as exc:  # reported below, with the gateway's output
                errors.append(exc)

        threads = [threading.Thread(target=start, args=(r,)) for r in replicas]
        try:
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            assert not errors, errors[0]
            assert {readiness(r)["policy_version"] for r in replicas} == {1}
        finally:
            for replica in replicas:
                replica.stop()
