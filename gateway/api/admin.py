"""The admin API under /admin: regions, tenants and regime overrides, versioned by ETag.

Reads need an operator token of any role; region writes need `admin` or `operator`; tenant and
regime writes need `admin`. Writes accept `If-Match` (412 when someone changed the object
since), are audited in the configuration log, and are served by this replica before the
response is sent (other replicas follow through their snapshot refresh).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import orjson
from fastapi import APIRouter, Request

from compliance.model import Regime, Tenant
from compliance.store.access_store import Principal
from compliance.store.admin_documents import (
    ConfigValue,
    InvalidDocument,
    document_of,
    etag_of,
    patched,
    regime_document,
    regime_from_body,
    region_document,
    region_from_body,
    tenant_from_body,
)
from compliance.store.admin_ops import (
    REGIMES,
    REGIONS,
    TENANTS,
    AdminOps,
    Change,
    InvalidReference,
    PreconditionFailed,
    keep_keys_unless_given,
)
from compliance.store.errors import NotFoundError, StoreError, StoreUnavailable
from compliance.store.policy_store import PolicyStore
from compliance.store.region_facts import LegalFactsForbidden
from gateway.api.access import READ_CONFIG, WRITE_POLICY, WRITE_REGIONS, OperatorGate
from gateway.errors import ApiError
from gateway.http.asgi import JsonResponse
from gateway.http.inflight import InFlight
from gateway.http.request_body import read_body
from gateway.routing.snapshot import RoutingSnapshot
from regions.catalog import Region
from regions.health import HealthTracker

T = TypeVar("T")
SERVE_WAIT_S = 2.0
"""How long a write waits for this replica to serve it before answering anyway."""


def _rejected(exc: Exception) -> ApiError:
    """The one place store and validation errors become HTTP errors."""
    if isinstance(exc, LegalFactsForbidden):
        return ApiError(403, str(exc), "forbidden")
    if isinstance(exc, InvalidDocument | InvalidReference):
        return ApiError(400, str(exc), "invalid_value", exc.field)
    if isinstance(exc, PreconditionFailed):
        return ApiError(412, str(exc), "precondition_failed")
    if isinstance(exc, NotFoundError):
        return ApiError(404, str(exc), "not_found")
    if isinstance(exc, StoreUnavailable):
        return ApiError(503, f"policy database unavailable: {exc}", "database_unavailable")
    return ApiError(409, str(exc), "conflict")


async def _run(call: Callable[[], T]) -> T:
    try:
        return await asyncio.to_thread(call)
    except (InvalidDocument, StoreError, StoreUnavailable) as exc:
        raise _rejected(exc) from None


async def _json_body(request: Request, limit: int) -> Any:
    raw = await read_body(request.scope, request.receive, limit)
    if not raw.strip():
        raise ApiError(400, "request body is empty; expected a JSON object", "invalid_json")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, f"request body is not valid JSON: {exc}", "invalid_json") from None


def _principal(request: Request) -> Principal:
    principal: Principal = request.state.principal
    return principal


def _rendered(value: ConfigValue, **extra: Any) -> dict[str, Any]:
    return {**document_of(value), "etag": etag_of(value), **extra}


def _when(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def live_health(tracker: HealthTracker, region_id: str) -> dict[str, Any]:
    """The region's health as this replica's prober sees it (healthy None: not probed yet)."""
    status = tracker.status(region_id)
    if status is None:
        return {"healthy": None, "detail": "not probed yet", "since": None, "checked_at": None}
    return {
        "healthy": status.healthy,
        "detail": status.detail,
        "since": _when(status.since),
        "checked_at": _when(status.checked_at),
    }


def _response(body: dict[str, Any], status: int = 200, etag: str | None = None) -> JsonResponse:
    headers = {"ETag": f'"{etag}"'} if etag else None
    return JsonResponse(body, status_code=status, headers=headers)


@dataclass(frozen=True, slots=True)
class AdminContext:
    """What the admin API reads and drives: the policy store, and this replica's view of it."""

    store: PolicyStore
    snapshot: Callable[[], RoutingSnapshot]
    """The snapshot this replica serves."""
    request_refresh: Callable[[], None]
    """Asks this replica to reload its snapshot now."""
    serves: Callable[[int], bool]
    """True once new requests are decided by this policy version or newer (every data plane:
    the Python snapshot and, with Envoy, every connected Envoy's accepted configuration)."""
    inflight: InFlight
    health: HealthTracker
    max_body_bytes: int


