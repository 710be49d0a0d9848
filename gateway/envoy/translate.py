"""Policy snapshot -> Envoy resources: one pure function, golden-tested, printed by the CLI.

The translator knows Envoy; the xDS server does not know where resources come from. Region
health is deliberately not an input: every Envoy health-checks its own clusters (active checks
plus outlier detection), so a probe result never changes the configuration or its version.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any as AnyValue
from typing import cast
from urllib.parse import urlsplit

import betterproto2
from envoy_data_plane.envoy.config.cluster.v3 import (
    Cluster,
    ClusterCommonLbConfig,
    ClusterDiscoveryType,
    ClusterDnsLookupFamily,
    OutlierDetection,
)
from envoy_data_plane.envoy.config.core.v3 import (
    Address,
    AggregatedConfigSource,
    ApiVersion,
    ConfigSource,
    DataSource,
    HeaderValue,
    HeaderValueOption,
    HeaderValueOptionHeaderAppendAction,
    HealthCheck,
    HealthCheckHttpHealthCheck,
    HttpProtocolOptions,
    Metadata,
    SocketAddress,
    TransportSocket,
)
from envoy_data_plane.envoy.config.endpoint.v3 import (
    ClusterLoadAssignment,
    Endpoint,
    LbEndpoint,
    LocalityLbEndpoints,
)
from envoy_data_plane.envoy.config.listener.v3 import Filter, FilterChain, Listener
from envoy_data_plane.envoy.config.route.v3 import (
    DirectResponseAction,
    HeaderMatcher,
    RetryPolicy,
    Route,
    RouteAction,
    RouteConfiguration,
    RouteMatch,
    VirtualHost,
)
from envoy_data_plane.envoy.extensions.filters.http.router.v3 import Router
from envoy_data_plane.envoy.extensions.filters.network.http_connection_manager.v3 import (
    HttpConnectionManager,
    HttpFilter,
    Rds,
)
from envoy_data_plane.envoy.extensions.transport_sockets.tls.v3 import (
    CertificateValidationContext,
    CommonTlsContext,
    SubjectAltNameMatcher,
    SubjectAltNameMatcherSanType,
    UpstreamTlsContext,
)
from envoy_data_plane.envoy.type.matcher.v3 import StringMatcher
from envoy_data_plane.envoy.type.v3 import Percent
from envoy_data_plane.google.protobuf import Any, Struct

from compliance.snapshot import PolicySnapshot
from gateway.envoy import proto_speed
from gateway.envoy.access_log import file_access_log
from gateway.envoy.client_address import original_ip_detection
from gateway.envoy.control_routes import control_cluster, control_route
from gateway.envoy.decision_filters import decision_filters, decision_route_config
from gateway.envoy.explain_tables import explanation_tables
from gateway.envoy.failover import (
    Order,
    aggregate_cluster,
    failover_route,
    reachable_orders,
    routable,
)
from gateway.envoy.limits import (
    EdgeLimits,
    body_limit_filter,
    connection_limit_filter,
)
from gateway.envoy.local_replies import local_reply_config
from gateway.envoy.tables import build_tables
from gateway.envoy.tracing import (
    collector_cluster,
    listener_tracing,
    traceparent_response_filter,
)
from regions.catalog import Region, RegionStatus

proto_speed.install()

LISTENER_NAME = "residency_http"
ROUTE_CONFIG_NAME = "residency_routes"
REGION_HEADER = "x-residency-region"
"""The cluster selector a route matches on. The in-Envoy decision (next step) strips any
client-sent value first and sets it; until then the listener must not face untrusted clients."""
METADATA_NAMESPACE = "residency"
LISTENER_TYPE = "type.googleapis.com/envoy.config.listener.v3.Listener"
ROUTE_TYPE = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
CLUSTER_TYPE = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
_NO_REGION_BODY = (
    '{"error":{"message":"no allowed region is available for this request",'
    '"type":"region_unavailable","param":null,"code":"no_healthy_region"}}'
)


@dataclass(frozen=True, slots=True)
class EnvoyOptions:
    """What the translation needs beyond the policy: listener, timeouts, health checking."""

    listener_address: str = "127.0.0.1"
    listener_port: int = 10000
    connect_timeout: float = 2.0
    stream_idle_timeout: float = 120.0
    """Longest silence of a region mid-answer (routes to regions; the settings' read timeout)."""
    first_byte_timeout: float = 60.0
    """Longest wait for a region's response headers before the next region is tried."""
    health_check_path: str = "/healthz"
    health_check_interval: float = 5.0
    trusted_hops: int = 0
    """Proxies in front of Envoy whose X-Forwarded-For entries are believed (0: none)."""
    ca_bundle: str = "/etc/ssl/certs/ca-certificates.crt"
    """CA certificates that https regions' certificates must chain to (Envoy has no default)."""
    decision_on: date | None = None
    """Decide inside Envoy with the policy as in force on this date (tables pushed over RDS).
    None: no decision filter - the selector header is then trusted, so such a listener must
    not face clients (the foundation's forwarding tests use it)."""
    max_attempts: int = 3
    """Regions one request may be tried in (the decision's failover list)."""
    geoip_database: str = ""
    """The country .mmdb Envoy's geoip filter reads (with `decision_on`)."""
    trusted_cidrs: tuple[str, ...] = ()
    """Networks whose X-Forwarded-For is believed, right-most untrusted hop first, as the Python
    path's GATEWAY_TRUSTED_PROXIES (used instead of `trusted_hops` when set)."""
    control_port: int | None = None
    """Loopback port of the Python app: every path but `inference_paths` is routed there."""
    inference_paths: tuple[str, ...] = ()
    """The paths the decision serves (with `control_port`); the rest is the Python app's."""
    access_log_path: str = ""
    """File Envoy writes one JSON line per request to (gateway.envoy.access_log); "": none."""
    limits: EdgeLimits = field(default_factory=EdgeLimits)
    """What one client may cost the listener (the Python data path's limits)."""
    otlp_endpoint: str = ""
    """OTLP/gRPC collector (`http://host:port`) Envoy exports its spans to (tracing.py); "": off."""
    otlp_service_name: str = "residency-gateway-envoy"
    """Service name on Envoy's spans."""


Packed = Mapping[str, tuple[tuple[str, Any], ...]]
"""Resources as a DiscoveryResponse carries them: type URL -> ((name, Any), ...)."""


@dataclass(frozen=True, slots=True)
class EnvoyResources:
    """One internally consistent set of resources: every route's cluster is in `clusters`."""

    version: str
    listeners: tuple[Listener, ...]
    routes: tuple[RouteConfiguration, ...]
    clusters: tuple[Cluster, ...]
    packed: Packed | None = field(default=None, compare=False, repr=False)
    """The same resources serialized (by `translate`, which packs each once); None: pack on use."""

    def by_type(self) -> Packed:
        """Resources packed for a DiscoveryResponse: type URL -> ((name, Any), ...)."""
        if self.packed is not None:
            return self.packed
        return pack(self.listeners, self.routes, self.clusters)

    def to_dict(self) -> dict[str, AnyValue]:
        """Plain data in Envoy's own (snake_case proto JSON) spelling, for golden files and CLI."""

        return {
            "version": self.version,
            "listeners": [plain(m) for m in self.listeners],
            "routes": [plain(m) for m in self.routes],
            "clusters": [plain(m) for m in self.clusters],
        }


def pack(
    listeners: tuple[Listener, ...],
    routes: tuple[RouteConfiguration, ...],
    clusters: tuple[Cluster, ...],
) -> Packed:
    """Serialize every resource once, into the Any a DiscoveryResponse carries."""
    return {
        LISTENER_TYPE: tuple((r.name, Any.pack(r)) for r in listeners),
        ROUTE_TYPE: tuple((r.name, Any.pack(r)) for r in routes),
        CLUSTER_TYPE: tuple((r.name, Any.pack(r)) for r in clusters),
    }


# betterproto2's SNAKE casing re-cases the field names (consecutive_5xx -> consecutive_5_xx),
# which Envoy would not read back; its attribute names already are the proto field names.
_PROTO_FIELD_NAMES = cast(betterproto2.Casing, lambda name: name)


def plain(message: betterproto2.Message) -> dict[str, AnyValue]:
    """A message as plain data with the proto field names Envoy's YAML and config_dump use."""
    return message.to_dict(casing=_PROTO_FIELD_NAMES)


def cluster_name(region_id: str) -> str:
    """The Envoy cluster of a region."""
    return f"region_{region_id}"


def translate(policy: PolicySnapshot, options: EnvoyOptions) -> EnvoyResources:
    """Compile a policy snapshot into Envoy resources, versioned by the policy version.

    The version is `<policy version>-<digest>`: it follows the policy version and still changes
    when only the options (say, the listener port) change."""
    served = [r for r in policy.regions if r.status is not RegionStatus.DISABLED]
    routed = [r for r in served if r.status is RegionStatus.ACTIVE]
    listeners = (_listener(options),)
    decision: dict[str, Any] = {}
    orders: frozenset[Order] = frozenset()
    if options.decision_on is not None:
        tables = build_tables(policy, options.decision_on)
        orders = routable(reachable_orders(tables, options.max_attempts), policy.region_by_id)
        explanation = explanation_tables(policy, tables, options.decision_on)
        decision = decision_route_config(tables, orders, options.max_attempts, explanation)
    by_id = policy.region_by_id
    failover = [
        failover_route(order, REGION_HEADER, _route_action(by_id[order[0]], options))
        for order in sorted(orders)
    ]
    control: list[Route] = []
    if options.control_port is not None:
        control.append(control_route(options.inference_paths))
    routes = (_route_configuration(routed, failover, decision, options, control),)
    clusters = tuple(_cluster(region, options) for region in served) + tuple(
        aggregate_cluster(order, [cluster_name(r) for r in order]) for order in sorted(orders)
    )
    if options.control_port is not None:
        clusters += (control_cluster(options.control_port, options.connect_timeout),)
    if options.otlp_endpoint:
        clusters += (collector_cluster(options.otlp_endpoint, options.connect_timeout),)
    packed = pack(listeners, routes, clusters)
    digest = hashlib.sha256()
    for type_url in (LISTENER_TYPE, ROUTE_TYPE, CLUSTER_TYPE):
        for _, message in packed[type_url]:
            digest.update(message.value)  # the message's own bytes: serialized once, here
    version = f"{policy.version}-{digest.hexdigest()[:12]}"
    return EnvoyResources(version, listeners, routes, clusters, packed)


def _seconds(value: float) -> timedelta:
    return timedelta(seconds=value)


def _listener(options: EnvoyOptions) -> Listener:
    limits = options.limits
    manager = HttpConnectionManager(
        stat_prefix="residency",
        rds=Rds(
            config_source=ConfigSource(
                ads=AggregatedConfigSource(), resource_api_version=ApiVersion.V3
            ),
            route_config_name=ROUTE_CONFIG_NAME,
        ),
        # The client address comes from the connection or the configured trusted hops,
        # never from a header the client chose.
        # (Envoy refuses use_remote_address beside an original-IP detection extension.)
        use_remote_address=not options.trusted_cidrs,
        xff_num_trusted_hops=0 if options.trusted_cidrs else options.trusted_hops,
        original_ip_detection_extensions=original_ip_detection(options.trusted_cidrs),
        # Until a region is chosen, silence is the client's (a stalled body); region routes
        # set the upstream read timeout in its place (their idle_timeout).
        stream_idle_timeout=_seconds(limits.body_idle_timeout),
        request_headers_timeout=_seconds(limits.header_timeout),
        max_request_headers_kb=limits.header_kib,
        # A connection that sends nothing (or nothing more) is closed, as the Python path does.
        common_http_protocol_options=HttpProtocolOptions(
            idle_timeout=_seconds(limits.header_timeout)
        ),
        local_reply_config=local_reply_config(limits),
        access_log=[file_access_log(options.access_log_path)] if options.access_log_path else [],
        tracing=listener_tracing(options.otlp_service_name) if options.otlp_endpoint else None,
        http_filters=[
            *([traceparent_response_filter()] if options.otlp_endpoint else []),
            body_limit_filter(limits),
            *(decision_filters(options.geoip_database) if options.decision_on else []),
            HttpFilter(name="envoy.filters.http.router", typed_config=Any.pack(Router())),
        ],
    )
    address = SocketAddress(address=options.listener_address, port_value=options.listener_port)
    return Listener(
        name=LISTENER_NAME,
        address=Address(socket_address=address),
        filter_chains=[
            FilterChain(
                filters=[
                    connection_limit_filter(limits),
                    Filter(
                        name="envoy.filters.network.http_connection_manager",
                        typed_config=Any.pack(manager),
                    ),
                ]
            )
        ],
    )


def _route_configuration(
    routed: list[Region],
    failover: list[Route],
    decision: dict[str, Any],
    options: EnvoyOptions,
    first: list[Route],
) -> RouteConfiguration:
    routes = first + [
        Route(
            name=region.id,
            match=RouteMatch(
                prefix="/",
                headers=[
                    HeaderMatcher(name=REGION_HEADER, string_match=StringMatcher(exact=region.id))
                ],
            ),
            route=_route_action(region, options),
        )
        for region in routed
    ]
    routes.extend(failover)
    # Fail closed: a request no region was chosen for is answered here, never forwarded.
    routes.append(
        Route(
            name="no_region",
            match=RouteMatch(prefix="/"),
            # The decision runs here (its code and tables): the route undecided requests match.
            typed_per_filter_config=decision,
            direct_response=DirectResponseAction(
                status=503, body=DataSource(inline_string=_NO_REGION_BODY)
            ),
            response_headers_to_add=[
                HeaderValueOption(
                    header=HeaderValue(key="content-type", value="application/json"),
                    append_action=HeaderValueOptionHeaderAppendAction.OVERWRITE_IF_EXISTS_OR_ADD,
                )
            ],
        )
    )
    return RouteConfiguration(
        name=ROUTE_CONFIG_NAME,
        virtual_hosts=[VirtualHost(name="residency", domains=["*"], routes=routes)],
    )


def _route_action(region: Region, options: EnvoyOptions) -> RouteAction:
    base_path = urlsplit(region.base_url).path.rstrip("/")
    return RouteAction(
        cluster=cluster_name(region.id),
        # Streams last as long as they keep sending; the idle timeout bounds a silent region.
        timeout=timedelta(0),
        idle_timeout=_seconds(options.stream_idle_timeout),
        # Envoy ignores a try's timeout once the client got the response headers, so this
        # bounds the wait for the first byte only (failover routes retry on it).
        retry_policy=RetryPolicy(per_try_timeout=_seconds(options.first_byte_timeout)),
        prefix_rewrite=f"{base_path}/" if base_path else "",
        auto_host_rewrite=True,
    )


def _region_metadata(region: Region) -> Metadata:
    fields = {"region": region.id, "country": region.country}
    return Metadata(filter_metadata={METADATA_NAMESPACE: Struct.from_dict(fields)})


def _cluster(region: Region, options: EnvoyOptions) -> Cluster:
    url = urlsplit(region.base_url)
    host = url.hostname or ""
    tls = url.scheme == "https"
    port = url.port or (443 if tls else 80)
    endpoint = LbEndpoint(
        endpoint=Endpoint(
            address=Address(socket_address=SocketAddress(address=host, port_value=port))
        ),
        metadata=_region_metadata(region),
    )
    return Cluster(
        name=cluster_name(region.id),
        type=ClusterDiscoveryType.STATIC if _is_ip(host) else ClusterDiscoveryType.LOGICAL_DNS,
        dns_lookup_family=ClusterDnsLookupFamily.V4_PREFERRED,
        connect_timeout=_seconds(options.connect_timeout),
        load_assignment=ClusterLoadAssignment(
            cluster_name=cluster_name(region.id),
            endpoints=[LocalityLbEndpoints(lb_endpoints=[endpoint])],
        ),
        health_checks=[
            HealthCheck(
                timeout=_seconds(min(1.0, options.health_check_interval)),
                interval=_seconds(options.health_check_interval),
                # Envoy's default checks a region without traffic once a minute only: a
                # failover target must be known down before a request needs it.
                no_traffic_interval=_seconds(options.health_check_interval),
                unhealthy_threshold=2,
                healthy_threshold=1,
                http_health_check=HealthCheckHttpHealthCheck(path=options.health_check_path),
            )
        ],
        outlier_detection=OutlierDetection(
            consecutive_5xx=5,
            consecutive_gateway_failure=3,
            interval=_seconds(5),
            base_ejection_time=_seconds(30),
            # One host per region: ejecting it must be possible, failover happens across regions.
            max_ejection_percent=100,
        ),
        # Envoy's default panic mode would send to an unhealthy sole host anyway: fail over instead.
        common_lb_config=ClusterCommonLbConfig(healthy_panic_threshold=Percent(value=0.0)),
        metadata=_region_metadata(region),
        transport_socket=_tls(host, options.ca_bundle) if tls else None,
    )


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _tls(host: str, ca_bundle: str) -> TransportSocket:
    context = UpstreamTlsContext(
        sni=host,
        common_tls_context=CommonTlsContext(
            validation_context=CertificateValidationContext(
                trusted_ca=DataSource(filename=ca_bundle),
                # Envoy verifies no name unless told: the region's certificate must name its host.
                match_typed_subject_alt_names=[
                    SubjectAltNameMatcher(
                        san_type=SubjectAltNameMatcherSanType.DNS,
                        matcher=StringMatcher(exact=host),
                    )
                ],
            )
        ),
    )
    return TransportSocket(name="envoy.transport_sockets.tls", typed_config=Any.pack(context))
