"""Audit read API and `gateway audit search|show|report` against a real gateway and its log."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from compliance.store.access_store import AccessStore, Role
from gateway.cli import main
from regions.simulator.fleet import SimulatorFleet
from tests.integration.conftest import (
    ACME_KEY,
    CHAT,
    DEMO_KEY,
    HTTP,
    IP_CN,
    IP_DE,
    IP_GB,
    IP_IN,
    IP_US,
    PROJECT_ROOT,
    GatewayProcess,
    openai_client,
    trace_id_of,
)

pytestmark = pytest.mark.integration

# (client ip, extra headers, api key, expected HTTP status)
TRAFFIC: list[tuple[str, dict[str, str], str, int]] = [
    (IP_DE, {}, DEMO_KEY, 200),
    (IP_DE, {}, DEMO_KEY, 200),
    (IP_DE, {"X-Data-Subject-Country": "CN"}, DEMO_KEY, 451),
    (IP_GB, {"X-Data-Subject-Country": "FR"}, ACME_KEY, 200),
    (IP_IN, {"X-Data-Class": "payment"}, DEMO_KEY, 200),
    (IP_US, {}, DEMO_KEY, 200),
    (IP_CN, {}, DEMO_KEY, 451),
]
ENDPOINTS = ["/audit/decisions", "/audit/decisions/{id}", "/audit/reports"]


class Logged:
    """A gateway with operator tokens and the decisions our traffic produced."""

    def __init__(self, gateway: GatewayProcess, tokens: dict[str, str]) -> None:
        self.gateway = gateway
        self.tokens = tokens
        self.decisions: list[tuple[str, str, int]] = []  # (decision id, trace id, status)
        self.started = datetime.now(UTC) - timedelta(seconds=1)

    def get(self, path: str, role: str | None = "auditor", **params: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.tokens[role]}"} if role else {}
        return HTTP.get(f"{self.gateway.base_url}{path}", params=params, headers=headers)

    def ok(self, path: str, **params: Any) -> Any:
        response = self.get(path, **params)
        assert response.status_code == 200, response.text
        return response.json()


def _send(gateway: GatewayProcess, ip: str, headers: dict[str, str], key: str) -> tuple[int, Any]:
    with openai_client(gateway, ip, api_key=key, headers=headers) as client:
        try:
            raw = client.chat.completions.with_raw_response.create(
                model="gpt-4o-mini", messages=CHAT
            )
        except openai.APIStatusError as exc:
            return exc.status_code, exc.response.headers
        return raw.status_code, raw.headers


@pytest.fixture(scope="module")
def logged(
    catalog: Path, fleet: SimulatorFleet, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Logged]:
    with GatewayProcess(catalog, tmp_path_factory.mktemp("audit-api")) as gateway:
        store = AccessStore(gateway.database_url)
        try:
            tokens: dict[str, str] = {r.value: store.create(f"av-{r.value}", r) for r in Role}
        finally:
            store.close()
        tokens["tenant"] = DEMO_KEY
        tokens["bogus"] = "rgo_not-a-real-token"
        state = Logged(gateway, tokens)
        for ip, headers, key, expected in TRAFFIC:
            status, response_headers = _send(gateway, ip, headers, key)
            assert status == expected, (ip, headers, status)
            trace = trace_id_of(response_headers["traceparent"])
            state.decisions.append((response_headers["x-residency-decision"], trace, status))
        for decision_id, _, _ in state.decisions:
            gateway.record(decision_id)  # wait until the batched writer stored it
        yield state


@pytest.mark.parametrize("path", ENDPOINTS)
@pytest.mark.parametrize(
    ("role", "status", "code"),
    [
        (None, 401, "missing_token"),
        ("bogus", 401, "invalid_token"),
        ("tenant", 403, "tenant_key_refused"),
        ("operator", 403, "forbidden"),
        ("auditor", 200, None),
        ("admin", 200, None),
    ],
)
def test_role_checks(logged: Logged, path: str, role: str | None, status: int, code: str) -> None:
    response = logged.get(path.format(id=logged.decisions[0][0]), role=role)
    assert response.status_code == status, response.text
    if code is not None:
        assert response.json()["error"]["code"] == code
        assert f"access refused: GET {path.format(id=logged.decisions[0][0])}" in (
            logged.gateway.output()
        )


def test_search_finds_our_decisions_newest_first(logged: Logged) -> None:
    body = logged.ok("/audit/decisions", since=logged.started.isoformat())
    ids = [d["decision_id"] for d in body["decisions"]]
    assert ids == [d for d, _, _ in reversed(logged.decisions)]
    assert body["next_cursor"] is None and body["limit"] == 50


def test_search_filters(logged: Logged) -> None:
    since = logged.started.isoformat()
    ids = {d for d, _, _ in logged.decisions}

    def found(**params: str) -> list[str]:
        decisions = logged.ok("/audit/decisions", since=since, **params)["decisions"]
        assert {d["decision_id"] for d in decisions} <= ids
        return [d["decision_id"] for d in decisions]

    first, second, cn_subject, fr_subject, payment, _us, cn_client = (
        d for d, _, _ in logged.decisions
    )
    assert found(outcome="refused") == [cn_client, cn_subject]
    assert found(jurisdiction="CN") == [cn_client, cn_subject]
    assert found(client_country="DE") == [cn_subject, second, first]
    assert found(jurisdiction="FR", tenant="acme-eu") == [fr_subject]
    assert found(data_class="payment") == [payment]
    assert found(region="in-mumbai") == [payment]
    assert found(region="eu-frankfurt") == [second, first]
    early = logged.ok("/audit/decisions", until=logged.started.isoformat())["decisions"]
    assert early == []


def test_search_pages_with_a_cursor(logged: Logged) -> None:
    seen: list[str] = []
    params: dict[str, Any] = {"since": logged.started.isoformat(), "limit": 3}
    while True:
        body = logged.ok("/audit/decisions", **params)
        assert len(body["decisions"]) <= 3
        seen.extend(d["decision_id"] for d in body["decisions"])
        if body["next_cursor"] is None:
            break
        params["cursor"] = body["next_cursor"]
    assert seen == [d for d, _, _ in reversed(logged.decisions)]


@pytest.mark.parametrize(
    ("params", "param", "fragment"),
    [
        ({"since": "last week"}, "since", "since: 'last week' is not an ISO 8601 time"),
        ({"outcome": "denied"}, "outcome", "outcome: unknown outcome 'denied'"),
        ({"limit": "5000"}, "limit", "limit: must be between 1 and 1000"),
        ({"cursor": "xyz"}, "cursor", "cursor: not a cursor returned by this server"),
        ({"jurisdicton": "DE"}, "jurisdicton", "unknown query parameter 'jurisdicton'"),
    ],
)
def test_bad_search_input_is_a_clear_400(
    logged: Logged, params: dict[str, str], param: str, fragment: str
) -> None:
    response = logged.get("/audit/decisions", **params)
    assert response.status_code == 400
    error = response.json()["error"]
    assert fragment in error["message"] and error["param"] == param


def test_one_decision_explained(logged: Logged) -> None:
    decision_id, trace_id, _ = logged.decisions[0]
    body = logged.ok(f"/audit/decisions/{decision_id}")
    assert body["decision_id"] == decision_id and body["trace_id"] == trace_id
    assert body["summary"].startswith("Routed to eu-frankfurt (HTTP 200); personal data; ")
    assert "EU data subject (DE, located by client IP) under EU GDPR" in body["summary"]
    assert (
        "us-virginia excluded: US allowed only with attestation EU-US Data Privacy"
        in (body["summary"])
    )
    assert f"Trace id: {trace_id}." in body["explanation_text"]
    assert body["explanation"]["decision_id"] == decision_id
    refused = logged.ok(f"/audit/decisions/{logged.decisions[2][0]}")
    assert refused["summary"].startswith("Refused (HTTP 451); personal data; data subject in CN")


def test_unknown_decision_is_404(logged: Logged) -> None:
    response = logged.get("/audit/decisions/does-not-exist")
    assert response.status_code == 404
    assert (
        "no routing record with decision id 'does-not-exist'" in response.json()["error"]["message"]
    )


def test_report(logged: Logged) -> None:
    report = logged.ok("/audit/reports", since=logged.started.isoformat())
    assert report["total"] == len(TRAFFIC)
    assert report["outcomes"] == {"refused": 2, "routed": 5}
    counts = report["matrix"]["counts"]
    assert counts["DE"] == {"eu-frankfurt": 2}
    assert counts["FR"] == {"uk-london": 1} and counts["IN"] == {"in-mumbai": 1}
    assert report["matrix"]["not_processed"]["CN"] == 2
    assert sum(r["count"] for r in report["refusals"]) == 2
    re = report["reevaluation"]
    assert (re["checked"], re["violations"], re["unverifiable"]) == (5, 0, 0)
    empty = logged.ok("/audit/reports", until=logged.started.isoformat())
    assert empty["total"] == 0


def test_console_is_served(logged: Logged) -> None:
    response = HTTP.get(f"{logged.gateway.base_url}/console", follow_redirects=True)
    assert response.status_code == 200 and "audit console" in response.text
    assert "default-src 'self'" in response.headers["content-security-policy"]
    script = HTTP.get(f"{logged.gateway.base_url}/console/console.js")
    assert script.status_code == 200 and "sessionStorage" in script.text


# -- the CLI, reading the database directly ----------------------------------------------------


def _cli_process(logged: Logged, *args: str) -> subprocess.CompletedProcess[str]:
    """The real `gateway` command in a subprocess (one per test: starting Python is slow)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env["PYTHONPATH"] = str(PROJECT_ROOT)
    env["GATEWAY_DATABASE_URL"] = logged.gateway.database_url
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", "audit", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


