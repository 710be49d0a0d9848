"""Envoy's OpenTelemetry tracer: the listener's tracing and the collector's cluster.

Envoy exports a server span per downstream request and a client span per upstream attempt
(`spawn_upstream_span`) over OTLP/gRPC, and propagates W3C `traceparent` to the region with the
attempt's span as parent. The residency decision's facts become span tags: Envoy reads them from
the request's dynamic metadata when the span ends, after the decision filter wrote them.
"""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import urlsplit

from envoy_data_plane.envoy.config.cluster.v3 import Cluster, ClusterDiscoveryType
from envoy_data_plane.envoy.config.common.mutation_rules.v3 import HeaderMutation
from envoy_data_plane.envoy.config.core.v3 import (
    Address,
    GrpcService,
    GrpcServiceEnvoyGrpc,
    HeaderValue,
    HeaderValueOption,
    HeaderValueOptionHeaderAppendAction,
    Http2ProtocolOptions,
    SocketAddress,
)
from envoy_data_plane.envoy.config.endpoint.v3 import (
    ClusterLoadAssignment,
    Endpoint,
    LbEndpoint,
    LocalityLbEndpoints,
)
from envoy_data_plane.envoy.config.trace.v3 import OpenTelemetryConfig, TracingHttp
from envoy_data_plane.envoy.extensions.filters.http.header_mutation.v3 import (
    HeaderMutation as HeaderMutationFilter,
)
from envoy_data_plane.envoy.extensions.filters.http.header_mutation.v3 import Mutations
from envoy_data_plane.envoy.extensions.filters.network.http_connection_manager.v3 import (
    HttpConnectionManagerTracing,
    HttpFilter,
)
from envoy_data_plane.envoy.extensions.upstreams.http.v3 import (
    HttpProtocolOptions,
    HttpProtocolOptionsExplicitHttpConfig,
)
from envoy_data_plane.envoy.type.metadata.v3 import (
    MetadataKey,
    MetadataKeyPathSegment,
    MetadataKind,
    MetadataKindHost,
    MetadataKindRequest,
)
from envoy_data_plane.envoy.type.tracing.v3 import CustomTag, CustomTagMetadata
from envoy_data_plane.google.protobuf import Any

COLLECTOR_CLUSTER = "otlp_collector"
DECISION_NAMESPACE = "envoy.filters.http.lua"
"""Where the decision filter stores the chosen region and the decision id (decision.lua)."""
RECORD_NAMESPACE = "residency"
"""Where it notes the routing record's facts: allowed set, policy version, tenant..."""
SPAN_TAGS: tuple[tuple[str, str, str], ...] = (
    ("residency.decision_id", DECISION_NAMESPACE, "decision"),
    ("residency.region", DECISION_NAMESPACE, "region"),
    ("residency.allowed", RECORD_NAMESPACE, "allowed"),
    ("residency.policy_version", RECORD_NAMESPACE, "policy_version"),
    ("residency.data_class", RECORD_NAMESPACE, "data_class"),
    ("residency.tenant", RECORD_NAMESPACE, "tenant"),
    ("residency.jurisdictions", RECORD_NAMESPACE, "jurisdictions"),
    ("residency.refusal", RECORD_NAMESPACE, "refusal"),
)
"""(span tag, metadata namespace, key) for each residency attribute Envoy's spans carry."""
ATTEMPT_REGION_TAG = "residency.upstream_region"
"""The region an attempt was sent to (the endpoint's metadata, translate._region_metadata); on
the request's span, the last one tried. `residency.region` is the decision's first choice."""
RESPONSE_TRACEPARENT = "00-%TRACE_ID%-%SPAN_ID%-01"
"""The `traceparent` returned to the client: Envoy's server span of the request. Envoy has no
operator for the sampled flag; it samples every request unless a client's parent says not to."""
_PROTOCOL_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"


def collector_address(endpoint: str) -> tuple[str, int]:
    """(host, port) of an OTLP/gRPC endpoint given as `http://host:port` or `host:port`.

    Envoy speaks plaintext gRPC to it: an https endpoint is refused, not silently downgraded."""
    url = urlsplit(endpoint if "//" in endpoint else f"//{endpoint}")
    if url.scheme not in ("", "http"):
        raise ValueError(f"OTLP endpoint {endpoint!r}: Envoy exports plaintext gRPC (http://)")
    if not url.hostname:
        raise ValueError(f"OTLP endpoint {endpoint!r} names no host")
    return url.hostname, url.port or 4317


def listener_tracing(service_name: str) -> HttpConnectionManagerTracing:
    """The HTTP connection manager's tracing: OpenTelemetry, every request, one span per try."""
    tracer = OpenTelemetryConfig(
        grpc_service=GrpcService(
            envoy_grpc=GrpcServiceEnvoyGrpc(cluster_name=COLLECTOR_CLUSTER),
            timeout=timedelta(seconds=1),
        ),
        service_name=service_name,
    )
    return HttpConnectionManagerTracing(
        provider=TracingHttp(name="envoy.tracers.opentelemetry", typed_config=Any.pack(tracer)),
        spawn_upstream_span=True,
        custom_tags=[
            *(_metadata_tag(*tag) for tag in SPAN_TAGS),
            _metadata_tag(ATTEMPT_REGION_TAG, RECORD_NAMESPACE, "region", host=True),
        ],
    )


def collector_cluster(endpoint: str, connect_timeout: float) -> Cluster:
    """The HTTP/2 cluster of the OTLP collector at `endpoint`."""
    host, port = collector_address(endpoint)
    http2 = HttpProtocolOptions(
        explicit_http_config=HttpProtocolOptionsExplicitHttpConfig(
            http2_protocol_options=Http2ProtocolOptions()
        )
    )
    address = Address(socket_address=SocketAddress(address=host, port_value=port))
    return Cluster(
        name=COLLECTOR_CLUSTER,
        type=ClusterDiscoveryType.STRICT_DNS,
        connect_timeout=timedelta(seconds=connect_timeout),
        typed_extension_protocol_options={_PROTOCOL_OPTIONS: Any.pack(http2)},
        load_assignment=ClusterLoadAssignment(
            cluster_name=COLLECTOR_CLUSTER,
            endpoints=[LocalityLbEndpoints(lb_endpoints=[LbEndpoint(endpoint=Endpoint(address))])],
        ),
    )


def traceparent_response_filter() -> HttpFilter:
    """Sets the response's `traceparent`, also on Envoy's own answers (the first filter sees
    the local replies of every later one)."""
    header = HeaderValueOption(
        header=HeaderValue(key="traceparent", value=RESPONSE_TRACEPARENT),
        append_action=HeaderValueOptionHeaderAppendAction.OVERWRITE_IF_EXISTS_OR_ADD,
    )
    mutation = HeaderMutationFilter(
        mutations=Mutations(response_mutations=[HeaderMutation(append=header)])
    )
    return HttpFilter(name="residency.trace_response", typed_config=Any.pack(mutation))


def _metadata_tag(tag: str, namespace: str, key: str, *, host: bool = False) -> CustomTag:
    kind = (
        MetadataKind(host=MetadataKindHost())
        if host
        else MetadataKind(request=MetadataKindRequest())
    )
    return CustomTag(
        tag=tag,
        metadata=CustomTagMetadata(
            kind=kind,
            metadata_key=MetadataKey(key=namespace, path=[MetadataKeyPathSegment(key=key)]),
        ),
    )
