"""Write-ahead routing records with real gateway processes: the decision is durable before the
request leaves for a region, the outcome joins it by decision id, a `kill -9` in between
leaves a decision shown as "no outcome recorded", and concurrent decisions share fsyncs."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from compliance.audit.verify import verify
from compliance.audit_query.filters import parse_filter
from compliance.audit_query.reader import AuditReader
from compliance.store.access_store import AccessStore, Role
from compliance.store.engine import create_store_engine
from compliance.store.migrate import upgrade
from compliance.store.routing_log_store import RoutingLogStore
from regions.simulator.fleet import SimulatorFleet
from tests.audit_chain_support import intent_entry, outcome_entry
from tests.integration.conftest import (
    CHAT,
    DEMO_KEY,
    HTTP,
    IP_DE,
    REGIONS,
    GatewayProcess,
    readiness,
    reset_fleet,
    set_faults,
    sim_requests,
)
from tests.integration.replicas_support import pg_database_or_skip, wait_for
from tests.integration.test_audit_durability import audit_cli
from tests.integration.test_metrics import sample, scrape

pytestmark = pytest.mark.integration

BODY = {"model": "gpt-4o-mini", "messages": CHAT}
HEADERS = {"Authorization": f"Bearer {DEMO_KEY}", "X-Forwarded-For": IP_DE}


def rows(url: str, sql: str, **params: Any) -> list[Any]:
    """Rows of one query against the gateway's database."""
    engine = create_store_engine(url)
    try:
        with engine.connect() as conn:
            return list(conn.execute(sa.text(sql), params))
    finally:
        engine.dispose()


def auditor(gateway: GatewayProcess) -> dict[str, str]:
    """Headers of a fresh auditor token."""
    store = AccessStore(gateway.database_url)
    try:
        return {"Authorization": f"Bearer {store.create('wa-auditor', Role.AUDITOR)}"}
    finally:
        store.close()


def audit_get(gateway: GatewayProcess, token: dict[str, str], path: str, **params: Any) -> Any:
    response = HTTP.get(f"{gateway.base_url}{path}", params=params, headers=token)
    assert response.status_code == 200, response.text
    return response.json()


@pytest.fixture
def hanging_fleet(fleet: SimulatorFleet) -> Iterator[SimulatorFleet]:
    """Every region holds /v1 requests (it has the request, the client has no answer)."""
    try:
        for region_id in REGIONS:
            set_faults(fleet, region_id, hang=True)
        yield fleet
    finally:
        reset_fleet(fleet)


