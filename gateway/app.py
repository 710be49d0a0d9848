"""The ASGI application: the pure-ASGI data path in front, FastAPI for everything else."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from gateway.api import admin as admin_api
from gateway.api import audit as audit_api
from gateway.api import audit_chain as audit_chain_api
from gateway.errors import ApiError
from gateway.http.asgi import ASGIApp, JsonResponse, Receive, Scope, Send, openai_error, send_json
from gateway.http.proxy import INFERENCE_PATHS, InferenceProxy, UpstreamStreamBroken
from gateway.http.relay import declared_length, read_body
from gateway.intake import (
    MAX_IP_CHARS,
    MAX_MODEL_CHARS,
    authenticate,
    new_request_id,
    parse_explain_body,
)
from gateway.routing.decide import decide
from gateway.runtime import GatewayRuntime, PolicyNotLoaded
from regions.catalog import RegionStatus

_POLICY_NOT_LOADED = openai_error(
    "policy not loaded: the gateway has not read its policy from the database yet",
    "service_unavailable",
    "policy_not_loaded",
)
_RETRY_AFTER = (b"retry-after", b"5")
MODELS_HINT_HEADER = "x-residency-hint"
"""On an empty `/v1/models` list: why this caller may use no model (also the body's `hint`)."""


class ExplainRequest(BaseModel):
    """Facts to explain a decision for; headers X-Data-Subject-Country / X-Data-Class also apply.

    Documents the body only: `intake.parse_explain_body` reads it, after authentication.
    """

    model_config = ConfigDict(extra="forbid")
    ip: str | None = Field(
        None,
        max_length=MAX_IP_CHARS,
        description="client address to locate (IPv4 or IPv6); default: the caller's",
    )
    model: str | None = Field(None, min_length=1, max_length=MAX_MODEL_CHARS)


_EXPLAIN_BODY = {
    "requestBody": {
        "required": False,
        "content": {"application/json": {"schema": ExplainRequest.model_json_schema()}},
    }
}


class _DropBrokenStreams(logging.Filter):
    """uvicorn logs an aborted stream as a crash; it is an upstream failure, already recorded."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], UpstreamStreamBroken))


def _api(runtime: GatewayRuntime) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await runtime.start()
        try:
            yield
        finally:
            await runtime.stop()

    api = FastAPI(title="Residency Gateway", lifespan=lifespan, default_response_class=JsonResponse)

    @api.exception_handler(ApiError)
    async def _rejected(_: Request, exc: ApiError) -> JsonResponse:
        body = openai_error(exc.message, "invalid_request_error", exc.code, param=exc.param)
        return JsonResponse(body, status_code=exc.status, headers=dict(exc.headers))

    @api.exception_handler(PolicyNotLoaded)
    async def _not_loaded(_: Request, exc: PolicyNotLoaded) -> JsonResponse:
        headers = {_RETRY_AFTER[0].decode(): _RETRY_AFTER[1].decode()}
        return JsonResponse(_POLICY_NOT_LOADED, status_code=503, headers=headers)

    @api.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JsonResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        body = openai_error(str(exc.detail), "invalid_request_error", code)
        return JsonResponse(body, status_code=exc.status_code, headers=exc.headers)

    @api.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JsonResponse:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"] if p != "body")
        message = f"{where}: {first['msg']}" if where else str(first["msg"])
        given = first.get("input")
        if isinstance(given, str | int | float) and len(str(given)) <= 200:
            message += f" (got {given!r})"
        return JsonResponse(openai_error(message, "invalid_request_error", "invalid_body"), 400)

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

    @api.get("/v1/models")
    async def models(request: Request) -> JsonResponse:
        snapshot = runtime.snapshot
        tenant = authenticate(request.scope, snapshot.policy, runtime.auth_guard)
        facts = runtime.facts.build(request.scope, tenant, None, new_request_id())
        decision = decide(facts, snapshot)
        allowed = set(decision.allowed_regions)
        names = sorted(
            {
                m
                for r in snapshot.policy.regions
                if r.id in allowed and r.status is RegionStatus.ACTIVE
                for m in r.models
            }
        )
        body: dict[str, Any] = {
            "object": "list",
            "data": [
                {"id": n, "object": "model", "created": 0, "owned_by": "residency-gateway"}
                for n in names
            ],
        }
        if names:
            return JsonResponse(body)
        # An empty list alone looks like a broken gateway: say why, as a 451 would. The list
        # shape stays, so OpenAI SDKs still parse it.
        hint = "; ".join(decision.reasons) or "no active region may serve this caller"
        header = hint.encode("ascii", "replace").decode("ascii")
        return JsonResponse(body | {"hint": hint}, headers={MODELS_HINT_HEADER: header})

    @api.post("/v1/residency/explain", openapi_extra=_EXPLAIN_BODY)
    async def explain(request: Request) -> dict[str, Any]:
        snapshot = runtime.snapshot
        # Authenticate before reading a byte of the body, then read at most the body limit.
        tenant = authenticate(request.scope, snapshot.policy, runtime.auth_guard)
        limit = runtime.settings.max_body_bytes
        declared = declared_length(request.scope)
        if declared is not None and declared > limit:
            raise ApiError(
                413, f"request body exceeds the limit of {limit} bytes", "request_too_large"
            )
        query = parse_explain_body(await read_body(request.receive, limit))
        facts = runtime.facts.build(
            request.scope, tenant, query.model, new_request_id(), client_ip=query.ip
        )
        return decide(facts, snapshot).to_dict()

    api.include_router(admin_api.router(runtime))
    api.include_router(audit_api.router(runtime))
    api.include_router(audit_chain_api.router(runtime))
    api.mount("/console", audit_api.console_app(), name="console")
    return api


class _Dispatcher:
    """Sends inference paths straight to the pure-ASGI proxy; the rest to FastAPI.

    Until a policy snapshot is loaded (database down since start, no usable cache), inference
    gets 503 here (the API's routes raise PolicyNotLoaded): nothing is decided without one.
    """

    def __init__(self, runtime: GatewayRuntime, proxy: ASGIApp, api: ASGIApp) -> None:
        self._runtime = runtime
        self._proxy = proxy
        self._api = api

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] in INFERENCE_PATHS:
            if not self._runtime.policy_loaded:
                await send_json(send, 503, _POLICY_NOT_LOADED, [_RETRY_AFTER])
                return
            await self._proxy(scope, receive, send)
        else:
            await self._api(scope, receive, send)


def create_app(runtime: GatewayRuntime) -> ASGIApp:
    """The gateway's ASGI app; the runtime starts and stops with the ASGI lifespan."""
    logging.getLogger("uvicorn.error").addFilter(_DropBrokenStreams())
    return _Dispatcher(runtime, InferenceProxy(runtime), _api(runtime))
