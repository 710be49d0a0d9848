"""The ADS state machine over a real gRPC connection, with a scripted client in Envoy's place."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator

import grpc
import pytest
from envoy_data_plane.envoy.config.cluster.v3 import Cluster
from envoy_data_plane.envoy.config.core.v3 import Node
from envoy_data_plane.envoy.service.discovery.v3 import DiscoveryRequest, DiscoveryResponse
from envoy_data_plane.google.protobuf import Any
from envoy_data_plane.google.rpc import Status
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from compliance.snapshot import PolicySnapshot
from gateway.envoy.translate import (
    CLUSTER_TYPE,
    LISTENER_TYPE,
    ROUTE_CONFIG_NAME,
    ROUTE_TYPE,
    EnvoyOptions,
)
from gateway.envoy.translate import translate as translate_policy
from gateway.envoy.xds_server import METHOD, SERVICE, XdsServer
from tests.factories import region

TIMEOUT = 10.0


def _resources(version: int) -> tuple[str, dict[str, tuple[tuple[str, Any], ...]]]:
    regions = [region("eu-frankfurt", "DE"), region("uk-london", "GB")]
    translated = translate_policy(PolicySnapshot(version, (), regions, ()), EnvoyOptions())
    return translated.version, dict(translated.by_type())


class FakeEnvoy:
    """One ADS stream driven by hand: send requests, read responses."""

    def __init__(self, server: XdsServer, node_id: str) -> None:
        self.node_id = node_id
        self._channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
        call = self._channel.stream_stream(
            f"/{SERVICE}/{METHOD}",
            request_serializer=bytes,
            response_deserializer=DiscoveryResponse.parse,
        )
        self._requests: queue.SimpleQueue[DiscoveryRequest | None] = queue.SimpleQueue()
        self._responses: queue.SimpleQueue[DiscoveryResponse] = queue.SimpleQueue()
        self._first = True
        self._call = call(iter(self._requests.get, None))
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        try:
            for response in self._call:
                self._responses.put(response)
        except grpc.RpcError:
            pass

    def send(self, type_url: str, **fields: object) -> None:
        node = Node(id=self.node_id) if self._first else None
        self._first = False
        self._requests.put(DiscoveryRequest(type_url=type_url, node=node, **fields))  # type: ignore[arg-type]

    def receive(self) -> DiscoveryResponse:
        return self._responses.get(timeout=TIMEOUT)

    def receive_nothing(self) -> DiscoveryResponse:
        """Raise queue.Empty unless a response arrives within a short wait."""
        return self._responses.get(timeout=0.5)

    def ack(self, response: DiscoveryResponse, **fields: object) -> None:
        self.send(
            response.type_url,
            version_info=response.version_info,
            response_nonce=response.nonce,
            **fields,
        )

    def close(self) -> None:
        self._requests.put(None)
        self._channel.close()


@pytest.fixture
def server() -> Iterator[XdsServer]:
    running = XdsServer()
    running.start()
    yield running
    running.stop()


def _wait(condition: Callable[[], bool], server: XdsServer) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not condition():
        assert time.monotonic() < deadline, server.statuses()
        time.sleep(0.005)


def test_a_subscription_gets_the_snapshot_and_its_ack_is_recorded(server: XdsServer) -> None:
    version, resources = _resources(1)
    server.set_snapshot(version, resources)
    envoy = FakeEnvoy(server, "edge-1")
    envoy.send(CLUSTER_TYPE)
    response = envoy.receive()
    assert response.version_info == version
    assert [r.type_url for r in response.resources] == [CLUSTER_TYPE, CLUSTER_TYPE]
    envoy.ack(response)
    _wait(lambda: server.statuses()["edge-1"][CLUSTER_TYPE].accepted == version, server)
    envoy.close()


def test_a_nack_is_recorded_and_nothing_is_resent(server: XdsServer) -> None:
    version, resources = _resources(1)
    server.set_snapshot(version, resources)
    envoy = FakeEnvoy(server, "edge-1")
    envoy.send(CLUSTER_TYPE)
    response = envoy.receive()
    sent = server.responses_sent
    envoy.send(
        CLUSTER_TYPE,
        version_info="",
        response_nonce=response.nonce,
        error_detail=Status(code=3, message="cluster region_x: bad address"),
    )
    _wait(lambda: server.statuses()["edge-1"][CLUSTER_TYPE].rejected == version, server)
    status = server.statuses()["edge-1"][CLUSTER_TYPE]
    assert status.accepted is None
    assert status.error == "cluster region_x: bad address"
    assert server.responses_sent == sent
    newer, resources = _resources(2)
    server.set_snapshot(newer, resources)
    assert envoy.receive().version_info == newer
    envoy.close()


def test_an_ack_of_a_superseded_response_is_ignored(server: XdsServer) -> None:
    first, resources = _resources(1)
    server.set_snapshot(first, resources)
    envoy = FakeEnvoy(server, "edge-1")
    envoy.send(CLUSTER_TYPE)
    old = envoy.receive()
    second, resources = _resources(2)
    server.set_snapshot(second, resources)
    new = envoy.receive()
    assert new.version_info == second
    envoy.ack(old)  # stale nonce: must not count as accepting anything
    envoy.ack(new)
    _wait(lambda: server.statuses()["edge-1"][CLUSTER_TYPE].accepted == second, server)
    envoy.close()


def test_a_snapshot_is_pushed_to_every_stream_and_named_subscriptions_get_only_their_names(
    server: XdsServer,
) -> None:
    first, resources = _resources(1)
    server.set_snapshot(first, resources)
    envoys = [FakeEnvoy(server, f"edge-{i}") for i in range(3)]
    for envoy in envoys:
        names = [ROUTE_CONFIG_NAME, "unknown"]
        envoy.send(ROUTE_TYPE, resource_names=names)
        response = envoy.receive()
        assert len(response.resources) == 1
        envoy.ack(response, resource_names=names)  # Envoy repeats its subscription each time
    _wait(lambda: server.connected() == {"edge-0", "edge-1", "edge-2"}, server)
    second, resources = _resources(2)
    server.set_snapshot(second, resources)
    assert [envoy.receive().version_info for envoy in envoys] == [second] * 3
    for envoy in envoys:
        envoy.close()


def _two_region_resources(version: int, *region_ids: str) -> dict[str, tuple[tuple[str, Any], ...]]:
    regions = [region(r, "DE") for r in region_ids]
    translated = translate_policy(PolicySnapshot(version, (), regions, ()), EnvoyOptions())
    return dict(translated.by_type())


def _cluster_names(response: DiscoveryResponse) -> set[str]:
    return {Cluster.parse(r.value).name for r in response.resources}


def test_a_snapshot_removing_clusters_is_sent_make_before_break(server: XdsServer) -> None:
    server.set_snapshot("1", _two_region_resources(1, "eu-frankfurt", "uk-london"))
    envoy = FakeEnvoy(server, "edge-1")
    envoy.send(CLUSTER_TYPE)
    first_cds = envoy.receive()
    envoy.ack(first_cds)
    envoy.send(LISTENER_TYPE)
    envoy.ack(envoy.receive())
    envoy.send(ROUTE_TYPE, resource_names=[ROUTE_CONFIG_NAME])
    envoy.ack(envoy.receive(), resource_names=[ROUTE_CONFIG_NAME])
    _wait(lambda: server.statuses()["edge-1"][ROUTE_TYPE].accepted == "1", server)
    assert _cluster_names(first_cds) == {"region_eu-frankfurt", "region_uk-london"}

    server.set_snapshot("2", _two_region_resources(2, "eu-frankfurt"))
    union = envoy.receive()  # 1. CDS with the old clusters kept, nothing else until its ACK
    assert union.type_url == CLUSTER_TYPE
    assert union.version_info == "2+kept"
    assert _cluster_names(union) == {"region_eu-frankfurt", "region_uk-london"}
    with pytest.raises(queue.Empty):
        envoy.receive_nothing()
    envoy.ack(union)
    listeners, routes = envoy.receive(), envoy.receive()  # 2. LDS, then RDS
    assert (listeners.type_url, routes.type_url) == (LISTENER_TYPE, ROUTE_TYPE)
    assert listeners.version_info == routes.version_info == "2"
    envoy.ack(listeners)
    with pytest.raises(queue.Empty):
        envoy.receive_nothing()  # the routes still name the kept cluster until Envoy ACKs them
    envoy.ack(routes, resource_names=[ROUTE_CONFIG_NAME])
    final = envoy.receive()  # 3. CDS without the removed cluster
    assert (final.type_url, final.version_info) == (CLUSTER_TYPE, "2")
    assert _cluster_names(final) == {"region_eu-frankfurt"}
    envoy.ack(final)
    _wait(lambda: server.statuses()["edge-1"][CLUSTER_TYPE].accepted == "2", server)
    envoy.close()


def test_routes_naming_added_clusters_wait_for_the_cds_ack(server: XdsServer) -> None:
    server.set_snapshot("1", _two_region_resources(1, "eu-frankfurt"))
    envoy = FakeEnvoy(server, "edge-1")
    envoy.send(CLUSTER_TYPE)
    envoy.ack(envoy.receive())
    envoy.send(ROUTE_TYPE, resource_names=[ROUTE_CONFIG_NAME])
    envoy.ack(envoy.receive(), resource_names=[ROUTE_CONFIG_NAME])
    _wait(lambda: server.statuses()["edge-1"][ROUTE_TYPE].accepted == "1", server)
    server.set_snapshot("2", _two_region_resources(2, "eu-frankfurt", "uk-london"))
    clusters = envoy.receive()
    assert (clusters.type_url, clusters.version_info) == (CLUSTER_TYPE, "2")  # nothing removed
    assert _cluster_names(clusters) == {"region_eu-frankfurt", "region_uk-london"}
    with pytest.raises(queue.Empty):
        envoy.receive_nothing()  # Envoy holds the CDS ACK back while the new cluster warms
    envoy.ack(clusters)
    routes = envoy.receive()
    assert (routes.type_url, routes.version_info) == (ROUTE_TYPE, "2")
    envoy.close()


def test_each_snapshot_push_is_a_span_naming_the_version_and_the_envoys() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    traced = XdsServer(tracer=provider.get_tracer("test"))
    traced.start()
    try:
        first, resources = _resources(1)
        traced.set_snapshot(first, resources)
        envoy = FakeEnvoy(traced, "edge-1")
        envoy.send(CLUSTER_TYPE)
        envoy.receive()
        _wait(lambda: traced.connected() == {"edge-1"}, traced)
        second, resources = _resources(2)
        traced.set_snapshot(second, resources)
        envoy.close()
    finally:
        traced.stop()
    pushes = [dict(s.attributes or {}) for s in exporter.get_finished_spans()]
    assert [(p["xds.version"], p["xds.envoys"]) for p in pushes] == [
        (first, ()),
        (second, ("edge-1",)),
    ]
    assert pushes[1]["xds.resources.Cluster"] == 2