class _Handlers:
    """Parse, call, render: the logic lives in AdminOps and admin_documents."""

    def __init__(self, context: AdminContext) -> None:
        self.context = context
        self.ops = AdminOps(context.store)

    async def body(self, request: Request) -> Any:
        """The request's JSON body, read up to GATEWAY_MAX_BODY_BYTES (413 beyond)."""
        return await _json_body(request, self.context.max_body_bytes)

    def serving(self, region: Region) -> dict[str, Any]:
        """What this replica does with the region right now (drain --wait polls this): live,
        read-only fields, outside the stored document and its ETag."""
        policy = self.context.snapshot().policy
        served = policy.region_by_id.get(region.id)
        return {
            "in_flight": self.context.inflight.count(region.id),
            "serving_status": served.status.value if served else None,
            "serving_policy_version": policy.version,
            "health": live_health(self.context.health, region.id),
        }

    async def written(self, change: Change[Any], object_id: str) -> JsonResponse:
        """Wait until this replica serves the change, then describe it."""
        await self.await_version(change.policy_version)
        if change.value is None:
            body = {
                "id": object_id,
                "deleted": True,
                "policy_version": change.policy_version,
                "warnings": list(change.warnings),
            }
            return _response(body)
        value = change.value
        extra: dict[str, Any] = {"result": change.outcome, "policy_version": change.policy_version}
        if isinstance(value, Region):
            extra |= self.serving(value)
        status = 201 if change.outcome == "created" else 200
        return _response(_rendered(value, **extra), status, etag_of(value))

    async def await_version(self, version: int) -> None:
        serves = self.context.serves
        if serves(version):
            return
        self.context.request_refresh()
        deadline = time.monotonic() + SERVE_WAIT_S
        while time.monotonic() < deadline:
            await asyncio.sleep(0.01)
            if serves(version):
                return

    async def listing(self, pick: Callable[[Any], list[ConfigValue]]) -> dict[str, Any]:
        policy = await _run(self.context.store.load_snapshot)
        data = []
        for value in pick(policy):
            extra = self.serving(value) if isinstance(value, Region) else {}
            data.append(_rendered(value, **extra))
        return {"object": "list", "data": data, "policy_version": policy.version}


def _region_routes(api: APIRouter, h: _Handlers, read: Any, write: Any) -> None:
    @api.get("/regions", dependencies=[read])
    async def list_regions() -> dict[str, Any]:
        return await h.listing(lambda p: list(p.regions))

    @api.get("/regions/{region_id}", dependencies=[read])
    async def get_region(region_id: str) -> JsonResponse:
        region = await _run(lambda: h.ops.get(REGIONS, region_id))
        return _response(_rendered(region, **h.serving(region)), etag=etag_of(region))

    @api.put("/regions/{region_id}", dependencies=[write])
    async def put_region(region_id: str, request: Request) -> JsonResponse:
        body, if_match = await h.body(request), request.headers.get("if-match")
        region = await _run(lambda: region_from_body(body, region_id))
        change = await _run(
            lambda: h.ops.put(
                REGIONS, region_id, lambda _: region, actor=_principal(request), if_match=if_match
            )
        )
        return await h.written(change, region_id)

    @api.patch("/regions/{region_id}", dependencies=[write])
    async def patch_region(region_id: str, request: Request) -> JsonResponse:
        body, if_match = await h.body(request), request.headers.get("if-match")

        def build(current: Region | None) -> Region:
            assert current is not None  # create=False: the store answers 404 first
            merged = patched(region_document(current), body, frozenset({"status", "weight"}))
            return region_from_body(merged, region_id)

        change = await _run(
            lambda: h.ops.put(
                REGIONS,
                region_id,
                build,
                actor=_principal(request),
                if_match=if_match,
                create=False,
                patch=True,
            )
        )
        return await h.written(change, region_id)

    @api.delete("/regions/{region_id}", dependencies=[write])
    async def delete_region(region_id: str, request: Request) -> JsonResponse:
        if_match = request.headers.get("if-match")
        change = await _run(
            lambda: h.ops.delete(REGIONS, region_id, actor=_principal(request), if_match=if_match)
        )
        return await h.written(change, region_id)


