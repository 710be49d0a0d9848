"""Hostile routing records against a real gateway process: a record over the spool reader's old
4 MiB chunk (a huge model name, or one an older version left in the spool) must not freeze the
routing log, and a drain that cannot make progress must show in /readyz, /metrics and the log."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from compliance.audit.record_codec import encode_record
from compliance.audit.spool import Spool
from tests.audit_chain_support import decision
from tests.integration.conftest import CHAT, DEMO_KEY, HTTP, IP_DE, GatewayProcess, readiness
from tests.integration.replicas_support import wait_for
from tests.integration.test_audit_durability import audit_cli, stored_ids

pytestmark = pytest.mark.integration

HUGE_MODEL = 1536 * 1024
"""Characters: the record repeats the model name four times (~6 MiB), over the 4 MiB chunk,
while the request stays under the default 4 MiB body limit."""
HEADERS = {"Authorization": f"Bearer {DEMO_KEY}", "X-Forwarded-For": IP_DE}


def chat(gateway: GatewayProcess, model: str = "gpt-4o-mini") -> tuple[int, str | None]:
    """One chat completion: (status, decision id or None)."""
    response = HTTP.post(
        f"{gateway.base_url}/v1/chat/completions",
        json={"model": model, "messages": CHAT},
        headers=HEADERS,
        timeout=30.0,
    )
    return response.status_code, response.headers.get("x-residency-decision")


def huge_record(n: int) -> dict[str, Any]:
    """A routing record for an unknown, huge model name, as the gateway makes it."""
    model = "m" * HUGE_MODEL
    record = decision(n, model=model, reasons=[f"no region serves model {model!r}"])
    record["explanation"] = {"facts": {"model": model}, "reasons": record["reasons"]}
    return record


def spool_left_behind(data_dir: Path, *payloads: bytes) -> None:
    """Records in the gateway's spool, as a process that died before storing them left them."""
    spool = Spool(data_dir / "audit-spool")
    spool.open()
    for payload in payloads:
        spool.append(payload)
    spool.flush()
    spool.close()


def assert_drained_and_honest(gateway: GatewayProcess) -> None:
    report, _ = wait_for(
        lambda: readiness(gateway), lambda r: r["routing_log_pending"] == 0, 30, "drain"
    )
    assert report["status"] == "ok"
    assert report["routing_log_drain"] == {"state": "ok"}


def test_a_huge_model_name_does_not_freeze_the_routing_log(catalog: Path, temp_dir: Path) -> None:
    data_dir = temp_dir / "gw"
    with GatewayProcess(catalog, data_dir) as gateway:
        status, huge_id = chat(gateway, "m" * HUGE_MODEL)
        assert status in (400, 404)  # unknown model (or refused at intake: bounded there)
        later = [chat(gateway)[1] for _ in range(20)]
        for decision_id in later:
            assert decision_id is not None
            gateway.record(decision_id, timeout=30)  # every later record reaches the database
        if huge_id is not None:  # it reached the spool: it is stored too, bounded
            record = gateway.record(huge_id, timeout=30)
            assert len(record["model"]) == 255 and f"{HUGE_MODEL} chars" in record["model"]
            assert record["explanation"]["truncated"]["count"] >= 2
        assert_drained_and_honest(gateway)
    result = audit_cli(data_dir, "verify")
    assert result.returncode == 0 and result.stdout.startswith("chain intact: "), result.stdout


def test_a_huge_record_left_in_the_spool_is_stored_after_a_restart(
    catalog: Path, temp_dir: Path
) -> None:
    data_dir = temp_dir / "gw"
    big = encode_record(huge_record(1))  # unbounded, as a version before the bound spooled it
    assert len(big) > 4 * 1024 * 1024
    spool_left_behind(data_dir, encode_record(decision(0)), big, encode_record(decision(2)))
    with GatewayProcess(catalog, data_dir) as gateway:
        later = [chat(gateway)[1] for _ in range(10)]
        for decision_id in [*later, "dec-000000", "dec-000002"]:
            assert decision_id is not None
            gateway.record(decision_id, timeout=30)
        stored = gateway.record("dec-000001", timeout=30)
        assert len(stored["model"]) == 255  # bounded on the way to the database
        assert_drained_and_honest(gateway)
    assert len(stored_ids(f"sqlite:///{data_dir / 'gateway.db'}")) == 13


def metric(gateway: GatewayProcess, name: str) -> list[str]:
    text = HTTP.get(f"{gateway.base_url}/metrics").text
    return [line for line in text.splitlines() if line.startswith(name)]


def test_a_stuck_drain_shows_in_readiness_metrics_and_one_log_line(
    catalog: Path, temp_dir: Path
) -> None:
    data_dir = temp_dir / "gw"
    # A record the store refuses (no outcome) whose set-aside file cannot be written (the
    # path is a directory): the drain fails at its position again and again.
    spool_left_behind(data_dir, b'{"decision_id": "refused-1"}')
    rejected = data_dir / "routing-log-rejected.jsonl"
    rejected.mkdir(parents=True)
    with GatewayProcess(catalog, data_dir) as gateway:
        later = [chat(gateway)[1] for _ in range(5)]
        report, _ = wait_for(
            lambda: readiness(gateway),
            lambda r: r["routing_log_drain"]["state"] == "stuck",
            30,
            "stuck drain not reported",
        )
        [stuck] = report["routing_log_drain"]["stuck"]
        assert (stuck["segment"], stuck["offset"]) == (1, 0)
        assert "IsADirectoryError" in stuck["error"]
        assert report["status"] == "degraded: routing log stuck at segment 1 offset 0"
        assert report["ready"] is True  # still serving: every record is kept in the spool
        [gauge] = metric(gateway, "gateway_routing_log_drain_stuck{")
        assert 'segment="1"' in gauge and 'offset="0"' in gauge and gauge.endswith(" 1.0")
        [failures] = metric(gateway, "gateway_routing_log_drain_failures_total")
        assert float(failures.split()[-1]) >= 3
        wait_for(
            lambda: readiness(gateway)["routing_log_drain"]["stuck"][0]["failures"],
            lambda n: n >= 6,
            60,
            "more retries",
        )
        output = gateway.output()
        assert output.count("routing log drain stuck") == 1  # not a line per retry
        assert "segment 1 offset 0" in output

        rejected.rmdir()  # the operator fixes the disk: the drain moves on, nothing lost
        for decision_id in later:
            assert decision_id is not None
            gateway.record(decision_id, timeout=30)
        assert_drained_and_honest(gateway)
        [gauge] = metric(gateway, "gateway_routing_log_drain_stuck{")
        assert gauge.endswith(" 0.0") and 'segment="' not in gauge
    assert b'"refused-1"' in rejected.read_bytes()
