"""ADS over grpcio, state of the world: a transport for the snapshots it is handed, nothing more.

Where resources come from is not this module's business (see `translate`). Each connected
Envoy gets the latest snapshot; its ACKs and NACKs are tracked per type. A NACK is logged with
Envoy's own message and nothing is re-sent until a newer snapshot arrives. Envoy never runs a
rejected resource, but it does apply the valid resources of a rejected CDS/LDS response (and
removes the ones it no longer names): the status keeps the last version Envoy accepted whole.
Nothing is rolled back on a NACK on purpose: re-sending the previous snapshot would bring back
regions the new policy removed. The order of the responses on each stream (make-before-break,
so a route never names a missing or cold cluster) is `xds_stream`'s.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from types import MappingProxyType

import grpc
from envoy_data_plane.envoy.service.discovery.v3 import DiscoveryRequest, DiscoveryResponse
from opentelemetry import trace
from opentelemetry.trace import Tracer

from gateway.envoy.xds_stream import AdsStream, Resources, Snapshot, TypeStatus, short_type

__all__ = ["METHOD", "SERVICE", "Resources", "Snapshot", "TypeStatus", "XdsServer"]
logger = logging.getLogger(__name__)

SERVICE = "envoy.service.discovery.v3.AggregatedDiscoveryService"
METHOD = "StreamAggregatedResources"
TRACER_NAME = "residency_gateway.xds"


class _Closed:
    """Queue marker: the stream ended (Envoy went away or the server stops)."""


class _Stream(AdsStream):
    """An `AdsStream` with the queue its handler thread serves."""

    def __init__(self, peer: str) -> None:
        super().__init__(peer)
        self.inbox: queue.SimpleQueue[DiscoveryRequest | Snapshot | _Closed] = queue.SimpleQueue()


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
                    **{
                        f"xds.resources.{short_type(t)}": len(r)
                        for t, r in snapshot.resources.items()
                    },
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
        statuses = stream.statuses()
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
