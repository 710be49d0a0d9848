"""What a caller may use and why: `/v1/models` filtered by residency, and the explain endpoint."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from gateway.auth_throttle import AuthGuard
from gateway.http.asgi import JsonResponse
from gateway.http.request_body import read_body
from gateway.intake import (
    MAX_IP_CHARS,
    MAX_MODEL_CHARS,
    FactsBuilder,
    authenticate,
    new_request_id,
    parse_explain_body,
)
from gateway.routing.decide import decide
from gateway.routing.snapshot import RoutingSnapshot
from regions.catalog import RegionStatus

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


def router(
    snapshot: Callable[[], RoutingSnapshot],
    auth_guard: AuthGuard,
    facts: FactsBuilder,
    max_body_bytes: int,
) -> APIRouter:
    """`GET /v1/models` and `POST /v1/residency/explain`, deciding against `snapshot()`."""
    api = APIRouter()

    @api.get("/v1/models")
    async def models(request: Request) -> JsonResponse:
        latest = snapshot()
        tenant = authenticate(request.scope, latest.policy, auth_guard)
        decision = decide(facts.build(request.scope, tenant, None, new_request_id()), latest)
        allowed = set(decision.allowed_regions)
        names = sorted(
            {
                m
                for r in latest.policy.regions
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
        latest = snapshot()
        # Authenticate before reading a byte of the body, then read at most the body limit.
        tenant = authenticate(request.scope, latest.policy, auth_guard)
        query = parse_explain_body(await read_body(request.scope, request.receive, max_body_bytes))
        explained = facts.build(
            request.scope, tenant, query.model, new_request_id(), client_ip=query.ip
        )
        return decide(explained, latest).to_dict()

    return api
