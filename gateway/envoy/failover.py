"""Failover inside the allowed set: one aggregate cluster per reachable ordered region list.

The decision filter names an ordered list of at most `max_attempts` allowed, usable regions
(the chosen one, then the others nearest first). Its route sends the request to an aggregate
cluster of exactly those regions, in that priority order, with a retry policy that moves to the
next priority on connect failure, reset or a 5xx before the response started. The request can
only reach clusters the aggregate names: it stays inside its allowed set by construction.

The lists are finite: masks come from the tables, origins are country centroids (the bundled
GeoIP database is country-level). The filter uses a list only if it is in `orders`; otherwise
it sends the request to the chosen region alone (still inside the set, without fallbacks).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import timedelta
from urllib.parse import urlsplit

from envoy_data_plane.envoy.config.cluster.v3 import (
    Cluster,
    ClusterCustomClusterType,
    ClusterLbPolicy,
)
from envoy_data_plane.envoy.config.core.v3 import (
    HeaderValue,
    HeaderValueOption,
    HeaderValueOptionHeaderAppendAction,
)
from envoy_data_plane.envoy.config.route.v3 import (
    HeaderMatcher,
    RetryPolicy,
    RetryPolicyRetryHostPredicate,
    RetryPolicyRetryPriority,
    Route,
    RouteAction,
    RouteMatch,
)
from envoy_data_plane.envoy.extensions.clusters.aggregate.v3 import ClusterConfig
from envoy_data_plane.envoy.extensions.retry.host.previous_hosts.v3 import PreviousHostsPredicate
from envoy_data_plane.envoy.extensions.retry.priority.previous_priorities.v3 import (
    PreviousPrioritiesConfig,
)
from envoy_data_plane.envoy.type.matcher.v3 import StringMatcher
from envoy_data_plane.google.protobuf import Any

from gateway.envoy.tables import DecisionTables
from regions.catalog import Region
from regions.geo import ISO_COUNTRY_CODES, country_centroid, haversine_km
from regions.selection import NEAR_TIER_KM

Order = tuple[str, ...]
ANSWERED_BY = "%UPSTREAM_METADATA(residency:region)%"


def _usable_masks(tables: DecisionTables) -> set[int]:
    """Every set of two or more usable regions a request can end with (up to 3 jurisdictions)."""
    serving = set(tables.models.values())
    found: set[int] = set()
    for by_class in tables.allow:
        for table in by_class.values():
            family = set(table.values())
            reachable = set(family)
            for _ in range(2):
                reachable |= {a & b for a in reachable for b in family}
            for mask in reachable:
                for models in serving:
                    usable = mask & tables.active & models
                    if usable & (usable - 1):
                        found.add(usable)
    return found


def reachable_orders(tables: DecisionTables, max_attempts: int) -> frozenset[Order]:
    """The ordered lists (two or more regions) the decision filter can name. Pure."""
    origins = {p for c in ISO_COUNTRY_CODES if (p := country_centroid(c)) is not None}
    orders: set[Order] = set()
    for usable in _usable_masks(tables):
        members = [i for i in range(len(tables.regions)) if usable >> i & 1]
        for lat, lon in origins:
            km = {i: haversine_km(lat, lon, *tables.coordinates[i]) for i in members}
            ranked = sorted(members, key=lambda i: (km[i], i))
            nearest = km[ranked[0]]
            tier = [i for i in ranked if km[i] - nearest <= NEAR_TIER_KM and tables.weights[i] > 0]
            for chosen in tier or ranked[:1]:
                order = [chosen, *(i for i in ranked if i != chosen)][:max_attempts]
                orders.add(tuple(tables.regions[i] for i in order))
    return frozenset(orders)


def routable(orders: Iterable[Order], regions: Mapping[str, Region]) -> frozenset[Order]:
    """The orders one route can serve: every region under the same base path (one rewrite)."""
    return frozenset(
        order
        for order in orders
        if len({urlsplit(regions[r].base_url).path.rstrip("/") for r in order}) == 1
    )


def order_key(order: Order) -> str:
    """The selector value naming an ordered list."""
    return ",".join(order)


def aggregate_name(order: Order) -> str:
    """The aggregate cluster of an ordered list."""
    return "failover_" + "__".join(order)


def aggregate_cluster(order: Order, cluster_names: list[str]) -> Cluster:
    """An aggregate cluster trying `cluster_names` in priority order."""
    return Cluster(
        name=aggregate_name(order),
        connect_timeout=timedelta(seconds=1),
        lb_policy=ClusterLbPolicy.CLUSTER_PROVIDED,
        cluster_type=ClusterCustomClusterType(
            name="envoy.clusters.aggregate",
            typed_config=Any.pack(ClusterConfig(clusters=cluster_names)),
        ),
    )


def failover_route(order: Order, selector: str, action: RouteAction) -> Route:
    """The route of an ordered list: its aggregate, retried region by region, in order.

    `action` is the first region's; its retry policy's per-try (first byte) timeout is kept."""
    per_try_timeout = action.retry_policy.per_try_timeout if action.retry_policy else None
    action.cluster = aggregate_name(order)
    action.retry_policy = RetryPolicy(
        per_try_timeout=per_try_timeout,
        # Envoy retries only before the response started: never after bytes reached the client.
        retry_on="connect-failure,reset,5xx",
        num_retries=len(order) - 1,
        retry_priority=RetryPolicyRetryPriority(
            name="envoy.retry_priorities.previous_priorities",
            typed_config=Any.pack(PreviousPrioritiesConfig(update_frequency=1)),
        ),
        retry_host_predicate=[
            RetryPolicyRetryHostPredicate(
                name="envoy.retry_host_predicates.previous_hosts",
                typed_config=Any.pack(PreviousHostsPredicate()),
            )
        ],
        host_selection_retry_max_attempts=3,
    )
    # The region that answered, from its endpoint's metadata (after a failover it is not the
    # chosen one the decision filter knows).
    answered = HeaderValueOption(
        header=HeaderValue(key="x-residency-region", value=ANSWERED_BY),
        append_action=HeaderValueOptionHeaderAppendAction.OVERWRITE_IF_EXISTS_OR_ADD,
    )
    return Route(
        name=f"failover:{order_key(order)}",
        response_headers_to_add=[answered],
        match=RouteMatch(
            prefix="/",
            headers=[
                HeaderMatcher(name=selector, string_match=StringMatcher(exact=order_key(order)))
            ],
        ),
        route=action,
    )