def test_kill_9_between_forwarding_and_answering_keeps_the_decision(
    catalog: Path, hanging_fleet: SimulatorFleet, temp_dir: Path
) -> None:
    data_dir = temp_dir / "gw"
    overrides = {"GATEWAY_UPSTREAM_FIRST_BYTE_TIMEOUT": "60"}  # no failover while held
    before = {r: sim_requests(hanging_fleet, r) for r in REGIONS}
    gateway = GatewayProcess(catalog, data_dir, overrides)
    gateway.start()
    try:
        client = httpx.Client(base_url=gateway.base_url, timeout=60.0, trust_env=False)
        sender = threading.Thread(
            target=lambda: _post_ignoring_errors(client), name="held-request", daemon=True
        )
        sender.start()

        def reached() -> list[str]:
            return [r for r in REGIONS if sim_requests(hanging_fleet, r) > before[r]]

        wait_for(reached, lambda found: len(found) == 1, 30, "the request to reach a region")
        region = reached()[0]
        assert gateway.process is not None
        gateway.process.kill()  # SIGKILL: the region holds the request, no answer was sent
        gateway.process.wait()
        sender.join(30)
        client.close()
    finally:
        gateway.stop()
    reset_fleet(hanging_fleet)

    with GatewayProcess(catalog, data_dir, overrides) as restarted:
        wait_for(
            lambda: readiness(restarted)["routing_log_pending"], lambda n: n == 0, 30, "replay"
        )
        token = auditor(restarted)
        listed = audit_get(restarted, token, "/audit/decisions", outcome="unknown")["decisions"]
        assert len(listed) == 1, listed
        record = listed[0]
        assert record["outcome"] == "unknown" and record["outcome_recorded"] is False
        assert record["chosen_region"] == region and record["status_code"] is None
        everything = audit_get(restarted, token, "/audit/decisions")["decisions"]
        assert [d["decision_id"] for d in everything] == [record["decision_id"]]

        shown = audit_get(restarted, token, f"/audit/decisions/{record['decision_id']}")
        assert shown["summary"].startswith("No outcome recorded: decided for " + region)
        assert any(
            line.startswith("Outcome: no outcome recorded") for line in shown["explanation_text"]
        )
        assert shown["write_ahead_seq"] == shown["chain_seq"]

        report = audit_get(restarted, token, "/audit/reports")
        assert report["outcomes"] == {"unknown": 1} and report["without_outcome"] == 1
        status = audit_get(restarted, token, "/audit/chain/status", max_age=0)
        assert status["ok"] and status["without_outcome"] == 1, status
        assert "1 without an outcome recorded" in status["breakdown"]

    verified = audit_cli(data_dir, "verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert verified.stdout.startswith("chain intact: ")
    assert "1 write-ahead (1 without an outcome recorded)" in verified.stdout
    searched = audit_cli(data_dir, "search", "--outcome", "unknown")
    assert searched.returncode == 0, searched.stderr
    assert record["decision_id"] in searched.stdout and "unknown" in searched.stdout


def _post_ignoring_errors(client: httpx.Client) -> None:
    with contextlib.suppress(httpx.HTTPError):  # the gateway is killed: no answer
        client.post("/v1/chat/completions", json=BODY, headers=HEADERS)


def test_a_forwarded_request_has_its_decision_then_its_outcome_joined(
    catalog: Path, fleet: SimulatorFleet, temp_dir: Path
) -> None:
    with GatewayProcess(catalog, temp_dir / "gw") as gateway:
        response = HTTP.post(f"{gateway.base_url}/v1/chat/completions", json=BODY, headers=HEADERS)
        assert response.status_code == 200, response.text
        decision_id = response.headers["x-residency-decision"]
        gateway.record(decision_id)
        url = gateway.database_url
        (intent,) = rows(
            url,
            "SELECT chain_seq, status_code, chosen_region, attempts FROM routing_intents "
            "WHERE decision_id = :id",
            id=decision_id,
        )
        (outcome,) = rows(
            url,
            "SELECT chain_seq, status_code, served_region FROM routing_decisions "
            "WHERE decision_id = :id",
            id=decision_id,
        )
        assert intent.chain_seq < outcome.chain_seq  # the decision was chained first
        assert (intent.status_code, intent.attempts) == (0, "[]")
        assert outcome.status_code == 200
        assert outcome.served_region == response.headers["x-residency-region"]

        shown = audit_get(gateway, auditor(gateway), f"/audit/decisions/{decision_id}")
        assert shown["write_ahead_seq"] == intent.chain_seq
        assert shown["outcome"] == "routed" and "outcome_recorded" not in shown
        served = shown["attempts"][-1]
        assert served["bytes"] == len(response.content) and served["ttfb_ms"] > 0
        assert any(line.startswith("Write-ahead: ") for line in shown["explanation_text"])

        # A refusal is never forwarded: one record, no write-ahead entry.
        refused = HTTP.post(
            f"{gateway.base_url}/v1/chat/completions",
            json=BODY,
            headers={**HEADERS, "X-Data-Subject-Country": "CN"},
        )
        assert refused.status_code == 451
        refused_id = refused.headers["x-residency-decision"]
        gateway.record(refused_id)
        assert (
            rows(url, "SELECT 1 FROM routing_intents WHERE decision_id = :id", id=refused_id) == []
        )

    export = temp_dir / "all.jsonl"
    exported = audit_cli(temp_dir / "gw", "export", "--format", "jsonl", "-o", str(export))
    assert exported.returncode == 0, exported.stderr
    assert '"kind":"intent"' in export.read_text()
    key = temp_dir / "key.pem"
    key.write_text(audit_cli(temp_dir / "gw", "public-key").stdout)
    checked = audit_cli(temp_dir / "gw", "verify-export", str(export), "--public-key", str(key))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    # intent and outcome, the auditor token's creation, the refusal
    assert checked.stdout.startswith("export intact: 4 records")
    verified = audit_cli(temp_dir / "gw", "verify")
    assert verified.returncode == 0 and "1 write-ahead, " in verified.stdout, verified.stdout


def test_concurrent_decisions_share_fsyncs(
    catalog: Path, fleet: SimulatorFleet, temp_dir: Path
) -> None:
    requests, clients = 240, 16
    with GatewayProcess(catalog, temp_dir / "gw") as gateway:
        fsyncs_before = sample(scrape(gateway), "gateway_routing_log_fsyncs_total")

        def send(_: int) -> str:
            response = HTTP.post(
                f"{gateway.base_url}/v1/chat/completions", json=BODY, headers=HEADERS
            )
            assert response.status_code == 200, response.text
            return response.headers["x-residency-decision"]

        with ThreadPoolExecutor(clients) as pool:
            ids = list(pool.map(send, range(requests)))
        fsyncs = sample(scrape(gateway), "gateway_routing_log_fsyncs_total") - fsyncs_before
        gateway.record(ids[-1])
        wait_for(
            lambda: rows(gateway.database_url, "SELECT count(*) FROM routing_intents")[0][0],
            lambda n: n >= requests,
            30,
            "write-ahead entries",
        )
    # Every request made two records durable (its decision, then its outcome), each before
    # going on; with one fsync per record that would be 2 x requests fsyncs. How many share one
    # depends on how fast the disk is against the clients (a quiet machine with a 0.08 ms
    # fdatasync once needed 241 for 480 records), so the bound is one fsync per record.
    assert 0 < fsyncs < 2 * requests, f"{fsyncs:.0f} fsyncs for {2 * requests} records"


@pytest.mark.postgres
def test_decisions_without_outcome_on_postgresql() -> None:
    with pg_database_or_skip("rg_write_ahead") as url:
        upgrade(url)
        engine = create_store_engine(url)
        try:
            store = RoutingLogStore(engine)
            store.append_encoded([intent_entry(1), intent_entry(2), outcome_entry(1)])
            reader = AuditReader(engine)
            unknown = reader.search(parse_filter(outcome="unknown"), limit=10).records
            assert [r["decision_id"] for r in unknown] == ["dec-000002"]
            report = verify(engine, {})
            assert report.ok and report.summary() == "chain intact: 3 records", report.problems
            assert (report.intents, report.without_outcome) == (2, 1)
            store.append_encoded([outcome_entry(2)], skip_existing=True)
            assert reader.search(parse_filter(outcome="unknown"), limit=10).records == []
            assert verify(engine, {}).without_outcome == 0
        finally:
            engine.dispose()
