"""One Envoy's ADS stream: what it subscribed to and accepted, and in what order it is updated.

State of the world over one stream, ordered make-before-break (Envoy's xDS protocol, "eventual
consistency considerations"; go-control-plane's ADS ordering):

1. CDS first, with the snapshot's clusters plus every cluster sent before that it no longer has
   (routes Envoy still runs may name them).
2. Only after Envoy ACKed (or NACKed) that CDS, the other types (LDS, then RDS). Envoy holds a
   CDS ACK back while a new cluster warms, so routes never name a cluster that is not ready.
3. Once Envoy accepted the snapshot's version of every other type, CDS again without the kept
   clusters: nothing names them any more.

A newer snapshot arriving half-way starts over from step 1 with what was sent so far. If Envoy
rejects the snapshot's routes or listeners, the kept clusters stay (the routes it still runs
name them) until a newer snapshot is accepted.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

from envoy_data_plane.envoy.service.discovery.v3 import DiscoveryRequest, DiscoveryResponse
from envoy_data_plane.google.protobuf import Any

logger = logging.getLogger(__name__)

Resources = Mapping[str, Sequence[tuple[str, Any]]]
"""Type URL -> (resource name, packed resource), as `EnvoyResources.by_type()` returns."""
CLUSTERS = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
_AFTER_CLUSTERS = (
    "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment",
    "type.googleapis.com/envoy.config.listener.v3.Listener",
    "type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
)
KEPT_SUFFIX = "+kept"
"""Version suffix of a CDS response that still carries clusters the snapshot removed."""
_WILDCARD = frozenset({"", "*"})


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One internally consistent set of resources of every type, under one version."""

    version: str
    resources: Resources


@dataclass(frozen=True, slots=True)
class TypeStatus:
    """What one Envoy did with one resource type: the version it accepted, the one it refused."""

    accepted: str | None
    rejected: str | None = None
    error: str | None = None


@dataclass(slots=True)
class _TypeState:
    names: frozenset[str] = frozenset()
    sent_version: str | None = None
    sent: Mapping[str, Any] = field(default_factory=dict)
    sent_nonce: str | None = None
    awaiting: bool = False
    resubscribed: bool = False
    status: TypeStatus = field(default_factory=lambda: TypeStatus(None))


class AdsStream:
    """One Envoy's ADS stream: its subscriptions, what it accepted, the next responses due."""

    def __init__(self, peer: str) -> None:
        self.peer = peer
        self.node_id = peer
        self.types: dict[str, _TypeState] = {}
        self._nonces = itertools.count(1)

    def statuses(self) -> Mapping[str, TypeStatus]:
        """Type URL -> what this Envoy accepted or rejected."""
        return MappingProxyType({t: s.status for t, s in self.types.items()})

    def on_request(
        self, request: DiscoveryRequest, snapshot: Snapshot | None
    ) -> list[DiscoveryResponse]:
        """Record a subscription, ACK or NACK; return the responses now due."""
        if request.node is not None and request.node.id:
            self.node_id = request.node.id
        state = self.types.setdefault(request.type_url, _TypeState())
        names = frozenset(request.resource_names) - _WILDCARD
        if request.response_nonce:
            if request.response_nonce != state.sent_nonce:
                return []  # answers a response we have since superseded
            self._acknowledge(request, state)
        elif request.version_info and state.sent_version is None:
            # A reconnecting Envoy says what it already runs (which resources: unknown here).
            state.status = TypeStatus(request.version_info)
            state.sent_version = request.version_info
        # A new subscription list needs an answer only if this stream has sent the type before.
        state.resubscribed |= state.sent_nonce is not None and names != state.names
        state.names = names
        return self.on_snapshot(snapshot) if snapshot is not None else []

    def on_snapshot(self, snapshot: Snapshot) -> list[DiscoveryResponse]:
        """The responses due to bring this Envoy one step nearer to `snapshot`."""
        clusters = self.types.get(CLUSTERS)
        if clusters is not None:
            version, resources = self._clusters_due(snapshot, clusters)
            if clusters.resubscribed or clusters.sent_version != version:
                return [self._response(CLUSTERS, clusters, version, resources)]
            if clusters.awaiting:
                return []  # Envoy ACKs CDS once the new clusters are warm: routes wait for it
        return [
            self._response(type_url, state, snapshot.version, self._wanted(snapshot, type_url))
            for type_url, state in sorted(self.types.items(), key=_update_order)
            if type_url != CLUSTERS
            and (state.resubscribed or state.sent_version != snapshot.version)
        ]

    def _clusters_due(
        self, snapshot: Snapshot, clusters: _TypeState
    ) -> tuple[str, list[tuple[str, Any]]]:
        wanted = self._wanted(snapshot, CLUSTERS)
        others_run_it = all(
            state.status.accepted == snapshot.version and not state.awaiting
            for type_url, state in self.types.items()
            if type_url != CLUSTERS
        )
        if others_run_it:
            return snapshot.version, wanted
        names = {name for name, _ in wanted}
        kept = [(name, packed) for name, packed in clusters.sent.items() if name not in names]
        if not kept:
            return snapshot.version, wanted
        return snapshot.version + KEPT_SUFFIX, wanted + kept

    def _wanted(self, snapshot: Snapshot, type_url: str) -> list[tuple[str, Any]]:
        names = self.types[type_url].names
        resources = snapshot.resources.get(type_url, ())
        return [(name, packed) for name, packed in resources if not names or name in names]

    def _acknowledge(self, request: DiscoveryRequest, state: _TypeState) -> None:
        state.awaiting = False
        error = request.error_detail
        if error is not None and (error.code or error.message):
            state.status = TypeStatus(state.status.accepted, state.sent_version, error.message)
            logger.warning(
                "Envoy %s rejected %s version %s (keeps %s): %s",
                self.node_id,
                short_type(request.type_url),
                state.sent_version,
                state.status.accepted,
                error.message,
            )
        else:
            state.status = TypeStatus(request.version_info)

    def _response(
        self, type_url: str, state: _TypeState, version: str, resources: list[tuple[str, Any]]
    ) -> DiscoveryResponse:
        state.sent_version = version
        state.sent = dict(resources)
        state.sent_nonce = str(next(self._nonces))
        state.awaiting = True
        state.resubscribed = False
        return DiscoveryResponse(
            version_info=version,
            resources=[packed for _, packed in resources],
            type_url=type_url,
            nonce=state.sent_nonce,
        )


def _update_order(item: tuple[str, _TypeState]) -> int:
    type_url = item[0]
    return _AFTER_CLUSTERS.index(type_url) if type_url in _AFTER_CLUSTERS else len(_AFTER_CLUSTERS)


def short_type(type_url: str) -> str:
    """`...v3.Cluster` -> `Cluster`: a resource type as logs and spans name it."""
    return type_url.rsplit(".", 1)[-1]
