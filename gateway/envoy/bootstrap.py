"""The Envoy bootstrap: who this Envoy is, where its ADS control plane is, admin on loopback.

Everything else (listeners, routes, clusters) arrives over ADS, so the bootstrap only changes
when the control plane moves.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from datetime import timedelta
from typing import Any as AnyValue

from envoy_data_plane.envoy.config.bootstrap.v3 import (
    Admin,
    Bootstrap,
    BootstrapDynamicResources,
    BootstrapStaticResources,
)
from envoy_data_plane.envoy.config.cluster.v3 import Cluster, ClusterDiscoveryType
from envoy_data_plane.envoy.config.core.v3 import (
    Address,
    AggregatedConfigSource,
    ApiConfigSource,
    ApiConfigSourceApiType,
    ApiVersion,
    BackoffStrategy,
    ConfigSource,
    GrpcService,
    GrpcServiceEnvoyGrpc,
    Http2ProtocolOptions,
    Node,
    RetryPolicy,
    SocketAddress,
)
from envoy_data_plane.envoy.config.endpoint.v3 import (
    ClusterLoadAssignment,
    Endpoint,
    LbEndpoint,
    LocalityLbEndpoints,
)
from envoy_data_plane.envoy.extensions.upstreams.http.v3 import (
    HttpProtocolOptions,
    HttpProtocolOptionsExplicitHttpConfig,
)
from envoy_data_plane.google.protobuf import Any

from gateway.envoy.translate import plain

XDS_CLUSTER = "residency_xds"
_HTTP_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"


@dataclass(frozen=True, slots=True)
class BootstrapOptions:
    """Identity of one Envoy and the addresses it needs before ADS delivers the rest."""

    node_id: str
    xds_host: str = "127.0.0.1"
    xds_port: int = 18000
    admin_port: int = 9901
    node_cluster: str = "residency-gateway"
    reconnect_max: float = 1.0
    """Longest wait between ADS reconnection attempts (Envoy's default grows to 30 s)."""


def build_bootstrap(options: BootstrapOptions) -> Bootstrap:
    """The bootstrap message: node identity, admin on loopback, every resource through ADS."""
    ads = ConfigSource(ads=AggregatedConfigSource(), resource_api_version=ApiVersion.V3)
    backoff = BackoffStrategy(
        base_interval=timedelta(seconds=min(0.1, options.reconnect_max)),
        max_interval=timedelta(seconds=options.reconnect_max),
    )
    return Bootstrap(
        node=Node(id=options.node_id, cluster=options.node_cluster),
        admin=Admin(address=_address("127.0.0.1", options.admin_port)),
        dynamic_resources=BootstrapDynamicResources(
            ads_config=ApiConfigSource(
                api_type=ApiConfigSourceApiType.GRPC,
                transport_api_version=ApiVersion.V3,
                grpc_services=[
                    GrpcService(
                        envoy_grpc=GrpcServiceEnvoyGrpc(
                            cluster_name=XDS_CLUSTER,
                            retry_policy=RetryPolicy(retry_back_off=backoff),
                        )
                    )
                ],
                set_node_on_first_message_only=True,
            ),
            cds_config=ads,
            lds_config=ads,
        ),
        static_resources=BootstrapStaticResources(clusters=[_xds_cluster(options)]),
    )


def bootstrap_dict(options: BootstrapOptions) -> dict[str, AnyValue]:
    """The bootstrap as plain data (JSON or YAML for Envoy's `-c`)."""
    return plain(build_bootstrap(options))


def _address(host: str, port: int) -> Address:
    return Address(socket_address=SocketAddress(address=host, port_value=port))


def _xds_cluster(options: BootstrapOptions) -> Cluster:
    try:
        ipaddress.ip_address(options.xds_host)
        discovery = ClusterDiscoveryType.STATIC
    except ValueError:
        discovery = ClusterDiscoveryType.STRICT_DNS
    http2 = HttpProtocolOptions(
        explicit_http_config=HttpProtocolOptionsExplicitHttpConfig(
            http2_protocol_options=Http2ProtocolOptions()
        )
    )
    endpoint = LbEndpoint(endpoint=Endpoint(address=_address(options.xds_host, options.xds_port)))
    return Cluster(
        name=XDS_CLUSTER,
        type=discovery,
        connect_timeout=timedelta(seconds=1),
        # gRPC needs HTTP/2 to the control plane.
        typed_extension_protocol_options={_HTTP_OPTIONS: Any.pack(http2)},
        load_assignment=ClusterLoadAssignment(
            cluster_name=XDS_CLUSTER,
            endpoints=[LocalityLbEndpoints(lb_endpoints=[endpoint])],
        ),
    )
