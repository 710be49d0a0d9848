"""The operator's probes: liveness, readiness and the Prometheus scrape."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST

from gateway.http.asgi import JsonResponse
from gateway.telemetry.metrics import GatewayMetrics


def router(readiness: Callable[[], dict[str, Any]], metrics: GatewayMetrics) -> APIRouter:
    """`/healthz`, `/readyz` (answering `readiness()`, 503 unless ready) and `/metrics`."""
    api = APIRouter()

    @api.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @api.get("/readyz")
    async def readyz() -> JsonResponse:
        report = readiness()
        return JsonResponse(report, status_code=200 if report["ready"] else 503)

    @api.get("/metrics", include_in_schema=False)
    async def scrape() -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    return api
