"""ADS over grpcio, state of the world: a transport for the snapshots it is handed, nothing more.

Where resources come from is not this module's business (see `translate`). Each connected
Envoy gets the latest snapshot; its ACKs and NACKs are tracked per type. A NACK is logged with
Envoy's own message and nothing is re-sent until a newer snapshot arrives. Envoy never runs a
rejected resource, but it does apply the valid resources of a rejected CDS/LDS response (and
removes the ones it no longer names): the status keeps the last version Envoy accepted whole.
Nothing is rolled back on a NACK on purpose: re-sending the previous snapshot would bring back
regions the new policy removed.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from types import MappingProxyType

import grpc
from envoy_data_plane.envoy.service.discovery.v3 import DiscoveryRequest, DiscoveryResponse
from envoy_data_plane.google.protobuf import Any
from opentelemetry import trace
from opentelemetry.trace import Tracer

logger = logging.getLogger(__name__)

SERVICE = "envoy.service.discovery.v3.AggregatedDiscoveryService"
METHOD = "StreamAggregatedResources"
Resources = Mapping[str, Sequence[tuple[str, Any]]]
"""Type URL -> (resource name, packed resource), as `EnvoyResources.by_type()` returns."""
_WILDCARD = frozenset({"", "*"})
TRACER_NAME = "residency_gateway.xds"


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
    sent_nonce: str | None = None
    status: TypeStatus = field(default_factory=lambda: TypeStatus(None))


class _Closed:
    """Queue marker: the stream ended (Envoy went away or the server stops)."""


class _Stream:
    """One Envoy's ADS stream: its subscriptions and what it accepted, per type."""

    def __init__(self, peer: str) -> None:
        self.peer = peer
        self.node_id = peer
        self.inbox: queue.SimpleQueue[DiscoveryRequest | Snapshot | _Closed] = queue.SimpleQueue()
        self.types: dict[str, _TypeState] = {}
        self._nonces = itertools.count(1)

    def on_request(
        self, request: DiscoveryRequest, snapshot: Snapshot | None
    ) -> list[DiscoveryResponse]:
        if request.node is not None and request.node.id:
            self.node_id = request.node.id
        state = self.types.setdefault(request.type_url, _TypeState())
        names = frozenset(request.resource_names) - _WILDCARD
        if request.response_nonce:
            if request.response_nonce != state.sent_nonce:
                return []  # answers a response we have since superseded
            self._acknowledge(request, state)
        elif request.version_info:
            # A reconnecting Envoy says what it already runs.
            state.status = TypeStatus(request.version_info)
        # A new subscription list needs an answer only if this stream has sent the type before:
        # a reconnecting Envoy that names what it already runs at our version needs nothing.
        renamed = state.sent_version is not None and names != state.names
        state.names = names
        if snapshot is None:
            return []
        current = state.sent_version or (None if request.response_nonce else request.version_info)
        if current == snapshot.version and not renamed:
            return []
        return [self._response(request.type_url, state, snapshot)]

    def on_snapshot(self, snapshot: Snapshot) -> list[DiscoveryResponse]:
        return [
            self._response(type_url, state, snapshot)
            for type_url, state in self.types.items()
            if state.sent_version != snapshot.version
        ]

    def _acknowledge(self, request: DiscoveryRequest, state: _TypeState) -> None:
        error = request.error_detail
        if error is not None and (error.code or error.message):
            state.status = TypeStatus(state.status.accepted, state.sent_version, error.message)
            logger.warning(
                "Envoy %s rejected %s version %s (keeps %s): %s",
                self.node_id,
                _short(request.type_url),
                state.sent_version,
                state.status.accepted,
                error.message,
            )
        else:
            state.status = TypeStatus(request.version_info)

    def _response(self, type_url: str, state: _TypeState, snapshot: Snapshot) -> DiscoveryResponse:
        resources = snapshot.resources.get(type_url, ())
        if state.names:
            resources = [(name, packed) for name, packed in resources if name in state.names]
        state.sent_version = snapshot.version
        state.sent_nonce = str(next(self._nonces))
        return DiscoveryResponse(
            version_info=snapshot.version,
            resources=[packed for _, packed in resources],
            type_url=type_url,
            nonce=state.sent_nonce,
        )


def _short(type_url: str) -> str:
    return type_url.rsplit(".", 1)[-1]


