"""The residency decision inside a real Envoy: request facts, refusals, no client-chosen region."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from compliance.model import Tenant
from compliance.snapshot import PolicySnapshot, hash_api_key
from regions.simulator.fleet import SimulatorFleet
from tests.integration.conftest import (
    ACME_KEY,
    DEMO_KEY,
    GDPR_ALLOWED,
    IP_DE,
    IP_IN,
    REGIONS,
    sim_requests,
)
from tests.integration.envoy_decision_support import (
    CLIENT,
    DecidingEnvoy,
    catalog_policy,
    deciding_envoy,
)

pytestmark = pytest.mark.integration
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
DEMO = {"Authorization": f"Bearer {DEMO_KEY}"}
VECTOR_KEYS = [("k" * n)[:n] for n in (1, 55, 56, 63, 64, 65, 119, 120, 1000)]


@pytest.fixture(scope="module")
def plane(
    fleet: SimulatorFleet, catalog: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DecidingEnvoy]:
    directory = tmp_path_factory.mktemp("envoy-decision")
    base = catalog_policy(catalog)
    # Keys around SHA-256's 64-byte block and 56-byte padding boundaries, hashed by hashlib here
    # and by Envoy's libcrypto in the filter.
    hashed = [
        Tenant(f"len-{len(key)}", "t", "DE", api_key_hashes=frozenset({hash_api_key(key)}))
        for key in VECTOR_KEYS
    ]
    policy = PolicySnapshot(1, base.regimes, base.regions, [*base.tenants.values(), *hashed])
    with deciding_envoy(policy, directory, "decision-envoy", tuple(REGIONS)) as p:
        yield p


def _counts(fleet: SimulatorFleet) -> dict[str, int]:
    return {rid: sim_requests(fleet, rid) for rid in REGIONS}


def test_a_german_client_goes_to_a_gdpr_region_whatever_region_it_asks_for(
    plane: DecidingEnvoy, fleet: SimulatorFleet
) -> None:
    before = _counts(fleet)
    headers = {**DEMO, "X-Forwarded-For": IP_DE, "x-residency-region": "us-virginia"}
    response = plane.post(CHAT, headers)
    assert response.status_code == 200, response.text
    region = response.headers["x-residency-region"]
    assert region in GDPR_ALLOWED
    assert response.headers["x-residency-decision"]
    after = _counts(fleet)
    # The simulators' own counters: exactly one request, in the region Envoy named.
    assert {rid: after[rid] - before[rid] for rid in REGIONS if after[rid] != before[rid]} == {
        region: 1
    }


@pytest.mark.parametrize(
    "content_type", ["application/x-www-form-urlencoded", "text/plain", "application/json"]
)
def test_the_body_is_json_whatever_content_type_the_client_names(
    plane: DecidingEnvoy, content_type: str
) -> None:
    """As on the Python path: `curl -d` (form-urlencoded) is read as the JSON it is."""
    response = CLIENT.post(
        f"http://127.0.0.1:{plane.options.listener_port}/v1/chat/completions",
        content=orjson.dumps(CHAT),
        headers={**DEMO, "X-Forwarded-For": IP_DE, "Content-Type": content_type},
    )
    assert response.status_code == 200, response.text
    assert response.headers["x-residency-region"] in GDPR_ALLOWED


@pytest.mark.parametrize(
    ("headers", "status", "code", "param"),
    [
        ({}, 401, "missing_api_key", None),
        ({"Authorization": "Bearer nope"}, 401, "invalid_api_key", None),
        ({**DEMO, "X-Data-Class": "health,public"}, 400, "repeated_header", "X-Data-Class"),
        ({**DEMO, "X-Data-Class": "gossip"}, 400, "invalid_data_class", "X-Data-Class"),
        (
            {**DEMO, "X-Data-Subject-Country": "Germany"},
            400,
            "invalid_subject_country",
            "X-Data-Subject-Country",
        ),
        # no country from 127.0.0.1, none declared, the demo tenant has no home
        (DEMO, 451, "no_allowed_region", None),
        # a client-sent geo header is stripped before the geoip filter runs
        ({**DEMO, "x-residency-geo-country": "DE"}, 451, "no_allowed_region", None),
        ({**DEMO, "X-Forwarded-For": IP_IN, "X-Data-Class": "financial_securities"}, 200, "", None),
    ],
)
def test_requests_are_validated_and_refused_like_the_python_path(
    plane: DecidingEnvoy, headers: dict[str, str], status: int, code: str, param: str | None
) -> None:
    response = plane.post(CHAT, headers)
    assert response.status_code == status, response.text
    if status != 200:
        error = response.json()["error"]
        assert (error["code"], error["param"]) == (code, param)
        assert response.headers["content-type"] == "application/json"
    else:
        assert response.headers["x-residency-region"] == "in-mumbai"


def test_a_repeated_routing_header_is_refused(plane: DecidingEnvoy) -> None:
    headers = [
        ("Authorization", f"Bearer {ACME_KEY}"),
        ("X-Data-Subject-Country", "DE"),
        ("X-Data-Subject-Country", "US"),
    ]
    response = httpx.post(
        f"http://127.0.0.1:{plane.options.listener_port}/v1/chat/completions",
        json=CHAT,
        headers=headers,
        trust_env=False,
    )
    assert response.status_code == 400
    assert response.json()["error"]["message"] == (
        "X-Data-Subject-Country: sent 2 times; send it once, with one value"
    )


@pytest.mark.parametrize("key", VECTOR_KEYS, ids=lambda k: f"{len(k)}-bytes")
def test_envoy_hashes_keys_like_hashlib(plane: DecidingEnvoy, key: str) -> None:
    response = plane.post(CHAT, {"Authorization": f"Bearer {key}"})
    assert response.status_code == 200, response.text
    assert response.headers["x-residency-region"] == "eu-frankfurt"  # home DE, nearest
    wrong = plane.post(CHAT, {"Authorization": f"Bearer {key}x"})
    assert wrong.json()["error"]["code"] == "invalid_api_key"
