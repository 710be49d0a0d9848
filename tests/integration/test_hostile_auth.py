"""Hostile authentication against real gateway processes: weak tenant keys, guessing keys and
tokens, an operator widening where data may go, and token checks during a database outage.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
import yaml

from compliance.store.schema import config_changes
from tests.integration.admin_support import Admin, call_cli, create_tokens, run_cli
from tests.integration.conftest import (
    ACME_KEY,
    DEMO_KEY,
    HTTP,
    IP_DE,
    GatewayProcess,
    GatewayStartError,
    readiness,
)
from tests.integration.replicas_support import (
    PgGatewayProcess,
    cut_off,
    pg_database_or_skip,
    reconnect,
    wait_for,
)

pytestmark = pytest.mark.integration

GUESSES = 50
"""Wrong keys sent from one address: well over the default limit (20), bounded."""
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture(scope="module")
def auth_gateway(
    catalog: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    """A gateway of its own (default throttle settings): these tests block addresses."""
    with GatewayProcess(catalog, tmp_path_factory.mktemp("auth-gw")) as running:
        yield running


@pytest.fixture(scope="module")
def tokens(auth_gateway: GatewayProcess) -> dict[str, str]:
    return create_tokens(auth_gateway)


def _call(
    gateway: GatewayProcess, method: str, path: str, key: str | None, address: str, body: Any = None
) -> httpx.Response:
    headers = {"X-Forwarded-For": address}
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    return HTTP.request(method, gateway.base_url + path, json=body, headers=headers)


def _assert_throttled(response: httpx.Response) -> None:
    assert response.status_code == 429, response.text
    assert 1 <= int(response.headers["retry-after"]) <= 60
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"]["code"] == "too_many_auth_failures"


# -- weak keys -------------------------------------------------------------------------------


def test_a_one_character_key_cannot_be_imported(
    auth_gateway: GatewayProcess, tokens: dict[str, str], tmp_path: Path
) -> None:
    admin = Admin(auth_gateway, tokens["admin"])
    refused = admin("PUT", "/tenants/weak", {"name": "Weak", "api_keys": ["x"]})
    assert refused.status_code == 400, refused.text
    error = refused.json()["error"]
    assert error["param"] == "api_keys[0]"
    assert error["message"].startswith("api_keys[0]: an API key needs at least 32 characters")
    assert admin("GET", "/tenants/weak").status_code == 404

    catalog = tmp_path / "weak.yaml"
    catalog.write_text(yaml.safe_dump({"tenants": [{"id": "t", "name": "T", "api_keys": ["x"]}]}))
    with pytest.raises(GatewayStartError) as failed:
        GatewayProcess(catalog, tmp_path / "gw", startup_timeout=20.0).start()
    assert "tenants[0].api_keys[0]: an API key needs at least 32 characters" in str(failed.value)


def test_keys_create_yields_a_working_key(auth_gateway: GatewayProcess) -> None:
    environment = {"GATEWAY_DATABASE_URL": auth_gateway.database_url}
    created = run_cli(
        None, None, "tenants", "keys", "create", "--tenant", "acme-eu", env=environment
    )
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()
    assert re.fullmatch(r"rg_[A-Za-z0-9_-]{43}", key), created.stdout
    assert key not in created.stderr

    def tenant_of(api_key: str) -> Any:
        answer = _call(auth_gateway, "POST", "/v1/residency/explain", api_key, "198.51.100.9")
        return answer.json()["facts"]["tenant"] if answer.status_code == 200 else answer.text

    wait_for(lambda: tenant_of(key), lambda t: t == "acme-eu", 5.0, "new key not served")
    assert tenant_of(ACME_KEY) == "acme-eu"  # the existing key keeps working
    missing = run_cli(None, None, "tenants", "keys", "create", "--tenant", "nope", env=environment)
    assert (missing.returncode, missing.stderr) == (2, "gateway: error: no tenant 'nope'\n")


# -- guessing --------------------------------------------------------------------------------


def test_guessing_tenant_keys_from_one_address_is_throttled(auth_gateway: GatewayProcess) -> None:
    guesser, bystander = "203.0.113.50", IP_DE
    statuses = [
        _call(auth_gateway, "POST", "/v1/chat/completions", f"guess-{i}", guesser, CHAT)
        for i in range(GUESSES)
    ]
    assert statuses[0].status_code == 401
    assert statuses[0].json()["error"]["code"] == "invalid_api_key"
    assert [r.status_code for r in statuses].count(401) == 20  # the default limit
    _assert_throttled(statuses[-1])

    # The right key does not help a throttled address, on any tenant endpoint.
    _assert_throttled(_call(auth_gateway, "POST", "/v1/chat/completions", DEMO_KEY, guesser, CHAT))
    _assert_throttled(_call(auth_gateway, "GET", "/v1/models", DEMO_KEY, guesser))
    _assert_throttled(_call(auth_gateway, "POST", "/v1/residency/explain", DEMO_KEY, guesser))

    served = _call(auth_gateway, "POST", "/v1/chat/completions", DEMO_KEY, bystander, CHAT)
    assert served.status_code == 200, served.text
    assert _call(auth_gateway, "GET", "/v1/models", DEMO_KEY, bystander).status_code == 200

    # One stale key retried (a key a replica has not loaded yet) is not guessing: no lock-out.
    retrier = "203.0.113.52"
    retried = {
        _call(auth_gateway, "GET", "/v1/models", "rg_stale-key", retrier).status_code
        for _ in range(GUESSES)
    }
    assert retried == {401}
    assert _call(auth_gateway, "GET", "/v1/models", DEMO_KEY, retrier).status_code == 200


def test_guessing_operator_tokens_is_throttled(
    auth_gateway: GatewayProcess, tokens: dict[str, str]
) -> None:
    guesser, bystander = "203.0.113.60", "203.0.113.61"
    last = None
    for i in range(GUESSES):
        last = _call(auth_gateway, "GET", "/admin/regions", f"rgo_guess-{i}", guesser)
    assert last is not None
    _assert_throttled(last)
    _assert_throttled(_call(auth_gateway, "GET", "/admin/regions", tokens["admin"], guesser))
    _assert_throttled(_call(auth_gateway, "GET", "/audit/decisions", tokens["auditor"], guesser))
    assert (
        _call(auth_gateway, "GET", "/admin/regions", tokens["admin"], bystander).status_code == 200
    )
    audit = _call(auth_gateway, "GET", "/audit/decisions", tokens["auditor"], bystander)
    assert audit.status_code == 200, audit.text


# -- legal facts -----------------------------------------------------------------------------


def _last_change(gateway: GatewayProcess, region_id: str) -> dict[str, Any]:
    engine = sa.create_engine(gateway.database_url)
    try:
        with engine.connect() as conn:
            row = conn.execute(
                sa.select(config_changes)
                .where(config_changes.c.object_id == region_id)
                .order_by(config_changes.c.seq.desc())
                .limit(1)
            ).one()
            return dict(row._mapping)
    finally:
        engine.dispose()


def test_operator_cannot_change_where_data_may_go(
    auth_gateway: GatewayProcess,
    tokens: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    operator, admin = Admin(auth_gateway, tokens["operator"]), Admin(auth_gateway, tokens["admin"])
    virginia = admin("GET", "/regions/us-virginia").json()
    document = {k: virginia[k] for k in ("name", "country", "latitude", "longitude", "base_url")}
    document |= {"models": virginia["models"], "attestations": virginia["attestations"]}

    widened = {**document, "attestations": ["eu_us_dpf"]}
    refused = operator("PUT", "/regions/us-virginia", widened)
    assert refused.status_code == 403, refused.text
    assert refused.json()["error"]["message"] == (
        "role operator may not change a region's legal facts (attestations +eu_us_dpf): "
        "country and attestations decide where data may go, so changing them needs the admin role"
    )
    relabelled = operator("PUT", "/regions/us-virginia", {**document, "country": "DE"})
    assert relabelled.status_code == 403 and "(country US→DE)" in relabelled.text
    created = operator("PUT", "/regions/us-ohio", {**document, "name": "Ohio"})
    assert created.status_code == 403 and "may not create a region" in created.text
    assert admin("GET", "/regions/us-ohio").status_code == 404

    # Everything operational stays the operator's.
    assert operator("PATCH", "/regions/us-virginia", {"weight": 50}).status_code == 200
    assert operator("PUT", "/regions/us-virginia", {**document, "weight": 60}).status_code == 200

    cli = call_cli(
        monkeypatch, capsys, auth_gateway, tokens["operator"], "regions", "put", "us-virginia",
        "--name", document["name"], "--country", "DE", "--latitude", str(document["latitude"]),
        "--longitude", str(document["longitude"]), "--base-url", document["base_url"],
        "--models", ",".join(document["models"]),
    )  # fmt: skip
    assert cli.returncode == 2
    assert cli.stderr.startswith("gateway: error: role operator may not change a region's legal")
    assert cli.stderr.rstrip().endswith("(HTTP 403)") and len(cli.stderr.splitlines()) == 1

    try:
        allowed = admin("PUT", "/regions/us-virginia", widened)
        assert allowed.status_code == 200, allowed.text
        change = _last_change(auth_gateway, "us-virginia")
        assert (change["actor"], change["role"]) == ("admin-1", "admin")
        assert change["after"]["legal_facts_changed"] == ["attestations +eu_us_dpf"]
    finally:
        assert admin("PUT", "/regions/us-virginia", document).status_code == 200


# -- database outage -------------------------------------------------------------------------


@pytest.mark.postgres
def test_token_checks_answer_503_during_a_database_outage(catalog: Path, temp_dir: Path) -> None:
    with pg_database_or_skip("rg_auth_outage") as url:
        try:
            with PgGatewayProcess(catalog, temp_dir / "gw", url) as gateway:
                tokens = create_tokens(gateway)
                cut_off(url)
                wait_for(
                    lambda: readiness(gateway), lambda r: not r["database_ok"], 5.0, "no outage"
                )
                for path, token in [
                    ("/admin/regions", tokens["admin"]),
                    ("/admin/regions", "rgo_wrong"),
                    ("/admin/tenants/demo", tokens["operator"]),
                    ("/audit/decisions", tokens["auditor"]),
                    ("/audit/decisions", "rgo_wrong"),
                    ("/audit/reports", tokens["admin"]),
                ]:
                    answer = _call(gateway, "GET", path, token, "192.0.2.10")
                    assert answer.status_code == 503, (path, answer.text)
                    assert answer.headers["content-type"] == "application/json"
                    error = answer.json()["error"]
                    assert error["code"] == "database_unavailable", error
                    assert error["message"].startswith(
                        "policy database unavailable, cannot check the operator token"
                    )
                reconnect(url)
                wait_for(
                    lambda: _call(gateway, "GET", "/admin/regions", tokens["admin"], "192.0.2.10"),
                    lambda r: r.status_code == 200,
                    15.0,
                    "admin API did not recover",
                )
        finally:
            reconnect(url)