class XdsServer:
    """An ADS server on `host:port` (port 0: any free port) serving `set_snapshot`'s snapshots.

    `tracer` records a span per snapshot push (default: the global provider's, a no-op unless
    one is set)."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        max_streams: int = 64,
        tracer: Tracer | None = None,
    ) -> None:
        self._host, self._port = host, port
        self._tracer = tracer or trace.get_tracer(TRACER_NAME)
        self._lock = threading.Lock()
        self._snapshot: Snapshot | None = None
        self._streams: set[_Stream] = set()
        self._statuses: dict[str, Mapping[str, TypeStatus]] = {}
        # Each stream holds one handler thread and one reader thread for its whole life.
        self._server = grpc.server(
            ThreadPoolExecutor(max_workers=max_streams, thread_name_prefix="xds"),
            maximum_concurrent_rpcs=max_streams,
        )
        handler = grpc.stream_stream_rpc_method_handler(
            self._serve_stream,
            request_deserializer=DiscoveryRequest.parse,
            response_serializer=bytes,
        )
        self._server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(SERVICE, {METHOD: handler}),)
        )
        self.port = 0
        self.responses_sent = 0
        """DiscoveryResponses sent on all streams since start (a counter for tests and metrics)."""

    def start(self) -> int:
        """Listen and serve; returns the bound port."""
        self.port = self._server.add_insecure_port(f"{self._host}:{self._port}")
        self._server.start()
        return self.port

    def stop(self, grace: float = 1.0) -> None:
        """Close every stream and stop listening."""
        with self._lock:
            streams = list(self._streams)
        for stream in streams:
            stream.inbox.put(_Closed())
        self._server.stop(grace).wait(grace + 1.0)

    def set_snapshot(self, version: str, resources: Resources) -> None:
        """Serve this snapshot from now on and push it to every connected Envoy at once."""
        snapshot = Snapshot(version, MappingProxyType({k: tuple(v) for k, v in resources.items()}))
        with self._tracer.start_as_current_span("xds.push") as span:
            with self._lock:
                self._snapshot = snapshot
                streams = list(self._streams)
            for stream in streams:
                stream.inbox.put(snapshot)
            span.set_attributes(
                {
                    "xds.version": version,
                    "xds.envoys": sorted(stream.node_id for stream in streams),
                    **{f"xds.resources.{_short(t)}": len(r) for t, r in snapshot.resources.items()},
                }
            )

    @property
    def version(self) -> str | None:
        """The version being served (None before the first snapshot)."""
        snapshot = self._snapshot
        return snapshot.version if snapshot else None

    def statuses(self) -> Mapping[str, Mapping[str, TypeStatus]]:
        """Node id -> type URL -> what that Envoy accepted or rejected (connected or not)."""
        with self._lock:
            return dict(self._statuses)

    def connected(self) -> frozenset[str]:
        """Node ids of the Envoys with an open stream."""
        with self._lock:
            return frozenset(stream.node_id for stream in self._streams)

    def _serve_stream(
        self, requests: Iterator[DiscoveryRequest], context: grpc.ServicerContext
    ) -> Iterator[DiscoveryResponse]:
        stream = _Stream(context.peer())
        context.add_callback(lambda: stream.inbox.put(_Closed()))
        threading.Thread(
            target=_read_requests, args=(requests, stream), name="xds-reader", daemon=True
        ).start()
        with self._lock:
            self._streams.add(stream)
        try:
            while not isinstance(item := stream.inbox.get(), _Closed):
                snapshot = self._snapshot
                if isinstance(item, DiscoveryRequest):
                    responses = stream.on_request(item, snapshot)
                elif item is snapshot:  # an older queued snapshot was already superseded
                    responses = stream.on_snapshot(item)
                else:
                    responses = []
                self._record(stream, len(responses))
                yield from responses
        finally:
            with self._lock:
                self._streams.discard(stream)
            logger.info("Envoy %s disconnected from ADS", stream.node_id)

    def _record(self, stream: _Stream, responses: int) -> None:
        statuses = MappingProxyType({t: s.status for t, s in stream.types.items()})
        with self._lock:
            self._statuses[stream.node_id] = statuses
            self.responses_sent += responses


def _read_requests(requests: Iterator[DiscoveryRequest], stream: _Stream) -> None:
    try:
        for request in requests:
            stream.inbox.put(request)
    except grpc.RpcError:
        pass  # the stream ended; the handler is told below
    finally:
        stream.inbox.put(_Closed())
