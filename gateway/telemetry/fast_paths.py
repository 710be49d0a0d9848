"""Which of the data path's fast paths this installation runs, and which fell back.

Three of them lean on other libraries' internals or optional parts; each has a slower path that
is still correct, so a mismatch never breaks a request, only costs CPU. `serve` logs this once
at start-up so an operator sees a fallback instead of guessing from the figures.
"""

from __future__ import annotations

import importlib.util
import logging

import uvicorn

logger = logging.getLogger(__name__)

TESTED_UVICORN = "0.55."
"""The uvicorn release line `gateway.http.protocol` was tested against (pyproject pins it)."""


def _event_loop() -> str:
    if importlib.util.find_spec("uvloop") is None:
        return "fallback: uvloop is not installed (asyncio's loop)"
    return "active: uvloop"


def _http_protocol() -> str:
    if not uvicorn.__version__.startswith(TESTED_UVICORN):
        return (
            f"untested: uvicorn {uvicorn.__version__} (tested {TESTED_UVICORN}x); the coalescing "
            "httptools protocol subclasses its internals"
        )
    return f"active: coalescing httptools protocol (uvicorn {uvicorn.__version__})"


def _span_encoder() -> str:
    from gateway.telemetry.span_export import DataPathSpanExporter

    exporter = DataPathSpanExporter()
    if getattr(exporter, "_client", None) is None:
        return "fallback: the OTLP exporter has no _client; spans use the SDK's encoder"
    exporter.shutdown()  # type: ignore[no-untyped-call]
    return "active: pre-encoded OTLP spans"


def fast_paths() -> dict[str, str]:
    """Each fast path by name: 'active: …', 'fallback: …' or 'untested: …'."""
    return {
        "event loop": _event_loop(),
        "http protocol": _http_protocol(),
        "span encoder": _span_encoder(),
    }


def log_fast_paths() -> None:
    """Log the fast paths once: info when all are active, a warning naming each that is not."""
    paths = fast_paths()
    summary = "; ".join(f"{name}: {state}" for name, state in paths.items())
    if all(state.startswith("active") for state in paths.values()):
        logger.info("fast paths: %s", summary)
    else:
        logger.warning("fast paths (not all active): %s", summary)
