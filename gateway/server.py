"""Process entry points: the ASGI factory uvicorn workers import, and the serve loop."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from urllib.parse import urlsplit

import uvicorn

from compliance.store.policy_store import PolicyStore
from gateway import http_limits
from gateway.asgi import ASGIApp
from gateway.bootstrap import prepare_database
from gateway.fast_paths import log_fast_paths
from gateway.runtime import GatewayRuntime
from gateway.settings import ENV_PREFIX, Settings
from regions.simulator.fleet import SimulatorFleet, SimulatorSpec

logger = logging.getLogger(__name__)
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


def app_factory() -> ASGIApp:
    """Build the app from the environment (each uvicorn worker calls this)."""
    from gateway.app import create_app

    settings = Settings()
    http_limits.install(settings)  # before the server accepts a connection
    return create_app(GatewayRuntime(settings, freeze_heap=True))


def settings_to_environment(overrides: dict[str, str]) -> None:
    """Hand CLI overrides to worker processes through their GATEWAY_* variables."""
    for name, value in overrides.items():
        os.environ[f"{ENV_PREFIX}{name.upper()}"] = value


def simulator_specs(settings: Settings) -> list[SimulatorSpec]:
    """One simulator per catalog region whose base URL is on this machine's loopback."""
    store = PolicyStore(settings.resolved_database_url)
    try:
        regions = store.load_snapshot().regions
    finally:
        store.close()
    specs = []
    for region in regions:
        url = urlsplit(region.base_url)
        if url.hostname in LOOPBACK_HOSTS and url.port:
            specs.append(
                SimulatorSpec(
                    region_id=region.id, port=url.port, models=tuple(sorted(region.models))
                )
            )
    return specs


@contextlib.contextmanager
def simulated_regions(settings: Settings) -> Iterator[SimulatorFleet | None]:
    """Run region simulators for the loopback regions when `simulate_regions` is on."""
    if not settings.simulate_regions:
        yield None
        return
    specs = simulator_specs(settings)
    with SimulatorFleet(specs) as fleet:
        for spec in specs:
            logger.info("simulated region %s on %s", spec.region_id, spec.base_url)
        yield fleet


def serve(settings: Settings) -> None:
    """Prepare the database, start simulated regions if asked, and run the HTTP server."""
    prepare_database(settings)
    log_fast_paths()
    with simulated_regions(settings):
        uvicorn.run(
            "gateway.server:app_factory",
            factory=True,
            host=settings.host,
            port=settings.port,
            workers=settings.workers,
            loop="uvloop",
            http="gateway.http_protocol:CoalescingHttpToolsProtocol",
            access_log=False,
            proxy_headers=False,  # X-Forwarded-For is judged by gateway.client_address only
            log_level="info",
            timeout_graceful_shutdown=10,
        )
