"""Explaining decisions without forwarding anything: the HTTP endpoint and `gateway explain`."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from typing import Any

import orjson
import pytest

from regions.simulator.fleet import SimulatorFleet
from tests.integration.conftest import (
    CHAT,
    DEMO_KEY,
    HTTP,
    IP_DE,
    IP_IN,
    PROJECT_ROOT,
    GatewayProcess,
    openai_client,
    sim_requests,
)

pytestmark = pytest.mark.integration

AUTH = {"Authorization": f"Bearer {DEMO_KEY}"}


def _all_requests(fleet: SimulatorFleet) -> dict[str, int]:
    return {spec.region_id: sim_requests(fleet, spec.region_id) for spec in fleet.specs}


def _explain(
    gateway: GatewayProcess, body: dict[str, Any] | None, headers: dict[str, str] | None = None
) -> dict[str, Any]:
    response = HTTP.post(
        f"{gateway.base_url}/v1/residency/explain",
        json=body,
        headers={**AUTH, **(headers or {})},
    )
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def _candidate(decision: dict[str, Any], region: str) -> dict[str, Any]:
    matches = [c for c in decision["candidates"] if c["region"] == region]
    assert len(matches) == 1, decision["candidates"]
    return dict(matches[0])


def test_explain_german_client_forwards_nothing(
    gateway: GatewayProcess, fleet: SimulatorFleet
) -> None:
    before = _all_requests(fleet)
    decision = _explain(gateway, {"ip": IP_DE, "model": "gpt-4o-mini"})
    assert decision["outcome"] == "routed"
    assert decision["status"] == 200
    assert decision["chosen_region"] == "eu-frankfurt"
    assert decision["fallbacks"] == ["uk-london", "us-oregon"]
    assert decision["facts"]["client_country"] == "DE"
    assert decision["facts"]["model"] == "gpt-4o-mini"
    assert decision["facts"]["tenant"] == "demo"
    assert decision["jurisdictions"] == [{"country": "DE", "source": "client_ip"}]
    assert [r["id"] for r in decision["regimes"]] == ["gdpr"]
    assert decision["regimes"][0]["rules"] == ["gdpr.chapter_v"]
    virginia = _candidate(decision, "us-virginia")
    assert virginia["allowed"] is False
    assert any("eu_us_dpf" in reason for reason in virginia["policy"])
    mumbai = _candidate(decision, "in-mumbai")
    assert mumbai["allowed"] is False
    assert _candidate(decision, "us-oregon")["allowed"] is True
    assert _all_requests(fleet) == before


def test_explain_with_data_class_header(gateway: GatewayProcess, fleet: SimulatorFleet) -> None:
    before = _all_requests(fleet)
    decision = _explain(
        gateway,
        {"ip": IP_DE, "model": "gpt-4o-mini"},
        {"X-Data-Class": "payment", "X-Data-Subject-Country": "IN"},
    )
    assert decision["outcome"] == "refused"
    assert decision["status"] == 451
    assert decision["chosen_region"] is None
    assert decision["facts"]["data_class"] == "payment"
    assert decision["facts"]["subject_country"] == "IN"
    regimes = {r["id"]: r for r in decision["regimes"]}
    assert {"gdpr", "in_dpdp", "in_rbi"} <= set(regimes)
    assert regimes["in_rbi"]["rules"] == ["in_rbi.payment_storage"]
    assert not any(c["allowed"] for c in decision["candidates"])
    assert _all_requests(fleet) == before

    public = _explain(gateway, {"ip": IP_DE}, {"X-Data-Class": "public"})
    assert public["facts"]["data_class"] == "public"
    assert all(c["allowed"] for c in public["candidates"])


def test_explain_defaults_to_the_callers_address(gateway: GatewayProcess) -> None:
    decision = _explain(gateway, None, {"X-Forwarded-For": IP_IN})
    assert decision["facts"]["client_country"] == "IN"
    assert decision["chosen_region"] == "in-mumbai"


def test_explain_is_not_logged_as_a_routing_decision(gateway: GatewayProcess) -> None:
    explained = _explain(gateway, {"ip": IP_DE})["decision_id"]
    with openai_client(gateway, IP_DE) as client:
        raw = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=CHAT)
    # Records are written in order: once the later one is stored, the earlier would be too.
    gateway.record(raw.headers["x-residency-decision"])
    assert gateway.routing_log.get(explained) is None


# -- the CLI ------------------------------------------------------------------------------


BASE_ARGS = ("--ip", IP_DE, "--data-class", "personal", "--tenant", "demo")
BAD_ARGS = {
    "data-class": (("--ip", IP_DE, "--data-class", "nope"), "'nope'"),
    "ip": (("--ip", "not-an-ip"), "'not-an-ip'"),
    "tenant": (("--ip", IP_DE, "--tenant", "ghost"), "'ghost'"),
    # 'ß'.upper() is 'SS' (South Sudan): the raw value must be two ASCII letters.
    "subject-eszett": (("--ip", IP_DE, "--subject-country", "\u00df"), "'\u00df'"),
    "data-class-nel": (("--ip", IP_DE, "--data-class", "public\u0085"), "--data-class"),
    "model-too-long": (("--ip", IP_DE, "--model", "m" * 257), "--model is 257 characters"),
}


@dataclass(frozen=True)
class CliResult:
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture(scope="module")
def cli_runs(
    gateway: GatewayProcess, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, CliResult]:
    """Every `gateway explain` invocation of this module, run in parallel (start-up is slow)."""
    invocations = {
        "text": BASE_ARGS,
        "json": (*BASE_ARGS, "--json"),
        **{name: args for name, (args, _) in BAD_ARGS.items()},
    }
    env = {
        **os.environ,
        "GATEWAY_DATABASE_URL": gateway.database_url,
        "PYTHONPATH": str(PROJECT_ROOT),
    }
    cwd = tmp_path_factory.mktemp("cli")
    processes = {
        name: subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "explain", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=cwd,
        )
        for name, args in invocations.items()
    }
    results = {}
    for name, process in processes.items():
        stdout, stderr = process.communicate(timeout=60)
        results[name] = CliResult(process.returncode, stdout, stderr)
    return results


def test_cli_explain_prints_plain_words(cli_runs: dict[str, CliResult]) -> None:
    result = cli_runs["text"]
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "ROUTED (HTTP 200)" in out
    assert "client country: DE" in out
    assert "tenant: demo" in out
    assert "jurisdiction DE (from client_ip)" in out
    assert "regime EU GDPR applies (via DE): gdpr.chapter_v" in out
    assert "eu-frankfurt: chosen" in out
    virginia = next(line for line in out.splitlines() if "us-virginia" in line)
    assert "excluded" in virginia
    assert "eu_us_dpf" in virginia
    assert "fallbacks in order: uk-london, us-oregon" in out
    assert "eu-frankfurt is the nearest allowed active (health unknown offline) region" in out
    assert "offline, region health is unknown" in out


def test_cli_explain_json(cli_runs: dict[str, CliResult]) -> None:
    result = cli_runs["json"]
    assert result.returncode == 0, result.stderr
    decision = orjson.loads(result.stdout)
    assert decision["outcome"] == "routed"
    assert decision["chosen_region"] == "eu-frankfurt"
    assert decision["facts"]["tenant"] == "demo"
    assert decision["facts"]["data_class"] == "personal"
    assert not _candidate(decision, "us-virginia")["allowed"]


@pytest.mark.parametrize("case", sorted(BAD_ARGS))
def test_cli_explain_bad_argument_is_one_line_exit_2(
    cli_runs: dict[str, CliResult], case: str
) -> None:
    result = cli_runs[case]
    named = BAD_ARGS[case][1]
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("gateway: error: ")
    assert named in lines[0]
    assert "Traceback" not in result.stderr
