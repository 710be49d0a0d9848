"""The admin API on a real gateway process: roles, validation messages, ETags and 412s,
audited changes, and policy overrides that change routing at once."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from compliance.store.schema import config_changes
from regions.simulator.fleet import SimulatorFleet
from tests.integration.admin_support import Admin, create_tokens
from tests.integration.conftest import DEMO_KEY, HTTP, IP_DE, GatewayProcess, set_faults

pytestmark = pytest.mark.integration

PARIS: dict[str, Any] = {
    "name": "Paris",
    "country": "FR",
    "latitude": 48.85,
    "longitude": 2.35,
    "base_url": "http://127.0.0.1:9",
    "models": ["gpt-4o-mini"],
}


@pytest.fixture(scope="module")
def admin_gateway(
    catalog: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    """A gateway of its own: these tests change its configuration."""
    with GatewayProcess(catalog, tmp_path_factory.mktemp("admin-gw")) as running:
        yield running


@pytest.fixture(scope="module")
def tokens(admin_gateway: GatewayProcess) -> dict[str, str]:
    return create_tokens(admin_gateway)


@pytest.fixture(scope="module")
def admin(admin_gateway: GatewayProcess, tokens: dict[str, str]) -> Admin:
    return Admin(admin_gateway, tokens["admin"])


def error(response: httpx.Response) -> tuple[int, str, str | None]:
    body = response.json()["error"]
    return response.status_code, body["message"], body["param"]


OPT_IN_NOPE = {"regime_id": "nope", "country": "US", "basis": "SCC"}

# -- roles -----------------------------------------------------------------------------------

WRITES = {
    "region": ("PUT", "/regions/eu-lyon", {**PARIS, "name": "Lyon"}),
    "tenant": ("PUT", "/tenants/role-check", {"name": "Role check"}),
    "regime": ("PATCH", "/regimes/id_pdp", {"enabled": False}),
}


@pytest.mark.parametrize(
    ("who", "method", "path", "status", "message"),
    [
        (None, "GET", "/regions", 401, "missing operator token"),
        ("bogus", "GET", "/regions", 401, "invalid or revoked operator token"),
        ("tenant", "GET", "/regions", 403, "tenant API keys cannot use admin or audit endpoints"),
        ("tenant", *WRITES["region"][:2], 403, "tenant API keys cannot use admin"),
        ("auditor", "GET", "/regions", 200, None),
        ("auditor", "GET", "/tenants/demo", 200, None),
        ("auditor", *WRITES["region"][:2], 403, "role auditor may not do this"),
        ("auditor", *WRITES["tenant"][:2], 403, "role auditor may not do this"),
        ("operator", "GET", "/regimes/gdpr", 200, None),
        ("operator", *WRITES["region"][:2], 403, "role operator may not create a region"),
        ("operator", *WRITES["tenant"][:2], 403, "role operator may not do this"),
        ("operator", *WRITES["regime"][:2], 403, "role operator may not do this"),
        ("admin", *WRITES["region"][:2], 200, None),
        ("admin", *WRITES["tenant"][:2], 200, None),
        ("admin", *WRITES["regime"][:2], 200, None),
    ],
)
def test_roles(
    admin_gateway: GatewayProcess,
    tokens: dict[str, str],
    who: str | None,
    method: str,
    path: str,
    status: int,
    message: str | None,
) -> None:
    token = {None: None, "bogus": "rgo_bogus", "tenant": DEMO_KEY}.get(who, tokens.get(who or ""))
    body = next((b for m, p, b in WRITES.values() if (m, p) == (method, path)), None)
    response = Admin(admin_gateway, token)(method, path, body)
    if message is None:
        assert response.status_code in (status, 201), response.text
    else:
        assert response.status_code == status and message in error(response)[1], response.text


def test_refusals_are_logged_without_the_token(
    admin_gateway: GatewayProcess, tokens: dict[str, str]
) -> None:
    response = Admin(admin_gateway, tokens["auditor"])("DELETE", "/regions/eu-frankfurt")
    assert response.status_code == 403
    deadline = time.monotonic() + 5
    while "access refused: DELETE /admin/regions/eu-frankfurt" not in admin_gateway.output():
        assert time.monotonic() < deadline, admin_gateway.output()
        time.sleep(0.05)
    assert tokens["auditor"] not in admin_gateway.output()
    assert DEMO_KEY not in admin_gateway.output()


# -- validation ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "message", "param"),
    [
        ("PUT", "/regions/eu-paris", {**PARIS, "country": "XX"}, 400,
         "country: 'XX' is not an ISO 3166-1 alpha-2 country code", "country"),
        ("PUT", "/regions/eu-paris", {**PARIS, "latitude": 95}, 400,
         "latitude: must be between -90 and 90", "latitude"),
        ("PUT", "/regions/eu-paris", {**PARIS, "base_url": "gopher://x"}, 400,
         "base_url: 'gopher://x' is not an http(s) URL with a host", "base_url"),
        ("PUT", "/regions/eu-paris", {**PARIS, "attestations": ["soc2"]}, 400,
         "attestations[0]: 'soc2' is not a known attestation (known: appi_private_sector, "
         "eu_us_dpf, pipa, pipeda, pipl_cac_mechanism, swiss_us_dpf, uk_extension_dpf)",
         "attestations[0]"),
        ("PUT", "/regions/eu-paris", {**PARIS, "status": "paused"}, 400,
         "status: 'paused' is not a known region status (known: active, disabled, draining)",
         "status"),
        ("PUT", "/regions/eu-paris", {**PARIS, "weight": 101}, 400,
         "weight: must be between 0 and 100", "weight"),
        ("PUT", "/regions/eu-paris", {**PARIS, "id": "eu-rome"}, 400,
         "id: 'eu-rome' does not match the region id in the path ('eu-paris')", "id"),
        ("PUT", "/regions/Bad_Id", PARIS, 400,
         "id: 'Bad_Id' is not a region id (lowercase letters, digits and '-', 1-63 characters)",
         "id"),
        ("PUT", "/regions/eu-paris", {"name": "Paris"}, 400,
         "country: required field is missing; latitude: required field is missing; "
         "longitude: required field is missing; base_url: required field is missing", "country"),
        ("PATCH", "/regions/eu-frankfurt", {"status": "sleeping"}, 400,
         "status: 'sleeping' is not a known region status (known: active, disabled, draining)",
         "status"),
        ("PATCH", "/regions/eu-frankfurt", {"weight": -5}, 400,
         "weight: must be between 0 and 100", "weight"),
        ("PATCH", "/regions/eu-frankfurt", {"name": "x"}, 400,
         "name: cannot be changed with PATCH (only status, weight; use PUT)", "name"),
        ("PATCH", "/regions/mars-1", {"weight": 5}, 404, "no region 'mars-1'", None),
        ("DELETE", "/regions/mars-1", None, 404, "no region 'mars-1'", None),
        ("PUT", "/tenants/t-new", {"name": "T", "allowed_regions": ["mars-1"]}, 400,
         "allowed_regions: unknown region 'mars-1'", "allowed_regions"),
        ("PUT", "/tenants/t-new", {"name": "T", "denied_regions": ["mars-1"]}, 400,
         "denied_regions: unknown region 'mars-1'", "denied_regions"),
        ("PUT", "/tenants/t-new", {"name": "T", "transfer_opt_ins": [OPT_IN_NOPE]}, 400,
         "transfer_opt_ins[0].regime_id: unknown regime 'nope'",
         "transfer_opt_ins[0].regime_id"),
        ("PUT", "/tenants/t-new", {"name": "T", "home_jurisdiction": "EU"}, 400,
         "home_jurisdiction: 'EU' is a country group; this field takes one country code "
         "(groups are for allowed_countries)",
         "home_jurisdiction"),
        ("PUT", "/tenants/t-new", {"name": "T", "api_keys": [DEMO_KEY]}, 400,
         "api_keys[0]: an API key needs at least 32 characters (128 bits of randomness), this "
         "one has 11; generate one with `gateway tenants keys create`", "api_keys[0]"),
        ("PATCH", "/regimes/no_such_law", {"enabled": True}, 404, "no regime 'no_such_law'", None),
        ("PATCH", "/regimes/sa_pdpl", {"enabled": "yes"}, 400,
         "enabled: Input should be a valid boolean", "enabled"),
        ("PATCH", "/regimes/sa_pdpl", {"rules": []}, 400,
         "rules: cannot be changed with PATCH (only enabled; use PUT)", "rules"),
        ("DELETE", "/regimes/gdpr", None, 405, "Method Not Allowed", None),
    ],
)  # fmt: skip
def test_invalid_input_is_named(
    admin: Admin,
    method: str,
    path: str,
    body: Any,
    status: int,
    message: str,
    param: str | None,
) -> None:
    response = admin(method, path, body)
    if status == 405:
        assert response.status_code == 405
        return
    assert error(response) == (status, message, param)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "request body is empty; expected a JSON object"),
        (b"{nope", "request body is not valid JSON: "),
        (b"[1]", "request body must be a JSON object describing the region"),
    ],
)
def test_unreadable_bodies(admin: Admin, content: bytes, message: str) -> None:
    response = HTTP.put(f"{admin.base}/regions/eu-paris", content=content, headers=admin.headers)
    status, text, _ = error(response)
    assert status == 400 and text.startswith(message)


def test_an_admin_body_over_the_limit_is_413(admin: Admin) -> None:
    """Admin writes read at most GATEWAY_MAX_BODY_BYTES (4 MiB), like every other endpoint."""
    big = b'{"name": "' + b"x" * (5 * 1024 * 1024) + b'"}'
    response = HTTP.put(f"{admin.base}/regions/eu-paris", content=big, headers=admin.headers)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"

    def chunks() -> Iterator[bytes]:  # no Content-Length: stopped while reading
        for _ in range(6):
            yield b" " * (1024 * 1024)

    response = HTTP.put(f"{admin.base}/regions/eu-paris", content=chunks(), headers=admin.headers)
    assert response.status_code == 413


def test_regime_body_is_validated_with_the_pack_rules(admin: Admin) -> None:
    gdpr = admin("GET", "/regimes/gdpr").json()
    gdpr["rules"][0]["data_classes"] = ["secret"]
    response = admin("PUT", "/regimes/gdpr", gdpr)
    status, message, param = error(response)
    assert (status, param) == (400, "rules.0.data_classes.0")
    assert message.startswith("rules.0.data_classes.0: Input should be 'public', 'personal'")


# -- versions, conflicts, audit --------------------------------------------------------------


def test_put_is_idempotent_and_if_match_prevents_lost_updates(
    admin: Admin, admin_gateway: GatewayProcess
) -> None:
    created = admin("PUT", "/regions/eu-paris", PARIS)
    assert created.status_code == 201 and created.json()["result"] == "created"
    etag = created.headers["etag"]
    assert etag == f'"{created.json()["etag"]}"'
    again = admin("PUT", "/regions/eu-paris", PARIS)
    assert (again.status_code, again.json()["result"], again.headers["etag"]) == (
        200,
        "unchanged",
        etag,
    )
    fetched = admin("GET", "/regions/eu-paris")
    assert fetched.headers["etag"] == etag and fetched.json()["in_flight"] == 0
    first = admin("PATCH", "/regions/eu-paris", {"weight": 30}, **{"If-Match": etag})
    assert first.status_code == 200 and first.json()["weight"] == 30
    second = admin("PATCH", "/regions/eu-paris", {"weight": 70}, **{"If-Match": etag})
    status, message, _ = error(second)
    assert status == 412
    assert message.startswith("region 'eu-paris' changed since you read it")
    stale_delete = admin("DELETE", "/regions/eu-paris", **{"If-Match": etag})
    assert stale_delete.status_code == 412
    assert admin("GET", "/regions/eu-paris").json()["weight"] == 30
    deleted = admin("DELETE", "/regions/eu-paris", **{"If-Match": first.headers["etag"]})
    assert deleted.json() == {
        "id": "eu-paris",
        "deleted": True,
        "policy_version": deleted.json()["policy_version"],
        "warnings": [],
    }
    assert admin("GET", "/regions/eu-paris").status_code == 404
    log = _changes(admin_gateway, "eu-paris")
    assert [(c["action"], c["actor"], c["role"]) for c in log] == [
        ("create", "admin-1", "admin"),
        ("update", "admin-1", "admin"),
        ("delete", "admin-1", "admin"),
    ]
    assert (log[1]["before"]["weight"], log[1]["after"]["weight"]) == (100, 30)
    assert log[2]["after"] is None and log[2]["before"]["name"] == "Paris"


def _changes(gateway: GatewayProcess, object_id: str) -> list[dict[str, Any]]:
    engine = sa.create_engine(gateway.database_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                sa.select(config_changes)
                .where(config_changes.c.object_id == object_id)
                .order_by(config_changes.c.seq)
            )
            return [dict(r._mapping) for r in rows]
    finally:
        engine.dispose()


KEY_TEST = "rg-key-test-1-0123456789abcdef0123456789abcdef"


def test_tenant_keys_are_write_only(admin: Admin, admin_gateway: GatewayProcess) -> None:
    body = {"name": "Key test", "home_jurisdiction": "DE", "api_keys": [KEY_TEST]}
    created = admin("PUT", "/tenants/key-test", body)
    assert created.status_code == 201, created.text
    assert KEY_TEST not in created.text and created.json()["api_key_count"] == 1
    fetched = admin("GET", "/tenants/key-test")
    assert KEY_TEST not in fetched.text and "api_keys" not in fetched.json()
    explained = HTTP.post(
        f"{admin_gateway.base_url}/v1/residency/explain",
        json={"ip": IP_DE},
        headers={"Authorization": f"Bearer {KEY_TEST}"},
    )
    assert explained.status_code == 200 and explained.json()["facts"]["tenant"] == "key-test"
    renamed = admin("PUT", "/tenants/key-test", {**fetched.json(), "name": "Renamed"})
    assert renamed.status_code == 200 and renamed.json()["api_key_count"] == 1
    assert KEY_TEST not in str(_changes(admin_gateway, "key-test"))


def _explain(gateway: GatewayProcess, **headers: str) -> dict[str, Any]:
    response = HTTP.post(
        f"{gateway.base_url}/v1/residency/explain",
        json={"ip": IP_DE, "model": "gpt-4o-mini"},
        headers={"Authorization": f"Bearer {DEMO_KEY}", **headers},
    )
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def _allowed(decision: dict[str, Any]) -> set[str]:
    return {c["region"] for c in decision["candidates"] if c["allowed"]}


def test_enabling_a_regime_applies_at_once(admin: Admin, admin_gateway: GatewayProcess) -> None:
    saudi = {"X-Data-Subject-Country": "SA"}
    assert _explain(admin_gateway, **saudi)["outcome"] == "routed"
    try:
        enabled = admin("PATCH", "/regimes/sa_pdpl", {"enabled": True})
        assert enabled.status_code == 200 and enabled.json()["enabled"] is True
        decision = _explain(admin_gateway, **saudi)
        assert decision["outcome"] == "refused" and _allowed(decision) == set()
    finally:
        admin("PATCH", "/regimes/sa_pdpl", {"enabled": False})
    assert _explain(admin_gateway, **saudi)["outcome"] == "routed"


def test_revoking_the_dpf_destination(admin: Admin, admin_gateway: GatewayProcess) -> None:
    assert "us-oregon" in _allowed(_explain(admin_gateway))
    original = admin("GET", "/regimes/gdpr")
    revoked = original.json()
    for rule in revoked["rules"]:
        rule["destinations"] = [d for d in rule["destinations"] if d["attestation"] != "eu_us_dpf"]
    try:
        response = admin("PUT", "/regimes/gdpr", revoked, **{"If-Match": original.headers["etag"]})
        assert response.status_code == 200 and response.json()["result"] == "replaced"
        assert "us-oregon" not in _allowed(_explain(admin_gateway))
    finally:
        admin("PUT", "/regimes/gdpr", original.json())
    assert "us-oregon" in _allowed(_explain(admin_gateway))
    log = _changes(admin_gateway, "gdpr")
    assert [c["action"] for c in log] == ["replace", "replace"]
    assert log[0]["policy_version"] < log[1]["policy_version"]


def _health_when(
    admin: Admin, region_id: str, healthy: bool, bound: float = 15.0
) -> httpx.Response:
    """GET the region once this replica's prober reports it `healthy` (or the bound passed)."""
    deadline = time.monotonic() + bound
    while True:
        response = admin("GET", f"/regions/{region_id}")
        if response.json()["health"]["healthy"] is healthy or time.monotonic() > deadline:
            return response
        time.sleep(0.05)


