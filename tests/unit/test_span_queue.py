"""Finished spans wait in a queue deep enough for export bursts at peak load (none dropped)."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from gateway.settings import Settings
from gateway.telemetry.setup import SPAN_QUEUE_SIZE, build_tracer_provider


class StalledExporter(SpanExporter):
    """Holds its first export until released (a collector or an export thread falling behind)."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.exported = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.release.wait(10)
        self.exported += len(spans)
        return SpanExportResult.SUCCESS


def _exported_after_a_stall(tmp_path: Path, spans: int) -> int:
    exporter = StalledExporter()
    provider, _ = build_tracer_provider(Settings(data_dir=tmp_path), exporter)
    tracer = provider.get_tracer("test")
    for _ in range(spans):
        tracer.start_span("request").end()
    exporter.release.set()
    provider.shutdown()  # exports what is queued
    return exporter.exported


def test_a_burst_larger_than_the_sdk_default_queue_is_kept(tmp_path: Path) -> None:
    burst = 3 * 2048  # the SDK's default queue would drop two thirds of it
    assert burst < SPAN_QUEUE_SIZE
    assert _exported_after_a_stall(tmp_path, burst) == burst


def test_the_standard_variable_still_sets_the_queue(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_BSP_MAX_QUEUE_SIZE", "600")
    exported = _exported_after_a_stall(tmp_path, 3000)
    assert 600 <= exported < 3000  # the rest were dropped while the export stalled
