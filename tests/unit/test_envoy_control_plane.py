"""What `serve --data-plane envoy` adds to the translation (control route, trusted networks) and
the control plane's re-translation when a rule's date arrives."""

from __future__ import annotations

import re
import threading
from dataclasses import replace
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import pytest

from compliance.snapshot import PolicySnapshot
from compliance.store.catalog_file import load_catalog
from gateway.envoy.control_plane import EnvoyControlPlane, seconds_to_next_day
from gateway.envoy.control_routes import CONTROL_CLUSTER, inference_path_regex
from gateway.envoy.tables import valid_until
from gateway.envoy.translate import EnvoyOptions, plain, translate
from gateway.envoy.xds_server import XdsServer
from gateway.http.proxy import INFERENCE_PATHS
from regions.geoip import bundled_database_path
from tests.factories import default_regimes

CATALOG = Path(__file__).parent / "golden" / "envoy" / "catalog.yaml"
SERVE = EnvoyOptions(
    listener_port=8080,
    control_port=45678,
    inference_paths=tuple(sorted(INFERENCE_PATHS)),
    trusted_cidrs=("127.0.0.0/8", "2001:db8::/32"),
    geoip_database=str(bundled_database_path()),
)


def _policy(version: int = 1) -> PolicySnapshot:
    regions, tenants = load_catalog(CATALOG)
    return PolicySnapshot(version, default_regimes(), regions, tenants)


@pytest.mark.parametrize(
    ("path", "inference"),
    [
        ("/v1/chat/completions", True),
        ("/v1/chat/completions?stream=1", True),
        ("/v1/embeddings", True),
        ("/v1/completions", True),
        ("/v1/models", False),
        ("/v1/residency/explain", False),
        ("/admin/regions", False),
        ("/v1/chat/completions/x", False),
        ("/v1/chat/completionsx", False),
        ("/readyz", False),
    ],
)
def test_the_control_route_takes_every_path_but_inference(path: str, inference: bool) -> None:
    regex = inference_path_regex(INFERENCE_PATHS)
    assert bool(re.fullmatch(regex, path)) is inference


def test_the_control_route_comes_first_and_skips_the_decision() -> None:
    resources = translate(_policy(), replace(SERVE, decision_on=date(2026, 6, 1)))
    routes = resources.routes[0].virtual_hosts[0].routes
    control = plain(routes[0])
    assert control["name"] == "control"
    assert control["route"]["cluster"] == CONTROL_CLUSTER
    matcher = control["match"]["headers"][0]
    assert matcher["name"] == ":path" and matcher["invert_match"] is True
    disabled = control["typed_per_filter_config"]
    assert set(disabled) == {"envoy.filters.http.lua", "envoy.filters.http.json_to_metadata"}
    header = control["request_headers_to_add"][0]["header"]
    assert header == {"key": "x-forwarded-for", "value": "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%"}
    [cluster] = [plain(c) for c in resources.clusters if c.name == CONTROL_CLUSTER]
    address = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
    assert address["address"]["socket_address"] == {"address": "127.0.0.1", "port_value": 45678}
    assert "control" not in {
        r.name for r in translate(_policy(), EnvoyOptions()).routes[0].virtual_hosts[0].routes
    }


def _connection_manager(listener: dict[str, Any]) -> dict[str, Any]:
    [manager] = [
        f["typed_config"]
        for f in listener["filter_chains"][0]["filters"]
        if f["name"] == "envoy.filters.network.http_connection_manager"
    ]
    return manager  # type: ignore[no-any-return]


def test_trusted_networks_replace_the_hop_count() -> None:
    listener = plain(translate(_policy(), SERVE).listeners[0])
    manager = _connection_manager(listener)
    assert manager.get("use_remote_address", False) is False  # Envoy refuses both together
    [detection] = manager["original_ip_detection_extensions"]
    cidrs = detection["typed_config"]["xff_trusted_cidrs"]["cidrs"]
    assert cidrs == [
        {"address_prefix": "127.0.0.0", "prefix_len": 8},
        {"address_prefix": "2001:db8::", "prefix_len": 32},
    ]
    plain_listener = plain(translate(_policy(), EnvoyOptions()).listeners[0])
    untrusting = _connection_manager(plain_listener)
    assert untrusting["use_remote_address"] is True
    assert "original_ip_detection_extensions" not in untrusting


def test_seconds_to_next_day() -> None:
    now = datetime(2026, 3, 31, 23, 59, 30, tzinfo=UTC)
    assert seconds_to_next_day(now) == 30.0


class _Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now
        self.lock = threading.Lock()

    def __call__(self) -> datetime:
        with self.lock:
            return self.now


def test_tables_are_retranslated_when_a_rules_date_arrives() -> None:
    policy = _policy()
    some_day = date(2026, 1, 1)
    change = valid_until(policy.regimes, some_day)
    assert change is not None  # the default pack has dated rules
    eve = change - timedelta(days=1)
    clock = _Clock(datetime.combine(eve, time(23, 59, 59, 800_000), UTC))
    xds = XdsServer()
    plane = EnvoyControlPlane(xds, SERVE, clock)
    plane.start()
    try:
        plane.on_policy(policy)
        _wait(lambda: plane.published is not None)
        first = plane.published
        assert first is not None and first.decided_on == eve and first.valid_until == change
        assert not plane.due(eve)
        assert plane.due(change)
        with clock.lock:  # midnight passes while the plane waits for it
            clock.now = datetime.combine(change, time(0, 0, 1), UTC)
        _wait(lambda: plane.published is not first)
        again = plane.published
        assert again is not None and again.decided_on == change
        assert again.policy_version == first.policy_version
        assert xds.version == again.version != first.version
    finally:
        plane.stop()


def test_a_failed_translation_keeps_the_last_configuration() -> None:
    xds = XdsServer()
    plane = EnvoyControlPlane(xds, SERVE)
    plane.start()
    try:
        plane.on_policy(_policy())
        _wait(lambda: plane.published is not None)
        served = xds.version
        # A base URL the catalog check missed: its port cannot be put in a cluster.
        good = _policy()
        regions = [replace(good.regions[0], base_url="http://127.0.0.1:99999"), *good.regions[1:]]
        broken = PolicySnapshot(2, good.regimes, regions, good.tenants.values())
        plane.on_policy(broken)
        _wait(lambda: plane.error is not None)
        assert xds.version == served
        assert "policy v2" in (plane.error or "")
        assert plane.status()["status"].startswith("degraded")
    finally:
        plane.stop()


def _wait(condition: object, timeout: float = 10.0) -> None:
    deadline = datetime.now(UTC) + timedelta(seconds=timeout)
    while not condition():  # type: ignore[operator]
        assert datetime.now(UTC) < deadline, "condition not met (a hang bound)"
        threading.Event().wait(0.01)
