"""The one-endpoint promise under `serve --data-plane envoy`: every path that is not inference
(admin, audit, console, metrics, health, models, explain) goes to the Python app on loopback.

Inference paths never match here: they reach the in-Envoy decision. Anything that slips past
the path match (say, a percent-encoded inference path) still lands on the Python app, which
refuses inference on its control port (`gateway.envoy.serve.ControlOnly`): fail closed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import timedelta

from envoy_data_plane.envoy.config.cluster.v3 import Cluster, ClusterDiscoveryType
from envoy_data_plane.envoy.config.core.v3 import (
    Address,
    HeaderValue,
    HeaderValueOption,
    HeaderValueOptionHeaderAppendAction,
    SocketAddress,
)
from envoy_data_plane.envoy.config.endpoint.v3 import (
    ClusterLoadAssignment,
    Endpoint,
    LbEndpoint,
    LocalityLbEndpoints,
)
from envoy_data_plane.envoy.config.route.v3 import (
    FilterConfig,
    HeaderMatcher,
    Route,
    RouteAction,
    RouteMatch,
)
from envoy_data_plane.envoy.type.matcher.v3 import RegexMatcher, StringMatcher
from envoy_data_plane.google.protobuf import Any

CONTROL_CLUSTER = "residency_control"
CONTROL_HOST = "127.0.0.1"
_DECISION_FILTERS = ("envoy.filters.http.json_to_metadata", "envoy.filters.http.lua")
"""Filters that have no business on a control request (the model parse and the decision)."""


def inference_path_regex(paths: Iterable[str]) -> str:
    """RE2 matching `:path` (query string included) for exactly these paths."""
    alternatives = "|".join(re.escape(p) for p in sorted(paths))
    return rf"^({alternatives})(\?.*)?$"


def control_route(inference_paths: Iterable[str]) -> Route:
    """Every request whose path is not an inference path, to the Python app, undecided."""
    disabled = Any.pack(FilterConfig(disabled=True))
    return Route(
        name="control",
        match=RouteMatch(
            prefix="/",
            headers=[
                HeaderMatcher(
                    name=":path",
                    string_match=StringMatcher(
                        safe_regex=RegexMatcher(regex=inference_path_regex(inference_paths))
                    ),
                    invert_match=True,
                )
            ],
        ),
        # Long admin calls (`regions drain --wait`) are bounded by the stream idle timeout.
        route=RouteAction(cluster=CONTROL_CLUSTER, timeout=timedelta(0)),
        # The app (trusting loopback) sees the client Envoy decided on, not what it was sent.
        request_headers_to_add=[
            HeaderValueOption(
                header=HeaderValue(
                    key="x-forwarded-for", value="%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%"
                ),
                append_action=HeaderValueOptionHeaderAppendAction.OVERWRITE_IF_EXISTS_OR_ADD,
            )
        ],
        typed_per_filter_config=dict.fromkeys(_DECISION_FILTERS, disabled),
    )


def control_cluster(port: int, connect_timeout: float) -> Cluster:
    """The Python app on loopback `port`."""
    endpoint = LbEndpoint(
        endpoint=Endpoint(
            address=Address(socket_address=SocketAddress(address=CONTROL_HOST, port_value=port))
        )
    )
    return Cluster(
        name=CONTROL_CLUSTER,
        type=ClusterDiscoveryType.STATIC,
        connect_timeout=timedelta(seconds=connect_timeout),
        load_assignment=ClusterLoadAssignment(
            cluster_name=CONTROL_CLUSTER, endpoints=[LocalityLbEndpoints(lb_endpoints=[endpoint])]
        ),
    )
