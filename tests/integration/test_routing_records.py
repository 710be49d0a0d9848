"""The routing log: one record per decision, pseudonymised, never prompt content; live reloads."""

from __future__ import annotations

import hashlib
import hmac
import re
import stat
import time
import uuid
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from compliance.store.policy_store import PolicyStore
from gateway.bootstrap import HMAC_KEY_FILE
from regions.simulator.fleet import SimulatorFleet
from tests.integration.conftest import (
    IP_CN,
    IP_DE,
    IP_IN,
    IP_US,
    GatewayProcess,
    openai_client,
    readiness,
    set_faults,
    trace_id_of,
)

pytestmark = pytest.mark.integration

HEX64 = re.compile(r"[0-9a-f]{64}")


def _messages(marker: str) -> list[dict[str, str]]:
    return [
        {"role": "system", "content": f"You are {marker}-system."},
        {"role": "user", "content": f"My secret is {marker}. Where are you?"},
    ]


def _send(
    gateway: GatewayProcess, ip: str, marker: str, headers: dict[str, str] | None = None
) -> tuple[int, Any]:
    """One chat request; returns (status, response headers), whatever the outcome."""
    with openai_client(gateway, ip, headers=headers) as client:
        try:
            raw = client.chat.completions.with_raw_response.create(
                model="gpt-4o-mini", messages=_messages(marker)
            )
        except openai.APIStatusError as exc:
            return exc.status_code, exc.response.headers
        return raw.status_code, raw.headers


@pytest.fixture
def policy_store(gateway: GatewayProcess) -> Iterator[PolicyStore]:
    store = PolicyStore(gateway.database_url)
    try:
        yield store
    finally:
        store.close()


def _wait_unavailable(
    gateway: GatewayProcess, ip: str, marker: str, headers: dict[str, str]
) -> Any:
    deadline = time.monotonic() + 5.0
    while True:
        status, response_headers = _send(gateway, ip, marker, headers)
        if status == 503 and "x-residency-region" not in response_headers:
            return response_headers
        assert time.monotonic() < deadline, "the prober never marked in-mumbai down"
        time.sleep(0.1)


def test_every_decision_has_exactly_one_faithful_record(
    gateway: GatewayProcess, fleet: SimulatorFleet
) -> None:
    marker = f"PROMPT-MARKER-{uuid.uuid4().hex}"
    version = readiness(gateway)["policy_version"]
    # (ip, headers, expected outcome, status, served region)
    cases: list[tuple[str, dict[str, str], str, int, str | None]] = [
        (IP_DE, {}, "routed", 200, "eu-frankfurt"),
        (IP_DE, {}, "routed", 200, "eu-frankfurt"),
        (IP_IN, {}, "routed", 200, "in-mumbai"),
        (IP_US, {"X-Data-Class": "public"}, "routed", 200, None),
        (IP_CN, {}, "refused", 451, None),
        (IP_DE, {"X-Data-Subject-Country": "IN", "X-Data-Class": "payment"}, "refused", 451, None),
    ]
    seen: list[tuple[Any, str, str, int, str | None]] = []
    for ip, headers, outcome, status, region in cases:
        got, response_headers = _send(gateway, ip, marker, headers)
        assert got == status
        if region is not None:
            assert response_headers["x-residency-region"] == region
        seen.append((response_headers, ip, outcome, status, region))
    # Indian payment data may only go to in-mumbai: take it down -> 503.
    set_faults(fleet, "in-mumbai", down=True)
    payment = {"X-Data-Subject-Country": "IN", "X-Data-Class": "payment"}
    seen.append(
        (_wait_unavailable(gateway, IP_IN, marker, payment), IP_IN, "unavailable", 503, None)
    )

    decision_ids = [h["x-residency-decision"] for h, *_ in seen]
    assert len(set(decision_ids)) == len(decision_ids)
    for response_headers, ip, outcome, status, region in seen:
        decision_id = response_headers["x-residency-decision"]
        row = gateway.record(decision_id)
        assert row["decision_id"] == decision_id
        assert row["outcome"] == outcome, row
        assert row["status_code"] == status
        assert row["tenant_id"] == "demo"
        if region is not None:
            assert row["served_region"] == region
        elif outcome == "routed":
            assert row["served_region"] == response_headers["x-residency-region"]
        else:
            assert row["served_region"] is None
        assert row["policy_version"] == version
        assert row["trace_id"] == trace_id_of(response_headers["traceparent"])
        assert HEX64.fullmatch(row["client_ip_hmac"])
        assert row["client_ip_hmac"] != ip
        assert ip not in repr(row)
        assert marker not in repr(row)
        assert row["model"] == "gpt-4o-mini"
        assert row["explanation"]["decision_id"] == decision_id
        assert row["reasons"]
    rows = gateway.routing_log.recent(1000)
    ids = [r["decision_id"] for r in rows]
    for decision_id in decision_ids:
        assert ids.count(decision_id) == 1
    # Pseudonyms are stable per address and differ between addresses.
    hmacs = {ip: gateway.record(h["x-residency-decision"])["client_ip_hmac"] for h, ip, *_ in seen}
    de_rows = [gateway.record(h["x-residency-decision"]) for h, ip, *_ in seen if ip == IP_DE]
    assert len({r["client_ip_hmac"] for r in de_rows}) == 1
    assert len(set(hmacs.values())) == len(hmacs)
    # ...and are keyed with the operator's secret, kept out of the database, owner-only.
    key_file = gateway.data_dir / HMAC_KEY_FILE
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    key = key_file.read_text("ascii").strip().encode("ascii")
    for ip, pseudonym in hmacs.items():
        assert pseudonym == hmac.new(key, ip.encode(), hashlib.sha256).hexdigest()

    # The prompt reached the region, but not the database (nor the WAL) nor the logs.
    database = gateway.database_path
    files = [p for p in database.parent.iterdir() if p.name.startswith(database.name)]
    assert database in files
    for path in files:
        content = path.read_bytes()
        assert marker.encode() not in content, path
        assert key not in content, path
        for ip, *_ in cases:
            assert ip.encode() not in content, (path, ip)
    assert marker not in gateway.output()


def test_policy_reload_drains_and_restores_a_region(
    gateway: GatewayProcess, policy_store: PolicyStore
) -> None:
    marker = "reload"
    assert _send(gateway, IP_DE, marker)[1]["x-residency-region"] == "eu-frankfurt"
    try:
        changed_at = time.monotonic()
        version = policy_store.set_region_status("eu-frankfurt", "draining")
        while True:
            status, headers = _send(gateway, IP_DE, marker)
            assert status == 200
            if headers["x-residency-region"] != "eu-frankfurt":
                break
            assert time.monotonic() - changed_at < 2.0, "draining not picked up within 2 s"
            time.sleep(0.05)
        assert headers["x-residency-region"] == "uk-london"
        assert gateway.record(headers["x-residency-decision"])["policy_version"] == version
        for _ in range(5):
            assert _send(gateway, IP_DE, marker)[1]["x-residency-region"] == "uk-london"
    finally:
        changed_at = time.monotonic()
        policy_store.set_region_status("eu-frankfurt", "active")
    while True:
        status, headers = _send(gateway, IP_DE, marker)
        assert status == 200
        if headers["x-residency-region"] == "eu-frankfurt":
            break
        assert time.monotonic() - changed_at < 2.0, "reactivation not picked up within 2 s"
        time.sleep(0.05)
    assert readiness(gateway)["policy_version"] == version + 1