def test_regions_carry_live_health_outside_the_etag(admin: Admin, fleet: SimulatorFleet) -> None:
    listed = admin("GET", "/regions").json()["data"]
    assert all(set(r["health"]) == {"healthy", "detail", "since", "checked_at"} for r in listed)
    up = _health_when(admin, "us-virginia", True)
    assert up.json()["health"]["detail"] == ""
    assert up.json()["health"]["checked_at"].endswith("Z")
    set_faults(fleet, "us-virginia", down=True)
    try:
        down = _health_when(admin, "us-virginia", False)
        health = down.json()["health"]
        assert (health["healthy"], health["detail"]) == (
            False,
            "health check answered HTTP 503",
        )
        in_list = {r["id"]: r for r in admin("GET", "/regions").json()["data"]}["us-virginia"]
        assert in_list["health"]["healthy"] is False
        # Live state, not configuration: the ETag and the stored document do not change.
        assert down.headers["etag"] == up.headers["etag"] == f'"{in_list["etag"]}"'
        assert down.json()["status"] == "active" and down.json()["serving_status"] == "active"
        # A document sent back as read includes the live fields; they are ignored.
        document = down.json()
        replaced = admin("PUT", "/regions/us-virginia", document, **{"If-Match": document["etag"]})
        assert (replaced.status_code, replaced.json()["result"]) == (200, "unchanged")
    finally:
        set_faults(fleet, "us-virginia", down=False)
    assert _health_when(admin, "us-virginia", True).json()["health"]["healthy"] is True
