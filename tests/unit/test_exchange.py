"""Exchange: one routing record per request, written once, by whichever path ends it."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from typing import Any

import pytest

from compliance.privacy import IpPseudonymiser
from gateway.exchange import Exchange, RoutingRecorder
from gateway.http.relay import relay
from gateway.routing.decide import decide
from gateway.routing.decision import Decision, Outcome
from gateway.telemetry.metrics import GatewayMetrics, RuntimeGauges
from tests.factories import facts, routing_snapshot, twenty_regions

TRACE = "0af7651916cd43dd8448eb211c80319c"


def _decision() -> Decision:
    decision = decide(facts(client="DE", model="gpt-4o-mini"), routing_snapshot(twenty_regions()))
    assert decision.outcome is Outcome.ROUTED and len(decision.route()) >= 2
    return dataclasses.replace(decision, facts=dataclasses.replace(decision.facts, client_ip="::1"))


class _Log:
    """The routing log: keeps what it is given, in order, with the events around it."""

    def __init__(self, events: list[str]) -> None:
        self.records: list[dict[str, Any]] = []
        self.intents: list[dict[str, Any]] = []
        self.written_ahead: list[bool] = []
        self.events = events

    async def write_ahead(self, record: dict[str, Any]) -> None:
        self.intents.append(record)

    async def record(self, record: dict[str, Any], *, written_ahead: bool = False) -> None:
        self.events.append("record")
        self.records.append(record)
        self.written_ahead.append(written_ahead)


class _Recorder(RoutingRecorder):
    """The real recorder, noting when the decision is acted on."""

    def __init__(self) -> None:
        self.events: list[str] = []
        self.log = _Log(self.events)
        self.metrics = GatewayMetrics(
            "test", RuntimeGauges(lambda: {}, lambda: 0.0, lambda: 0, lambda: True)
        )
        super().__init__(self.log, self.metrics, IpPseudonymiser(b"k" * 32))

    async def decided(self, exchange: Exchange) -> None:
        self.events.append("decided")


def _open(recorder: RoutingRecorder, decision: Decision, trace_id: str | None) -> Exchange:
    return Exchange(decision, recorder, trace_id=trace_id, started=time.perf_counter())


def _run(steps: Any) -> Any:
    return asyncio.run(steps())


def test_an_answer_after_a_failed_region_is_one_record_with_both_attempts() -> None:
    recorder = _Recorder()
    decision = _decision()
    first, second = decision.route()[:2]

    async def steps() -> Exchange:
        exchange = _open(recorder, decision, TRACE)
        await exchange.begin()
        exchange.try_region(first)
        exchange.responded(503)
        exchange.attempt_failed("http_5xx")
        exchange.try_region(second)
        exchange.responded(200)
        exchange.relayed(time.perf_counter(), 42)
        await exchange.answered()
        return exchange

    exchange = _run(steps)
    assert recorder.events == ["decided", "record"]
    [record] = recorder.log.records
    assert record["decision_id"] == decision.id
    assert record["outcome"] == "routed"
    assert record["status_code"] == 200
    assert record["chosen_region"] == first
    assert record["served_region"] == second
    assert record["trace_id"] == TRACE
    assert [(a["region"], a["result"], a["status"]) for a in record["attempts"]] == [
        (first, "http_5xx", 503),
        (second, "ok", 200),
    ]
    assert record["client_ip_hmac"] == IpPseudonymiser(b"k" * 32).pseudonymise("::1")
    assert record["latency_ms"] >= 0
    assert exchange.response_bytes == 42
    tenant_outcome = f'region="{second}",tenant="none"'
    assert tenant_outcome in recorder.metrics.render().decode()


def test_a_5xx_answer_from_the_last_region_is_an_upstream_error() -> None:
    recorder = _Recorder()
    decision = _decision()

    async def steps() -> None:
        exchange = _open(recorder, decision, None)
        exchange.try_region(decision.chosen or "")
        exchange.responded(500)
        await exchange.answered()

    _run(steps)
    [record] = recorder.log.records
    assert (record["outcome"], record["status_code"]) == ("upstream_error", 500)


def test_a_second_finish_writes_nothing_and_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    recorder = _Recorder()
    decision = _decision()

    async def steps() -> tuple[bool, bool]:
        exchange = _open(recorder, decision, TRACE)
        exchange.try_region(decision.chosen or "")
        exchange.attempt_failed("client_disconnected")
        first = await exchange.finish(Outcome.ROUTED, 499, decision.chosen)
        second = await exchange.finish(Outcome.UPSTREAM_ERROR, 502)
        return first, second

    with caplog.at_level(logging.ERROR, logger="gateway.exchange"):
        assert _run(steps) == (True, False)
    [record] = recorder.log.records
    assert (record["outcome"], record["status_code"]) == ("routed", 499)
    assert f"exchange {decision.id} finished twice" in caplog.text


def test_a_refusal_is_recorded_without_attempts_or_begin() -> None:
    recorder = _Recorder()
    decision = decide(facts(), routing_snapshot(twenty_regions()))
    assert decision.outcome is Outcome.REFUSED

    async def steps() -> None:
        exchange = _open(recorder, decision, TRACE)
        await exchange.finish(decision.outcome, decision.http_status)

    _run(steps)
    assert recorder.events == ["record"]
    [record] = recorder.log.records
    assert (record["outcome"], record["status_code"]) == ("refused", 451)
    assert (record["served_region"], record["attempts"]) == (None, [])


class _Answer:
    """A region's answer: headers, then body chunks."""

    status = 200

    def __init__(self, headers: list[tuple[bytes, bytes]], chunks: list[bytes]) -> None:
        self.headers = headers
        self._chunks = list(chunks)

    async def read(self) -> bytes:
        return self._chunks.pop(0) if self._chunks else b""


@pytest.mark.parametrize(
    ("headers", "chunks"),
    [
        pytest.param([(b"content-length", b"5")], [b"hello"], id="one-chunk"),
        pytest.param([(b"content-length", b"6")], [b"abc", b"def"], id="known-length"),
        pytest.param([], [b"data: 1\n\n", b"data: [DONE]\n\n"], id="stream"),
    ],
)
def test_the_relay_tells_the_exchange_the_size_before_the_record(
    headers: list[tuple[bytes, bytes]], chunks: list[bytes]
) -> None:
    recorder = _Recorder()
    decision = _decision()
    sizes: list[int | None] = []

    async def steps() -> None:
        exchange = _open(recorder, decision, TRACE)
        exchange.try_region(decision.chosen or "")
        exchange.responded(200)

        async def send(_: Any) -> None:
            return None

        async def before_end() -> None:
            sizes.append(exchange.response_bytes)
            await exchange.answered()

        await relay(send, _Answer(headers, chunks), [], before_end, exchange)  # type: ignore[arg-type]
        assert exchange.first_byte_at is not None

    _run(steps)
    assert sizes == [sum(len(c) for c in chunks)]
    assert len(recorder.log.records) == 1
