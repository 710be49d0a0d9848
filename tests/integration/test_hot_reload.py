"""Hot reload on SQLite (version polling): region, tenant and policy changes reach a running
gateway within 2 s, without a restart; a request in flight keeps the snapshot it started with.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from compliance.store.policy_store import PolicyStore
from gateway.settings import Settings
from regions.catalog import RegionStatus
from regions.simulator.fleet import SimulatorFleet
from tests.integration.conftest import (
    CHAT,
    DEMO_KEY,
    HTTP,
    IP_DE,
    GatewayProcess,
    openai_client,
    readiness,
    set_faults,
    wait_all_healthy,
)
from tests.integration.replicas_support import RELOAD_BOUND_S, chat, wait_for

pytestmark = pytest.mark.integration

DEFAULT_INTERVAL = str(Settings.model_fields["snapshot_refresh_interval"].default)


@pytest.fixture(scope="module")
def gateway_sqlite(
    catalog: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    """A gateway on its own SQLite file, polling at the product's default interval."""
    overrides = {"GATEWAY_SNAPSHOT_REFRESH_INTERVAL": DEFAULT_INTERVAL}
    with GatewayProcess(catalog, tmp_path_factory.mktemp("hot-reload"), overrides) as running:
        assert readiness(running)["policy_updates"] == "polling"
        yield running


@pytest.fixture
def store(gateway_sqlite: GatewayProcess) -> Iterator[PolicyStore]:
    """A writer on the gateway's database, as an operator's tool would be."""
    policy_store = PolicyStore(gateway_sqlite.database_url)
    yield policy_store
    policy_store.close()


def _within_bound(probe: Any, accept: Any, committed: float, what: str) -> float:
    """Wait for `accept(probe())` no later than the bound after the commit; returns latency."""
    wait_for(probe, accept, RELOAD_BOUND_S - (time.monotonic() - committed), what)
    return time.monotonic() - committed


def test_region_drain_is_served_within_bound(
    gateway_sqlite: GatewayProcess, store: PolicyStore
) -> None:
    wait_all_healthy(gateway_sqlite)
    assert chat(gateway_sqlite, IP_DE)[0] == "eu-frankfurt"
    store.set_region_status("eu-frankfurt", RegionStatus.DRAINING)
    committed = time.monotonic()
    try:
        latency = _within_bound(
            lambda: chat(gateway_sqlite, IP_DE)[0],
            lambda region: region == "uk-london",
            committed,
            "drained region still chosen",
        )
        print(f"SQLite: drain served {latency:.3f}s after commit")
    finally:
        store.set_region_status("eu-frankfurt", RegionStatus.ACTIVE)
    _within_bound(
        lambda: chat(gateway_sqlite, IP_DE)[0],
        lambda region: region == "eu-frankfurt",
        time.monotonic(),
        "reactivated region not chosen again",
    )


def _status_with_key(gateway: GatewayProcess, key: str) -> int:
    response = HTTP.get(f"{gateway.base_url}/v1/models", headers={"Authorization": f"Bearer {key}"})
    return response.status_code


def test_tenant_change_is_served_within_bound(
    gateway_sqlite: GatewayProcess, store: PolicyStore
) -> None:
    demo = store.load_snapshot().tenants["demo"]
    narrowed = dataclasses.replace(demo, denied_regions=frozenset({"eu-frankfurt"}))
    new_key = "rg-rotated-demo-key"
    assert _status_with_key(gateway_sqlite, new_key) == 401
    store.upsert_tenant(narrowed, api_keys=[new_key])
    committed = time.monotonic()
    try:
        _within_bound(
            lambda: _status_with_key(gateway_sqlite, new_key),
            lambda status: status == 200,
            committed,
            "new tenant key not accepted",
        )
        assert _status_with_key(gateway_sqlite, DEMO_KEY) == 401
        assert chat(gateway_sqlite, IP_DE, api_key=new_key)[0] == "uk-london"
    finally:
        store.upsert_tenant(demo, api_keys=[DEMO_KEY])
    _within_bound(
        lambda: _status_with_key(gateway_sqlite, DEMO_KEY),
        lambda status: status == 200,
        time.monotonic(),
        "restored tenant key not accepted",
    )


