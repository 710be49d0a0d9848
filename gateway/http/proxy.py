"""The data path: route each inference request and forward it, byte for byte, to its region."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from opentelemetry.trace import SpanKind, Status, StatusCode

from compliance.audit.spool import SpoolError
from gateway.errors import ApiError
from gateway.exchange import Exchange, ExchangeRecorder
from gateway.http.asgi import RawHeaders, Receive, Scope, Send, header, openai_error, send_json
from gateway.http.relay import ClientWatch, NothingRelayed, relay
from gateway.http.request_body import read_body
from gateway.http.upstream import UpstreamError, UpstreamResponse
from gateway.intake import authenticate, new_request_id, parse_inference_body
from gateway.routing.decide import decide
from gateway.routing.decision import Outcome
from gateway.routing.failover import still_allowed
from gateway.routing.snapshot import RoutingSnapshot
from gateway.telemetry.tracing import RequestTrace

if TYPE_CHECKING:
    from gateway.auth_throttle import AuthGuard
    from gateway.http.inflight import InFlight
    from gateway.http.upstream import UpstreamClient
    from gateway.intake import FactsBuilder
    from gateway.telemetry.metrics import GatewayMetrics
    from gateway.telemetry.tracing import DataPathTracer

logger = logging.getLogger(__name__)

INFERENCE_PATHS = frozenset({"/v1/chat/completions", "/v1/completions", "/v1/embeddings"})
_FORWARDED_HEADERS = frozenset(
    {b"content-type", b"accept", b"user-agent", b"x-request-id", b"openai-beta", b"idempotency-key"}
)
_REFUSAL_TYPES = {
    Outcome.REFUSED: ("residency_violation", "no_allowed_region"),
    Outcome.UNAVAILABLE: ("region_unavailable", "no_healthy_region"),
    Outcome.MODEL_NOT_FOUND: ("invalid_request_error", "model_not_found"),
    Outcome.UPSTREAM_ERROR: ("upstream_error", "all_attempts_failed"),
}


class UpstreamStreamBroken(Exception):
    """A region broke off after bytes reached the client: the connection is aborted."""


class _Forwarding:
    """What every attempt of one forwarded request shares."""

    __slots__ = ("body", "exchange", "forwarded", "headers", "send", "span", "watch")

    def __init__(
        self,
        send: Send,
        exchange: Exchange,
        body: bytes,
        forwarded: list[tuple[str, str]],
        headers: RawHeaders,
        span: RequestTrace,
    ) -> None:
        self.send = send
        self.exchange = exchange
        self.body = body
        self.forwarded = forwarded
        self.headers = headers
        self.span = span
        self.watch: ClientWatch

    async def deliver(self) -> None:
        """Log the answer as delivered; runs just before the message that completes its body."""
        self.watch.disarm()  # the answer is complete: from here the client's leaving is moot
        await self.exchange.answered()


class InferenceProxy:
    """Pure-ASGI endpoint for chat completions, completions and embeddings."""

    def __init__(
        self,
        snapshot: Callable[[], RoutingSnapshot],
        *,
        auth_guard: AuthGuard,
        facts: FactsBuilder,
        upstream: UpstreamClient,
        inflight: InFlight,
        recorder: ExchangeRecorder,
        tracer: DataPathTracer,
        metrics: GatewayMetrics,
        max_body_bytes: int,
        max_attempts: int,
    ) -> None:
        """`snapshot` returns the snapshot a new request decides against (or raises)."""
        self._snapshot = snapshot
        self._auth_guard = auth_guard
        self._facts = facts
        self._upstream = upstream
        self._inflight = inflight
        self._recorder = recorder
        self._tracer = tracer
        self._metrics = metrics
        self._max_body_bytes = max_body_bytes
        self._max_attempts = max_attempts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        span = self._tracer.start(
            header(scope, b"traceparent"),
            {"http.request.method": scope["method"], "url.path": scope["path"]},
        )
        try:
            await self._handle(scope, receive, send, span, started)
        finally:
            span.end()

    async def _handle(
        self, scope: Scope, receive: Receive, send: Send, span: RequestTrace, started: float
    ) -> None:
        snapshot = self._snapshot()
        request_id = new_request_id()
        trace_header = (b"traceparent", span.traceparent().encode())
        headers: RawHeaders = [(b"x-residency-decision", request_id.encode()), trace_header]
        try:
            if scope["method"] != "POST":
                raise ApiError(405, f"{scope['path']} accepts POST only", "method_not_allowed")
            # Authenticate first: an unknown client never makes the gateway read its body.
            tenant = authenticate(scope, snapshot.policy, self._auth_guard)
            body = await read_body(scope, receive, self._max_body_bytes)
            parsed = parse_inference_body(body)
            facts = self._facts.build(scope, tenant, parsed.model, request_id)
        except ApiError as rejected:
            span.set_attribute("http.response.status_code", rejected.status)
            span.set_status(Status(StatusCode.ERROR, rejected.code))
            # No decision was made, so no routing record exists: no x-residency-decision.
            await send_json(
                send,
                rejected.status,
                openai_error(
                    rejected.message, "invalid_request_error", rejected.code, param=rejected.param
                ),
                [trace_header, *((k.encode(), v.encode()) for k, v in rejected.headers.items())],
            )
            return
        decision = decide(facts, snapshot)
        span.record_decision(decision)
        exchange = Exchange(decision, self._recorder, trace_id=span.trace_id_hex, started=started)
        if decision.outcome is not Outcome.ROUTED:
            await self._refuse(send, exchange, decision.outcome, headers, span)
            return
        await self._forward(scope, receive, send, exchange, snapshot, body, headers, span)

    async def _refuse(
        self,
        send: Send,
        exchange: Exchange,
        outcome: Outcome,
        headers: RawHeaders,
        span: RequestTrace,
    ) -> None:
        decision = exchange.decision
        error_type, code = _REFUSAL_TYPES[outcome]
        status = 502 if outcome is Outcome.UPSTREAM_ERROR else decision.http_status
        message = "; ".join(decision.reasons)
        if exchange.attempts:
            message = "every allowed region failed: " + ", ".join(
                f"{a.region} ({a.result})" for a in exchange.attempts
            )
        body = openai_error(
            message,
            error_type,
            code,
            decision_id=decision.id,
            reasons=list(decision.reasons),
            residency=decision.to_dict(),
        )
        span.set_attribute("http.response.status_code", status)
        span.set_status(Status(StatusCode.ERROR, code))
        await exchange.finish(outcome, status)
        await send_json(send, status, body, headers)

    async def _forward(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        exchange: Exchange,
        snapshot: RoutingSnapshot,
        body: bytes,
        headers: RawHeaders,
        span: RequestTrace,
    ) -> None:
        decision = exchange.decision
        route = decision.route()[: self._max_attempts]
        path = scope["path"]
        query = scope.get("query_string", b"")
        if query:
            path = f"{path}?{query.decode('latin-1')}"
        forwarded = [
            (k.decode("latin-1"), v.decode("latin-1"))
            for k, v in scope["headers"]
            if k in _FORWARDED_HEADERS
        ]
        forwarded.append(("x-residency-decision", decision.id))
        try:
            await exchange.begin()
        except SpoolError as exc:  # fail closed: a decision that is not durable never leaves
            logger.error("decision %s not forwarded: %s", decision.id, exc)
            span.set_attribute("http.response.status_code", 503)
            span.set_status(Status(StatusCode.ERROR, "routing_log_unavailable"))
            refusal = openai_error(
                "the routing log cannot record this decision, so the request was not forwarded",
                "server_error",
                "routing_log_unavailable",
                decision_id=decision.id,
            )
            await send_json(send, 503, refusal, headers)
            return
        request = _Forwarding(send, exchange, body, forwarded, headers, span)
        request.watch = ClientWatch(receive)  # a client that leaves cancels the exchange: 499
        try:
            for number, region_id in enumerate(route, start=1):
                if number > 1 and not still_allowed(decision, region_id, self._snapshot()):
                    exchange.skip(region_id, "no_longer_allowed")
                    continue
                region = snapshot.policy.region_by_id[region_id]
                url = region.base_url.rstrip("/") + path
                if await self._attempt(request, url, region_id, number, number == len(route)):
                    return
            request.watch.disarm()
            await self._refuse(send, exchange, Outcome.UPSTREAM_ERROR, headers, span)
        finally:
            request.watch.close()

    async def _attempt(
        self, request: _Forwarding, url: str, region_id: str, number: int, last: bool
    ) -> bool:
        """One try at one region; False if it failed before the client got anything.

        Each try is one entry in the record's attempts, and sends the request once.
        """
        exchange, span, watch = request.exchange, request.span, request.watch
        with (
            self._inflight.track(region_id),  # until the answer or stream ends: drain waits
            span.span(
                "upstream.attempt",
                SpanKind.CLIENT,
                {"residency.region": region_id, "upstream.attempt": number},
            ) as attempt_span,
        ):
            traceparent = ("traceparent", span.traceparent(attempt_span.span_id))
            exchange.try_region(region_id)
            response: UpstreamResponse | None = None
            try:
                try:
                    response = await self._upstream.send(
                        url, [*request.forwarded, traceparent], request.body
                    )
                except UpstreamError as exc:
                    exchange.attempt_failed(exc.kind.value)
                    attempt_span.set_attribute("upstream.outcome", exc.kind.value)
                    attempt_span.set_status(Status(StatusCode.ERROR, exc.detail))
                    return False
                exchange.responded(response.status)
                if response.status >= 500 and not last:  # released below, unread
                    exchange.attempt_failed("http_5xx")
                    attempt_span.set_attribute("upstream.outcome", "http_5xx")
                    attempt_span.set_attribute("http.response.status_code", response.status)
                    return False
                attempt_span.set_attribute("upstream.outcome", "response")
                attempt_span.set_attribute("http.response.status_code", response.status)
                served_headers = [*request.headers, (b"x-residency-region", region_id.encode())]
                span.set_attribute("residency.served_region", region_id)
                span.set_attribute("http.response.status_code", response.status)
                try:
                    first_chunk_at = await relay(
                        request.send, response, served_headers, request.deliver, exchange
                    )
                except NothingRelayed as exc:  # the client has nothing yet: try the next
                    span.unset_attribute("residency.served_region")
                    exchange.attempt_failed(exc.error.kind.value)
                    attempt_span.set_attribute("upstream.outcome", exc.error.kind.value)
                    attempt_span.set_status(Status(StatusCode.ERROR, exc.error.detail))
                    return False
                except UpstreamError as exc:
                    watch.disarm()
                    exchange.attempt_failed(f"broken_stream:{exc.kind.value}")
                    attempt_span.set_status(Status(StatusCode.ERROR, exc.detail))
                    await exchange.finish(Outcome.UPSTREAM_ERROR, response.status, region_id)
                    raise UpstreamStreamBroken(f"{region_id}: {exc.detail}") from None
            except asyncio.CancelledError:
                if not watch.client_left():
                    raise
                # The client left: the exchange is abandoned (its connection closed, never
                # pooled), as is whatever was being relayed. Logged as 499.
                if response is not None:
                    response.release()
                    response = None
                attempt_span.set_attribute("upstream.outcome", "client_disconnected")
                exchange.attempt_failed("client_disconnected")
                await exchange.finish(Outcome.ROUTED, 499, region_id)
                return True
            finally:
                if response is not None:
                    response.release()
            tried = exchange.tried_at
            self._metrics.observe_upstream(
                region_id, time.perf_counter() - tried, first_chunk_at - tried
            )
            return True
