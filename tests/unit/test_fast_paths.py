"""The start-up report of which fast paths run and which fell back."""

from __future__ import annotations

import logging

import pytest

from gateway.telemetry import fast_paths
from gateway.telemetry.span_export import DataPathSpanExporter


def test_this_installation_runs_every_fast_path() -> None:
    paths = fast_paths.fast_paths()
    assert set(paths) == {"event loop", "http protocol", "span encoder"}
    assert all(state.startswith("active") for state in paths.values()), paths


def test_an_exporter_without_its_client_is_reported_as_a_fallback(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    original = DataPathSpanExporter.__init__

    def without_client(self: DataPathSpanExporter) -> None:
        original(self)
        del self._client

    monkeypatch.setattr(DataPathSpanExporter, "__init__", without_client)
    with caplog.at_level(logging.INFO, logger="gateway.telemetry.fast_paths"):
        fast_paths.log_fast_paths()
    assert fast_paths.fast_paths()["span encoder"].startswith("fallback: ")
    (record,) = caplog.records
    assert record.levelno == logging.WARNING
    assert "span encoder: fallback" in record.getMessage()


def test_an_untested_uvicorn_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fast_paths.uvicorn, "__version__", "0.99.0")
    assert fast_paths.fast_paths()["http protocol"].startswith("untested: uvicorn 0.99.0")
