"""The data path: route each inference request and forward it, byte for byte, to its region."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from typing import TYPE_CHECKING

from opentelemetry.trace import SpanKind, Status, StatusCode

from compliance.audit.spool import SpoolError
from gateway.http.asgi import RawHeaders, Receive, Scope, Send, header, openai_error, send_json
from gateway.http.records import Attempt, intent_record, routing_record
from gateway.http.relay import ClientWatch, NothingRelayed, declared_length, read_body, relay
from gateway.http.upstream import UpstreamError, UpstreamResponse
from gateway.intake import RequestRejected, authenticate, new_request_id, parse_inference_body
from gateway.routing.decide import decide
from gateway.routing.decision import Decision, Outcome
from gateway.routing.snapshot import RoutingSnapshot
from gateway.telemetry.tracing import RequestTrace

if TYPE_CHECKING:
    from gateway.runtime import GatewayRuntime

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


class _Request:
    """What every attempt of one forwarded request shares."""

    __slots__ = (
        "attempts",
        "body",
        "decision",
        "forwarded",
        "headers",
        "send",
        "span",
        "started",
        "watch",
    )

    def __init__(
        self,
        send: Send,
        decision: Decision,
        body: bytes,
        forwarded: list[tuple[str, str]],
        headers: RawHeaders,
        span: RequestTrace,
        started: float,
        attempts: list[Attempt],
    ) -> None:
        self.send = send
        self.decision = decision
        self.body = body
        self.forwarded = forwarded
        self.headers = headers
        self.span = span
        self.started = started
        self.attempts = attempts
        self.watch: ClientWatch


class _ClientCarrier(dict[str, str]):
    """W3C trace context carrier read from ASGI headers."""


class InferenceProxy:
    """Pure-ASGI endpoint for chat completions, completions and embeddings."""

    def __init__(self, runtime: GatewayRuntime) -> None:
        self._rt = runtime
        self._tracer = runtime.tracer

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
        rt = self._rt
        snapshot = rt.snapshot
        request_id = new_request_id()
        trace_header = (b"traceparent", span.traceparent().encode())
        headers: RawHeaders = [(b"x-residency-decision", request_id.encode()), trace_header]
        try:
            if scope["method"] != "POST":
                raise RequestRejected(
                    405, f"{scope['path']} accepts POST only", "method_not_allowed"
                )
            # Authenticate first: an unknown client never makes the gateway read its body.
            tenant = authenticate(scope, snapshot.policy, rt.auth_guard)
            declared = declared_length(scope)
            if declared is not None and declared > rt.settings.max_body_bytes:
                raise RequestRejected(
                    413,
                    f"request body exceeds the limit of {rt.settings.max_body_bytes} bytes",
                    "request_too_large",
                )
            body = await read_body(receive, rt.settings.max_body_bytes)
            parsed = parse_inference_body(body)
            facts = rt.facts.build(scope, tenant, parsed.model, request_id)
        except RequestRejected as rejected:
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
        if decision.outcome is not Outcome.ROUTED:
            await self._refuse(send, decision, decision.outcome, [], headers, span, started)
            return
        await self._forward(scope, receive, send, decision, snapshot, body, headers, span, started)

    async def _refuse(
        self,
        send: Send,
        decision: Decision,
        outcome: Outcome,
        attempts: list[Attempt],
        headers: RawHeaders,
        span: RequestTrace,
        started: float,
    ) -> None:
        error_type, code = _REFUSAL_TYPES[outcome]
        status = 502 if outcome is Outcome.UPSTREAM_ERROR else decision.http_status
        message = "; ".join(decision.reasons)
        if attempts:
            message = "every allowed region failed: " + ", ".join(
                f"{a.region} ({a.result})" for a in attempts
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
        await self._record(decision, outcome, status, None, attempts, span, started)
        await send_json(send, status, body, headers)

    async def _write_ahead(
        self,
        send: Send,
        decision: Decision,
        headers: RawHeaders,
        span: RequestTrace,
        started: float,
    ) -> bool:
        """Make the decision durable before anything is forwarded (write-ahead durability);
        False, after answering 503, if the routing log cannot (fail closed: nothing leaves)."""
        record = intent_record(
            decision,
            latency_ms=_ms(started),
            trace_id=span.trace_id_hex,
            client_ip_hmac=self._rt.pseudonymiser.pseudonymise(decision.facts.client_ip),
        )
        try:
            await self._rt.routing_log.write_ahead(record)
        except SpoolError as exc:
            logger.error("decision %s not forwarded: %s", decision.id, exc)
            span.set_attribute("http.response.status_code", 503)
            span.set_status(Status(StatusCode.ERROR, "routing_log_unavailable"))
            body = openai_error(
                "the routing log cannot record this decision, so the request was not forwarded",
                "server_error",
                "routing_log_unavailable",
                decision_id=decision.id,
            )
            await send_json(send, 503, body, headers)
            return False
        return True

    def _still_allowed(self, decision: Decision, region_id: str) -> bool:
        """Re-check a hop against the newest snapshot: a reload may have narrowed the set."""
        latest: RoutingSnapshot = self._rt.snapshot
        region = latest.policy.region_by_id.get(region_id)
        if region is None or region.status.value != "active":
            return False
        facts = decision.facts
        tenant = latest.policy.tenants.get(facts.tenant_id) if facts.tenant_id else None
        evaluation = latest.policy.evaluate(
            frozenset(j.country for j in decision.jurisdictions),
            facts.data_class.value,
            tenant,
            facts.at.date(),
        )
        return region_id in evaluation.allowed

    async def _forward(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        decision: Decision,
        snapshot: RoutingSnapshot,
        body: bytes,
        headers: RawHeaders,
        span: RequestTrace,
        started: float,
    ) -> None:
        route = decision.route()[: self._rt.settings.max_attempts]
        attempts: list[Attempt] = []
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
        if not await self._write_ahead(send, decision, headers, span, started):
            return
        request = _Request(send, decision, body, forwarded, headers, span, started, attempts)
        request.watch = ClientWatch(receive)  # a client that leaves cancels the exchange: 499
        try:
            for number, region_id in enumerate(route, start=1):
                if number > 1 and not self._still_allowed(decision, region_id):
                    attempts.append(Attempt(region_id, "no_longer_allowed"))
                    continue
                region = snapshot.policy.region_by_id[region_id]
                url = region.base_url.rstrip("/") + path
                if await self._attempt(request, url, region_id, number, number == len(route)):
                    return
            request.watch.disarm()
            await self._refuse(
                send, decision, Outcome.UPSTREAM_ERROR, attempts, headers, span, started
            )
        finally:
            request.watch.close()

    async def _attempt(
        self, request: _Request, url: str, region_id: str, number: int, last: bool
    ) -> bool:
        """One try at one region; False if it failed before the client got anything.

        Each try is one entry in the record's attempts, and sends the request once.
        """
        rt = self._rt
        decision, span, attempts, watch = (
            request.decision,
            request.span,
            request.attempts,
            request.watch,
        )
        with (
            rt.inflight.track(region_id),  # until the answer or stream ends: drain waits
            span.span(
                "upstream.attempt",
                SpanKind.CLIENT,
                {"residency.region": region_id, "upstream.attempt": number},
            ) as attempt_span,
        ):
            traceparent = ("traceparent", span.traceparent(attempt_span.span_id))
            tried = time.perf_counter()
            response: UpstreamResponse | None = None
            try:
                try:
                    response = await rt.upstream.send(
                        url, [*request.forwarded, traceparent], request.body
                    )
                except UpstreamError as exc:
                    attempts.append(Attempt(region_id, exc.kind.value, None, _ms(tried)))
                    attempt_span.set_attribute("upstream.outcome", exc.kind.value)
                    attempt_span.set_status(Status(StatusCode.ERROR, exc.detail))
                    return False
                if response.status >= 500 and not last:  # released below, unread
                    attempts.append(Attempt(region_id, "http_5xx", response.status, _ms(tried)))
                    attempt_span.set_attribute("upstream.outcome", "http_5xx")
                    attempt_span.set_attribute("http.response.status_code", response.status)
                    return False
                attempt_span.set_attribute("upstream.outcome", "response")
                attempt_span.set_attribute("http.response.status_code", response.status)
                served_headers = [*request.headers, (b"x-residency-region", region_id.encode())]
                span.set_attribute("residency.served_region", region_id)
                span.set_attribute("http.response.status_code", response.status)
                served = functools.partial(
                    self._record_served, request, region_id, response.status, tried
                )
                try:
                    first_chunk_at = await relay(request.send, response, served_headers, served)
                except NothingRelayed as exc:  # the client has nothing yet: try the next
                    span.unset_attribute("residency.served_region")
                    kind = exc.error.kind.value
                    attempts.append(Attempt(region_id, kind, response.status, _ms(tried)))
                    attempt_span.set_attribute("upstream.outcome", kind)
                    attempt_span.set_status(Status(StatusCode.ERROR, exc.error.detail))
                    return False
                except UpstreamError as exc:
                    watch.disarm()
                    attempts.append(
                        Attempt(
                            region_id,
                            f"broken_stream:{exc.kind.value}",
                            response.status,
                            _ms(tried),
                        )
                    )
                    attempt_span.set_status(Status(StatusCode.ERROR, exc.detail))
                    await self._record(
                        decision,
                        Outcome.UPSTREAM_ERROR,
                        response.status,
                        region_id,
                        attempts,
                        span,
                        request.started,
                    )
                    raise UpstreamStreamBroken(f"{region_id}: {exc.detail}") from None
            except asyncio.CancelledError:
                if not watch.client_left():
                    raise
                # The client left: the exchange is abandoned (its connection closed, never
                # pooled), as is whatever was being relayed. Logged as 499.
                status = None
                if response is not None:
                    status = response.status
                    response.release()
                    response = None
                attempt_span.set_attribute("upstream.outcome", "client_disconnected")
                attempts.append(Attempt(region_id, "client_disconnected", status, _ms(tried)))
                await self._record(
                    decision, Outcome.ROUTED, 499, region_id, attempts, span, request.started
                )
                return True
            finally:
                if response is not None:
                    response.release()
            rt.metrics.observe_upstream(
                region_id, time.perf_counter() - tried, first_chunk_at - tried
            )
            return True

    async def _record_served(
        self,
        request: _Request,
        region_id: str,
        status: int,
        tried: float,
        first_chunk_at: float,
        body_bytes: int,
    ) -> None:
        """Log a forwarded answer; runs just before the message that completes its body."""
        request.watch.disarm()  # the answer is complete: it is logged as delivered
        ttfb = round((first_chunk_at - tried) * 1000.0, 3)
        request.attempts.append(Attempt(region_id, "ok", status, _ms(tried), ttfb, body_bytes))
        outcome = Outcome.ROUTED if status < 500 else Outcome.UPSTREAM_ERROR
        await self._record(
            request.decision,
            outcome,
            status,
            region_id,
            request.attempts,
            request.span,
            request.started,
        )

    async def _record(
        self,
        decision: Decision,
        outcome: Outcome,
        status: int,
        served: str | None,
        attempts: list[Attempt],
        span: RequestTrace,
        started: float,
    ) -> None:
        """Log the decision; return once its record is fsynced, unless durability is relaxed
        (or write-ahead-lazy for a forwarded request: its decision is durable already)."""
        self._rt.metrics.count_request(
            served or "none", decision.facts.tenant_id or "none", outcome.value
        )
        self._rt.metrics.observe_decision(sum(decision.stage_ns) / 1e9)
        await self._rt.routing_log.record(
            routing_record(
                decision,
                outcome=outcome,
                status_code=status,
                served_region=served,
                attempts=attempts,
                latency_ms=_ms(started),
                trace_id=span.trace_id_hex,
                client_ip_hmac=self._rt.pseudonymiser.pseudonymise(decision.facts.client_ip),
            ),
            written_ahead=decision.outcome is Outcome.ROUTED,  # see _write_ahead
        )


def _ms(since: float) -> float:
    return (time.perf_counter() - since) * 1000.0
