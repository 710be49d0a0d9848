"""Access-log lines -> routing records: reasons re-derived in Python, disagreements loud."""

from __future__ import annotations

import logging
from typing import Any

import orjson
import pytest

from compliance.snapshot import PolicySnapshot
from gateway.envoy.access_records import MalformedLine, entry_record, parse_line
from scripts.bench_envoy_records import ROUTED
from tests.factories import region, routing_snapshot, tenant

POLICY = routing_snapshot(
    [
        region("eu-frankfurt", "DE"),
        region("uk-london", "GB"),
        region("in-mumbai", "IN"),
        region("us-virginia", "US"),
    ],
    [tenant("demo")],
    version=7,
).policy


def _line(**changes: Any) -> bytes:
    entry = {
        **ROUTED,  # the benchmark's routed line, under this test's policy
        "decision_id": "0b8f6a53-4d6a-4a4e-9a55-3f4b2c1d0e9f",
        "policy_version": 7,
        "allowed": "eu-frankfurt,uk-london",
        "order": "eu-frankfurt,uk-london",
    }
    return orjson.dumps({**entry, **changes})


def _policy_at(version: int) -> PolicySnapshot | None:
    return POLICY if version == POLICY.version else None


def _record(line: bytes) -> dict[str, Any]:
    entry = parse_line(line)
    assert entry is not None
    return entry_record(entry, _policy_at, lambda ip: f"hmac({ip})")


def test_a_routed_line_gets_python_reasons_and_envoy_outcome() -> None:
    record = _record(_line())
    assert record["outcome"] == "routed"
    assert (record["chosen_region"], record["served_region"]) == ("eu-frankfurt", "eu-frankfurt")
    assert record["client_ip_hmac"] == "hmac(80.128.0.1)"
    assert record["policy_version"] == 7
    assert "EU GDPR" in record["reasons"][0]
    assert record["explanation"]["envoy"]["disagreement"] is None
    assert record["explanation"]["fallbacks"] == ["uk-london"]


def test_an_allowed_set_python_does_not_share_is_recorded_loudly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    line = _line(allowed="eu-frankfurt,in-mumbai", order="in-mumbai", served_region="in-mumbai")
    with caplog.at_level(logging.ERROR):
        record = _record(line)
    disagreement = record["explanation"]["envoy"]["disagreement"]
    assert disagreement.startswith("DISAGREEMENT at policy version 7")
    assert "in-mumbai" in disagreement and "leaves the allowed set" in disagreement
    assert record["reasons"][-1] == disagreement
    assert "DISAGREEMENT" in caplog.text


def test_a_policy_version_missing_from_the_history_still_gives_a_record() -> None:
    record = _record(_line(policy_version=99))
    assert record["policy_version"] == 99
    assert "not in the policy history" in record["reasons"][0]
    assert record["jurisdictions"] == [{"country": "DE", "source": "client_ip"}]
    assert record["served_region"] == "eu-frankfurt"


@pytest.mark.parametrize(
    ("changes", "outcome", "status"),
    [
        ({"refusal": "no_allowed_region", "status": 451, "order": None}, "refused", 451),
        ({"refusal": "no_healthy_region", "status": 503, "order": None}, "unavailable", 503),
        ({"status": 0, "flags": "DC"}, "routed", 499),
        ({"status": 503, "served_region": None, "flags": "UF"}, "upstream_error", 503),
        ({"status": 200, "flags": "DC"}, "routed", 499),
        ({"status": 503, "served_region": None, "flags": "UH"}, "unavailable", 503),
        ({"status": 503, "served_region": None, "flags": "NC"}, "unavailable", 503),
    ],
)
def test_envoy_outcomes_map_to_the_python_paths(
    changes: dict[str, Any], outcome: str, status: int
) -> None:
    record = _record(_line(**changes))
    assert (record["outcome"], record["status_code"]) == (outcome, status)
    if status == 499:
        assert record["attempts"][-1]["result"] == "client_disconnected"


def test_a_line_answered_before_any_decision_has_no_record() -> None:
    assert parse_line(_line(tenant=None, policy_version=None, status=401)) is None


@pytest.mark.parametrize(
    "line",
    [
        b"not json",
        b"[1, 2]",
        _line(decision_id="x" * 41),
        _line(jurisdictions="DE:from_a_header"),
        _line(data_class="gossip"),
        _line(status="200"),
    ],
)
def test_malformed_lines_are_refused_with_a_reason(line: bytes) -> None:
    with pytest.raises(MalformedLine):
        parse_line(line)
