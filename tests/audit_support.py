"""Routing records as the gateway writes them, for audit search/report tests and benchmarks.

Records are made by the real routing core (decide) over the policy the database holds, then
shaped by gateway.routing.records.routing_record, exactly as the data path does.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from compliance.jurisdictions import DataClass
from compliance.pack import load_pack
from compliance.store.catalog_file import load_catalog
from compliance.store.migrate import upgrade
from compliance.store.policy_store import PolicyStore
from gateway.routing.decide import decide
from gateway.routing.facts import RequestFacts
from gateway.routing.records import Attempt, routing_record
from gateway.routing.snapshot import RoutingSnapshot

DEMO_CATALOG = Path(__file__).resolve().parents[1] / "regions" / "data" / "demo-catalog.yaml"
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


def seeded_store(url: str) -> PolicyStore:
    """Migrate `url` to head and seed the default pack and the demo catalog (version 1)."""
    upgrade(url)
    store = PolicyStore(url)
    label, regimes = load_pack()
    regions, tenants = load_catalog(DEMO_CATALOG)
    store.seed_if_empty(label, regimes, regions, tenants)
    return store


def make_record(
    snapshot: RoutingSnapshot,
    decision_id: str,
    at: datetime,
    *,
    client: str | None = "DE",
    subject: str | None = None,
    data_class: str = "personal",
    tenant: str | None = "demo",
    model: str | None = "gpt-4o-mini",
    fail_first: bool = False,
) -> dict[str, Any]:
    """The routing record of one request decided now against `snapshot`.

    The chosen region answers, unless `fail_first`: then it fails with a 502 and the first
    fallback serves the request.
    """
    facts = RequestFacts(
        request_id=decision_id,
        at=at,
        tenant_id=tenant,
        client_country=client,
        subject_country=subject,
        data_class=DataClass(data_class),
        model=model,
    )
    decision = decide(facts, snapshot)
    route = decision.route()
    attempts: list[Attempt] = []
    served = None
    if route and fail_first and len(route) > 1:
        attempts = [Attempt(route[0], "http_5xx", 502, 3.5), Attempt(route[1], "ok", 200, 8.25)]
        served = route[1]
    elif route:
        attempts = [Attempt(route[0], "ok", 200, 7.5)]
        served = route[0]
    return routing_record(
        decision,
        outcome=decision.outcome,
        status_code=200 if served else decision.http_status,
        served_region=served,
        attempts=attempts,
        latency_ms=12.0,
        trace_id=TRACE,
        client_ip_hmac="ab" * 32,
    )
