"""The operator's probes: liveness, readiness and the Prometheus scrape."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST

from gateway.http.asgi import JsonResponse
from gateway.runtime import GatewayRuntime


def router(runtime: GatewayRuntime) -> APIRouter:
    """`/healthz`, `/readyz` and `/metrics`."""
    api = APIRouter()

    @api.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @api.get("/readyz")
    async def readyz() -> JsonResponse:
        report = runtime.readiness()
        return JsonResponse(report, status_code=200 if report["ready"] else 503)

    @api.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(runtime.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    return api
