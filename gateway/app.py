"""The ASGI application: the pure-ASGI data path in front, FastAPI for everything else."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from gateway.api import admin as admin_api
from gateway.api import audit as audit_api
from gateway.api import audit_chain as audit_chain_api
from gateway.api import residency as residency_api
from gateway.api import service as service_api
from gateway.api.access import OperatorGate
from gateway.api.errors import install_error_handlers
from gateway.exchange import RoutingRecorder
from gateway.http.asgi import ASGIApp, JsonResponse
from gateway.http.dispatch import Dispatcher
from gateway.http.proxy import InferenceProxy, UpstreamStreamBroken
from gateway.routing.snapshot import RoutingSnapshot
from gateway.runtime import GatewayRuntime


class _DropBrokenStreams(logging.Filter):
    """uvicorn logs an aborted stream as a crash; it is an upstream failure, already recorded."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], UpstreamStreamBroken))


def _api(runtime: GatewayRuntime) -> FastAPI:
    """Every route but inference: the route table."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await runtime.start()
        try:
            yield
        finally:
            await runtime.stop()

    def snapshot() -> RoutingSnapshot:
        return runtime.snapshot  # read per request: reloads swap it

    api = FastAPI(title="Residency Gateway", lifespan=lifespan, default_response_class=JsonResponse)
    install_error_handlers(api)
    api.include_router(service_api.router(runtime.readiness, runtime.metrics))
    api.include_router(
        residency_api.router(
            snapshot, runtime.auth_guard, runtime.facts, runtime.settings.max_body_bytes
        )
    )
    gate = OperatorGate(runtime.access, snapshot, runtime.auth_guard)
    admin = admin_api.AdminContext(
        store=runtime.store,
        snapshot=snapshot,
        request_refresh=runtime.request_refresh,
        serves=runtime.serves,
        inflight=runtime.inflight,
        health=runtime.health_tracker,
        max_body_bytes=runtime.settings.max_body_bytes,
    )
    api.include_router(admin_api.router(admin, gate))
    api.include_router(audit_api.router(runtime.store.engine, gate))
    api.include_router(audit_chain_api.router(runtime.audit, gate))
    api.mount("/console", audit_api.console_app(), name="console")
    return api


def _proxy(runtime: GatewayRuntime) -> InferenceProxy:
    """The data path, given the parts of the runtime it uses."""
    return InferenceProxy(
        lambda: runtime.snapshot,
        auth_guard=runtime.auth_guard,
        facts=runtime.facts,
        upstream=runtime.upstream,
        inflight=runtime.inflight,
        recorder=RoutingRecorder(runtime.routing_log, runtime.metrics, runtime.pseudonymiser),
        tracer=runtime.tracer,
        metrics=runtime.metrics,
        max_body_bytes=runtime.settings.max_body_bytes,
        max_attempts=runtime.settings.max_attempts,
    )


def create_app(runtime: GatewayRuntime) -> ASGIApp:
    """The gateway's ASGI app; the runtime starts and stops with the ASGI lifespan."""
    logging.getLogger("uvicorn.error").addFilter(_DropBrokenStreams())
    return Dispatcher(lambda: runtime.policy_loaded, _proxy(runtime), _api(runtime))
