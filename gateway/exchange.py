"""One request's exchange: its decision, every attempt made for it, and its one routing record.

Both data planes use it the same way. Once the decision is made, open an exchange; call
`begin()` before the first byte leaves for a region, record each attempt as it ends, and call
`finish(...)` once the outcome is known. `finish` hands the exchange to its recorder exactly
once: that is where the routing record is written. A recorder that must make the decision
durable before anything is forwarded does that in `decided` (called by `begin`) and appends
the outcome in `finished`.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any, Protocol

from gateway.routing.decision import Decision, Outcome
from gateway.routing.records import Attempt, intent_record, routing_record

if TYPE_CHECKING:
    from compliance.privacy import IpPseudonymiser
    from gateway.telemetry.metrics import GatewayMetrics

logger = logging.getLogger(__name__)


class ExchangeRecorder(Protocol):
    """Where exchanges leave their evidence (the routing log, metrics)."""

    async def decided(self, exchange: Exchange) -> None:
        """The decision is about to be acted on: nothing has left for a region yet."""

    async def finished(self, exchange: Exchange) -> None:
        """The outcome is known (called once per exchange)."""


class RecordWriter(Protocol):
    """The routing log, as a recorder sees it."""

    async def write_ahead(self, record: dict[str, Any]) -> None:
        """Make a forwarding decision durable before the request leaves (write-ahead
        durability; other modes: nothing). Raises if it cannot be (then nothing is forwarded)."""

    async def record(self, record: dict[str, Any], *, written_ahead: bool = False) -> None:
        """Log one routing record (returns once it is as durable as the log promises)."""


class Exchange:
    """The state of one routed request, from its decision to its one routing record.

    Times are `time.perf_counter()` seconds. `response_bytes` and `first_byte_at` are known
    only for an answer that was relayed to its end.
    """

    __slots__ = (
        "_recorder",
        "attempts",
        "began",
        "decision",
        "finished_at",
        "first_byte_at",
        "outcome",
        "region",
        "response_bytes",
        "served_region",
        "started",
        "status",
        "trace_id",
        "tried_at",
    )

    def __init__(
        self,
        decision: Decision,
        recorder: ExchangeRecorder,
        *,
        trace_id: str | None,
        started: float,
    ) -> None:
        self.decision = decision
        self.trace_id = trace_id
        self.started = started
        self._recorder = recorder
        self.attempts: list[Attempt] = []
        self.began = False
        """True once the recorder took the decision before forwarding (`begin`)."""
        self.region: str | None = None
        """The region being tried (the last one tried once attempts are over)."""
        self.tried_at = 0.0
        self.status: int | None = None
        """The HTTP status the current attempt's region answered with, then the final one."""
        self.first_byte_at: float | None = None
        self.response_bytes: int | None = None
        self.outcome: Outcome | None = None
        self.served_region: str | None = None
        self.finished_at: float | None = None

    async def begin(self) -> None:
        """Call before the first upstream attempt: from here the decision is acted on."""
        await self._recorder.decided(self)
        self.began = True

    def try_region(self, region_id: str) -> None:
        """A new attempt at `region_id` starts now."""
        self.region = region_id
        self.tried_at = time.perf_counter()
        self.status = None

    def skip(self, region_id: str, result: str) -> None:
        """`region_id` was not tried (e.g. no longer allowed): an attempt that sent nothing."""
        self.attempts.append(Attempt(region_id, result))

    def responded(self, status: int) -> None:
        """The current attempt's region answered with `status` (its body may follow)."""
        self.status = status

    def relayed(self, first_byte_at: float, size: int) -> None:
        """The answer's body is complete: `size` bytes, the first arriving at `first_byte_at`."""
        self.first_byte_at = first_byte_at
        self.response_bytes = size

    def attempt_failed(self, result: str) -> None:
        """The current attempt ended without a complete answer, for `result`."""
        assert self.region is not None
        self.attempts.append(Attempt(self.region, result, self.status, self._attempt_ms()))

    async def answered(self) -> None:
        """The current attempt's answer is complete: log it (before its last byte goes out)."""
        region, status = self.region, self.status
        assert region is not None and status is not None
        ttfb_ms = size = None
        if self.first_byte_at is not None:
            ttfb_ms = round((self.first_byte_at - self.tried_at) * 1000.0, 3)
            size = self.response_bytes
        self.attempts.append(Attempt(region, "ok", status, self._attempt_ms(), ttfb_ms, size))
        outcome = Outcome.ROUTED if status < 500 else Outcome.UPSTREAM_ERROR
        await self.finish(outcome, status, region)

    async def finish(self, outcome: Outcome, status: int, served_region: str | None = None) -> bool:
        """End the exchange and hand it to the recorder; False (and an error logged) if it
        had already ended: every exchange has exactly one outcome."""
        if self.outcome is not None:
            logger.error(
                "exchange %s finished twice (first %s %s, now %s %s): second outcome dropped",
                self.decision.id,
                self.outcome.value,
                self.status,
                outcome.value,
                status,
            )
            return False
        self.outcome, self.status, self.served_region = outcome, status, served_region
        self.finished_at = time.perf_counter()
        await self._recorder.finished(self)
        return True

    def routing_record(self, client_ip_hmac: str | None) -> dict[str, Any]:
        """The finished exchange's row for the routing log."""
        assert self.outcome is not None and self.status is not None
        assert self.finished_at is not None
        return routing_record(
            self.decision,
            outcome=self.outcome,
            status_code=self.status,
            served_region=self.served_region,
            attempts=self.attempts,
            latency_ms=(self.finished_at - self.started) * 1000.0,
            trace_id=self.trace_id,
            client_ip_hmac=client_ip_hmac,
        )

    def _attempt_ms(self) -> float:
        return (time.perf_counter() - self.tried_at) * 1000.0


class RoutingRecorder:
    """One routing record per exchange, written when it finishes, and the request metrics."""

    def __init__(
        self, log: RecordWriter, metrics: GatewayMetrics, pseudonymiser: IpPseudonymiser
    ) -> None:
        self._log = log
        self._metrics = metrics
        self._pseudonymiser = pseudonymiser

    async def decided(self, exchange: Exchange) -> None:
        """Write the decision ahead (write-ahead durability: returns once it is fsynced)."""
        decision = exchange.decision
        await self._log.write_ahead(
            intent_record(
                decision,
                latency_ms=(time.perf_counter() - exchange.started) * 1000.0,
                trace_id=exchange.trace_id,
                client_ip_hmac=self._pseudonymiser.pseudonymise(decision.facts.client_ip),
            )
        )

    async def finished(self, exchange: Exchange) -> None:
        """Count the request, then log its record (durable on return with strict durability)."""
        decision = exchange.decision
        assert exchange.outcome is not None
        self._metrics.count_request(
            exchange.served_region or "none",
            decision.facts.tenant_id or "none",
            exchange.outcome.value,
        )
        self._metrics.observe_decision(sum(decision.stage_ns) / 1e9)
        client_ip_hmac = self._pseudonymiser.pseudonymise(decision.facts.client_ip)
        await self._log.record(
            exchange.routing_record(client_ip_hmac), written_ahead=exchange.began
        )