def _allowed_for_de(gateway: GatewayProcess) -> frozenset[str]:
    response = HTTP.post(
        f"{gateway.base_url}/v1/residency/explain",
        json={},
        headers={"Authorization": f"Bearer {DEMO_KEY}", "X-Forwarded-For": IP_DE},
    )
    response.raise_for_status()
    return frozenset(c["region"] for c in response.json()["candidates"] if c["allowed"])


def test_policy_change_is_served_within_bound(
    gateway_sqlite: GatewayProcess, store: PolicyStore
) -> None:
    gdpr = next(r for r in store.load_snapshot().regimes if r.id == "gdpr")
    without_us = dataclasses.replace(
        gdpr,
        rules=tuple(
            dataclasses.replace(
                rule, destinations=tuple(d for d in rule.destinations if d.country != "US")
            )
            for rule in gdpr.rules
        ),
    )
    assert "us-oregon" in _allowed_for_de(gateway_sqlite)
    store.replace_regime(without_us)
    committed = time.monotonic()
    try:
        _within_bound(
            lambda: _allowed_for_de(gateway_sqlite),
            lambda allowed: "us-oregon" not in allowed and "eu-frankfurt" in allowed,
            committed,
            "narrowed GDPR destinations not applied",
        )
    finally:
        store.replace_regime(gdpr)
    _within_bound(
        lambda: _allowed_for_de(gateway_sqlite),
        lambda allowed: "us-oregon" in allowed,
        time.monotonic(),
        "restored GDPR destinations not applied",
    )


def test_request_in_flight_keeps_its_snapshot(
    gateway_sqlite: GatewayProcess, store: PolicyStore, fleet: SimulatorFleet
) -> None:
    wait_all_healthy(gateway_sqlite)
    # A slow stream: ~2 s of tokens, so the reload lands while it is being relayed.
    set_faults(fleet, "eu-frankfurt", completion_tokens=20, tokens_per_second=10)
    old_version = readiness(gateway_sqlite)["policy_version"]
    try:
        with openai_client(gateway_sqlite, IP_DE) as client:
            raw = client.chat.completions.with_raw_response.create(
                model="gpt-4o-mini", messages=CHAT, stream=True
            )
            assert raw.headers["x-residency-region"] == "eu-frankfurt"
            chunks = iter(raw.parse())
            text = [c.delta.content or "" for c in next(chunks).choices]
            finish: list[str] = []

            new_version = store.set_region_status("eu-frankfurt", RegionStatus.DRAINING)
            wait_for(
                lambda: readiness(gateway_sqlite)["policy_version"],
                lambda version: version == new_version,
                RELOAD_BOUND_S,
                "drain not loaded",
            )
            region, new_decision = chat(gateway_sqlite, IP_DE)
            assert region == "uk-london"

            for chunk in chunks:
                text.extend(c.delta.content or "" for c in chunk.choices)
                finish = [c.finish_reason for c in chunk.choices if c.finish_reason]
    finally:
        store.set_region_status("eu-frankfurt", RegionStatus.ACTIVE)

    assert finish == ["stop"], "the stream in flight was cut short by the reload"
    assert "eu-frankfurt" in "".join(text)
    in_flight = gateway_sqlite.record(raw.headers["x-residency-decision"])
    assert (in_flight["served_region"], in_flight["policy_version"]) == (
        "eu-frankfurt",
        old_version,
    )
    assert in_flight["outcome"] == "routed"
    after = gateway_sqlite.record(new_decision)
    assert (after["served_region"], after["policy_version"]) == ("uk-london", new_version)
