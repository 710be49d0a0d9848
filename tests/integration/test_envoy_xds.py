"""The ADS server against a real Envoy: subscribe, ACK, NACK, updates, reconnection."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from envoy_data_plane.envoy.config.cluster.v3 import Cluster, ClusterDiscoveryType
from envoy_data_plane.envoy.config.core.v3 import Address, SocketAddress
from envoy_data_plane.envoy.config.endpoint.v3 import (
    ClusterLoadAssignment,
    Endpoint,
    LbEndpoint,
    LocalityLbEndpoints,
)
from envoy_data_plane.google.protobuf import Any

from compliance.snapshot import PolicySnapshot
from compliance.store.catalog_file import load_catalog
from gateway.envoy.translate import CLUSTER_TYPE, EnvoyOptions, cluster_name
from gateway.envoy.xds_server import XdsServer
from regions.catalog import Region, RegionStatus
from regions.simulator.fleet import free_port
from tests.integration.envoy_support import (
    accepted,
    publish,
    require_envoy,
    running_envoy,
    wait_for,
)

pytestmark = pytest.mark.integration
NODE = "test-envoy"
GOLDEN_CATALOG = Path(__file__).parents[1] / "unit" / "golden" / "envoy" / "catalog.yaml"


def _region(region_id: str, status: RegionStatus = RegionStatus.ACTIVE) -> Region:
    # Nothing listens there: these tests look at configuration, not traffic.
    return Region(
        id=region_id,
        name=region_id,
        country="DE",
        latitude=50.0,
        longitude=8.0,
        base_url=f"http://127.0.0.1:{free_port()}",
        status=status,
    )


REGIONS = (_region("eu-frankfurt"), _region("uk-london"))


def _policy(version: int, *regions: Region) -> PolicySnapshot:
    return PolicySnapshot(version, (), regions or REGIONS, ())


@pytest.fixture
def options() -> EnvoyOptions:
    return EnvoyOptions(listener_port=free_port())


@pytest.fixture
def server() -> Iterator[XdsServer]:
    require_envoy()
    running = XdsServer()
    running.start()
    yield running
    running.stop()


def test_envoy_subscribes_acks_and_runs_the_served_version(
    server: XdsServer, options: EnvoyOptions, temp_dir: Path
) -> None:
    resources = publish(server, _policy(1), options)
    with running_envoy(temp_dir, server.port, NODE) as envoy:
        wait_for("the ACK of every type", lambda: accepted(server, NODE, resources.version))
        assert server.connected() == {NODE}
        clusters = {
            c["cluster"]["name"]: c["version_info"]
            for c in envoy.config_dump("dynamic_active_clusters")
        }
        assert clusters == {cluster_name(r.id): resources.version for r in REGIONS}
        assert {"eu-frankfurt", "uk-london", "no_region"} <= envoy.route_names()


def _broken_cluster() -> tuple[str, Any]:
    # Valid protobuf, invalid to Envoy: a STATIC cluster needs an IP address, not a name.
    address = Address(socket_address=SocketAddress(address="not-an-ip.invalid", port_value=1))
    cluster = Cluster(
        name="region_broken",
        type=ClusterDiscoveryType.STATIC,
        load_assignment=ClusterLoadAssignment(
            cluster_name="region_broken",
            endpoints=[
                LocalityLbEndpoints(lb_endpoints=[LbEndpoint(endpoint=Endpoint(address=address))])
            ],
        ),
    )
    return cluster.name, Any.pack(cluster)


def test_a_nack_is_recorded_with_envoys_message_and_the_rejected_resource_never_runs(
    server: XdsServer, options: EnvoyOptions, temp_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    good = publish(server, _policy(1), options)
    with running_envoy(temp_dir, server.port, NODE) as envoy:
        wait_for("the ACK of version 1", lambda: accepted(server, NODE, good.version))
        bad = dict(good.by_type())
        bad[CLUSTER_TYPE] = (*bad[CLUSTER_TYPE], _broken_cluster())
        server.set_snapshot("2-broken", bad)

        def rejected() -> bool:
            status = server.statuses()[NODE][CLUSTER_TYPE]
            return status.rejected == "2-broken"

        wait_for("the NACK of the broken version", rejected)
        status = server.statuses()[NODE][CLUSTER_TYPE]
        assert status.accepted == good.version
        assert status.error is not None and "region_broken" in status.error
        assert any("rejected Cluster version 2-broken" in r.getMessage() for r in caplog.records)
        # Envoy never runs the rejected cluster (it does apply the valid ones beside it).
        dump = envoy.admin("/config_dump?resource=dynamic_active_clusters").json()
        names = {c["cluster"]["name"] for c in dump.get("configs", [])}
        assert "region_broken" not in names
        # Nothing is re-sent after a NACK; a newer good snapshot is accepted again.
        fixed = publish(server, _policy(3), options)
        wait_for("the ACK of version 3", lambda: accepted(server, NODE, fixed.version))
        assert server.statuses()[NODE][CLUSTER_TYPE].rejected is None


def test_a_drained_region_leaves_envoys_routes_within_one_second(
    server: XdsServer, options: EnvoyOptions, temp_dir: Path
) -> None:
    first = publish(server, _policy(1), options)
    with running_envoy(temp_dir, server.port, NODE) as envoy:
        wait_for("the ACK of version 1", lambda: accepted(server, NODE, first.version))
        assert "uk-london" in envoy.route_names()
        draining = dataclasses.replace(REGIONS[1], status=RegionStatus.DRAINING)
        pushed = time.monotonic()
        publish(server, _policy(2, REGIONS[0], draining), options)
        # A deadline, not a timing: Envoy must run the new routes within 1 s of the push.
        wait_for(
            "the drained region's route to leave Envoy",
            lambda: "uk-london" not in envoy.route_names(),
            timeout=max(0.0, 1.0 - (time.monotonic() - pushed)),
        )
        # Its cluster stays, so requests already in flight there can finish.
        names = {c["cluster"]["name"] for c in envoy.config_dump("dynamic_active_clusters")}
        assert cluster_name("uk-london") in names


def test_envoy_reconnects_to_a_restarted_control_plane(
    options: EnvoyOptions, temp_dir: Path
) -> None:
    require_envoy()
    first_server = XdsServer()
    port = first_server.start()
    first = publish(first_server, _policy(1), options)
    with running_envoy(temp_dir, port, NODE):
        try:
            wait_for("the ACK of version 1", lambda: accepted(first_server, NODE, first.version))
        finally:
            first_server.stop()
        second_server = XdsServer(port=port)
        second_server.start()
        try:
            second = publish(second_server, _policy(2, REGIONS[0]), options)
            wait_for(
                "the ACK of version 2 after reconnecting",
                lambda: accepted(second_server, NODE, second.version),
            )
        finally:
            second_server.stop()


def test_a_restarted_control_plane_with_the_same_version_resends_nothing(
    options: EnvoyOptions, temp_dir: Path
) -> None:
    require_envoy()
    policy = _policy(1)
    first_server = XdsServer()
    port = first_server.start()
    resources = publish(first_server, policy, options)
    with running_envoy(temp_dir, port, NODE):
        try:
            wait_for("the first ACK", lambda: accepted(first_server, NODE, resources.version))
        finally:
            first_server.stop()
        second_server = XdsServer(port=port)
        second_server.start()
        try:
            second_server.set_snapshot(resources.version, resources.by_type())
            # The reconnecting Envoy says which version it runs; nothing needs sending.
            wait_for(
                "Envoy to report the version it kept",
                lambda: accepted(second_server, NODE, resources.version),
            )
            assert second_server.responses_sent == 0
        finally:
            second_server.stop()


def test_envoy_accepts_the_golden_translation(server: XdsServer, temp_dir: Path) -> None:
    # The golden catalog has what the simulators lack: an https region (TLS, SAN check, system
    # CA bundle) behind a DNS name and a path prefix, a draining and a disabled region.
    regions, tenants = load_catalog(GOLDEN_CATALOG)
    resources = publish(
        server,
        PolicySnapshot(1, (), regions, tenants),
        EnvoyOptions(listener_port=free_port(), trusted_hops=1),
    )
    with running_envoy(temp_dir, server.port, NODE):
        wait_for("the ACK of every type", lambda: accepted(server, NODE, resources.version))