def _tenant_routes(api: APIRouter, h: _Handlers, read: Any, write: Any) -> None:
    @api.get("/tenants", dependencies=[read])
    async def list_tenants() -> dict[str, Any]:
        return await h.listing(lambda p: list(p.tenants.values()))

    @api.get("/tenants/{tenant_id}", dependencies=[read])
    async def get_tenant(tenant_id: str) -> JsonResponse:
        tenant = await _run(lambda: h.ops.get(TENANTS, tenant_id))
        return _response(_rendered(tenant), etag=etag_of(tenant))

    @api.put("/tenants/{tenant_id}", dependencies=[write])
    async def put_tenant(tenant_id: str, request: Request) -> JsonResponse:
        body, if_match = await h.body(request), request.headers.get("if-match")
        tenant, keys_given = await _run(lambda: tenant_from_body(body, tenant_id))
        build = keep_keys_unless_given(tenant, keys_given)
        change: Change[Tenant] = await _run(
            lambda: h.ops.put(
                TENANTS, tenant_id, build, actor=_principal(request), if_match=if_match
            )
        )
        return await h.written(change, tenant_id)

    @api.delete("/tenants/{tenant_id}", dependencies=[write])
    async def delete_tenant(tenant_id: str, request: Request) -> JsonResponse:
        if_match = request.headers.get("if-match")
        change = await _run(
            lambda: h.ops.delete(TENANTS, tenant_id, actor=_principal(request), if_match=if_match)
        )
        return await h.written(change, tenant_id)


def _regime_routes(api: APIRouter, h: _Handlers, read: Any, write: Any) -> None:
    @api.get("/regimes", dependencies=[read])
    async def list_regimes() -> dict[str, Any]:
        return await h.listing(lambda p: list(p.regimes))

    @api.get("/regimes/{regime_id}", dependencies=[read])
    async def get_regime(regime_id: str) -> JsonResponse:
        regime = await _run(lambda: h.ops.get(REGIMES, regime_id))
        return _response(_rendered(regime), etag=etag_of(regime))

    async def change_regime(
        regime_id: str, request: Request, build: Callable[[Regime | None], Regime], patch: bool
    ) -> JsonResponse:
        if_match = request.headers.get("if-match")
        change = await _run(
            lambda: h.ops.put(
                REGIMES,
                regime_id,
                build,
                actor=_principal(request),
                if_match=if_match,
                create=False,
                patch=patch,
            )
        )
        return await h.written(change, regime_id)

    @api.put("/regimes/{regime_id}", dependencies=[write])
    async def put_regime(regime_id: str, request: Request) -> JsonResponse:
        body = await h.body(request)
        regime = await _run(lambda: regime_from_body(body, regime_id))
        return await change_regime(regime_id, request, lambda _: regime, patch=False)

    @api.patch("/regimes/{regime_id}", dependencies=[write])
    async def patch_regime(regime_id: str, request: Request) -> JsonResponse:
        body = await h.body(request)

        def build(current: Regime | None) -> Regime:
            assert current is not None  # create=False: the store answers 404 first
            merged = patched(regime_document(current), body, frozenset({"enabled"}))
            return regime_from_body(merged, regime_id)

        return await change_regime(regime_id, request, build, patch=True)


def router(context: AdminContext, gate: OperatorGate) -> APIRouter:
    """The /admin routes over `context`."""
    api = APIRouter(prefix="/admin", tags=["admin"])
    handlers, read = _Handlers(context), gate.requires(READ_CONFIG)
    _region_routes(api, handlers, read, gate.requires(WRITE_REGIONS))
    _tenant_routes(api, handlers, read, gate.requires(WRITE_POLICY))
    _regime_routes(api, handlers, read, gate.requires(WRITE_POLICY))
    return api