@pytest.fixture
def cli(
    logged: Logged, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Callable[..., tuple[int, str, str]]:
    """`gateway audit ...` run in this process (same entry point, no interpreter start-up)."""
    for name in [k for k in os.environ if k.startswith("GATEWAY_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("GATEWAY_DATABASE_URL", logged.gateway.database_url)

    def run(*args: str, url: str | None = None) -> tuple[int, str, str]:
        if url is not None:
            monkeypatch.setenv("GATEWAY_DATABASE_URL", url)
        code = main(["audit", *args])
        out, err = capsys.readouterr()
        return code, out, err

    return run


def test_cli_search(logged: Logged) -> None:
    result = _cli_process(
        logged, "search", "--since", logged.started.isoformat(), "--jurisdiction", "cn"
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == [
        "DECIDED_AT",
        "(UTC)",
        "DECISION",
        "TENANT",
        "SUBJECT",
        "CLIENT",
        "CLASS",
        "OUTCOME",
        "REGION",
        "HTTP",
    ]
    assert [line.split()[1] for line in lines[1:-1]] == [
        logged.decisions[6][0],
        logged.decisions[2][0],
    ]
    assert lines[1].split()[6:8] == ["refused", "-"]
    assert lines[-1] == "2 decision(s)"


def test_cli_pages_and_shows(logged: Logged, cli: Callable[..., tuple[int, str, str]]) -> None:
    since = logged.started.isoformat()
    code, out, _ = cli("search", "--since", since, "--limit", "2", "--json")
    body = json.loads(out)
    assert code == 0 and len(body["decisions"]) == 2 and body["next_cursor"]
    code, out, _ = cli("search", "--since", since, "--cursor", body["next_cursor"], "--json")
    rest = [d["decision_id"] for d in json.loads(out)["decisions"]]
    assert [d["decision_id"] for d in body["decisions"]] + rest == [
        d for d, _, _ in reversed(logged.decisions)
    ]
    code, text, _ = cli("search", "--since", since, "--limit", "3")
    cursor = json.loads(cli("search", "--since", since, "--limit", "3", "--json")[1])["next_cursor"]
    assert text.splitlines()[-1] == f"3 decision(s); next page: --cursor {cursor}"

    decision_id, trace_id, _ = logged.decisions[0]
    code, out, err = cli("show", decision_id)
    assert code == 0, err
    assert out.startswith("Routed to eu-frankfurt (HTTP 200); personal data; EU data subject")
    assert f"Trace id: {trace_id}." in out
    code, out, _ = cli("show", decision_id, "--json")
    assert json.loads(out)["trace_id"] == trace_id


def test_cli_report(logged: Logged, cli: Callable[..., tuple[int, str, str]]) -> None:
    code, out, err = cli("report", "--since", logged.started.isoformat())
    assert code == 0, err
    assert f"{len(TRAFFIC)} decisions" in out
    assert "Outcomes: refused 2, routed 5" in out
    assert "0 violations, 0 unverifiable" in out
    code, out, _ = cli("report", "--since", logged.started.isoformat(), "--json")
    assert json.loads(out)["matrix"]["counts"]["DE"] == {"eu-frankfurt": 2}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("search", "--since", "soon"), "--since: 'soon' is not an ISO 8601 time"),
        (("search", "--limit", "0"), "--limit: must be between 1 and 1000"),
        (("search", "--cursor", "nope"), "--cursor: not a cursor returned by this server"),
        (("show", "missing-id"), "no routing record with decision id 'missing-id'"),
        (("report", "--outcome", "x"), "--outcome: unknown outcome 'x'"),
    ],
)
def test_cli_errors_are_one_clear_line(
    cli: Callable[..., tuple[int, str, str]], args: tuple[str, ...], message: str
) -> None:
    code, _, err = cli(*args)
    assert code == 2
    assert err.startswith(f"gateway: error: {message}")
    assert len(err.strip().splitlines()) == 1


def test_cli_without_a_database(cli: Callable[..., tuple[int, str, str]], tmp_path: Path) -> None:
    absent = tmp_path / "absent.db"
    code, _, err = cli("search", url=f"sqlite:///{absent}")
    assert code == 2 and f"no gateway database at {absent}" in err
    assert not absent.exists()
