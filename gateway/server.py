"""Process entry points: the ASGI factory uvicorn workers import, and the serve loop."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
from collections.abc import Iterator
from types import FrameType
from typing import Any

import uvicorn
from pydantic import ValidationError

from compliance.snapshot import PolicySnapshot
from compliance.store.policy_store import PolicyStore, StoreUnavailable
from gateway.bootstrap import prepare_database
from gateway.http import limits as http_limits
from gateway.http.asgi import ASGIApp
from gateway.runtime import GatewayRuntime
from gateway.settings import ENV_PREFIX, Settings, setting_error
from gateway.simulator_ports import (
    SimulatedRegionsError,
    SimulatorPorts,
    check_existing,
    loopback_port,
)
from gateway.snapshot_cache import SnapshotCache
from gateway.telemetry.fast_paths import log_fast_paths
from regions.simulator.fleet import SimulatorFleet, SimulatorSpec, SimulatorStartError

logger = logging.getLogger(__name__)
UVICORN_OPTIONS: dict[str, Any] = {
    "loop": "uvloop",
    "http": "gateway.http.protocol:CoalescingHttpToolsProtocol",
    "access_log": False,
    "proxy_headers": False,  # X-Forwarded-For is judged by gateway.http.client_address only
    "log_level": "info",
    "timeout_graceful_shutdown": 10,
}
"""How uvicorn serves the gateway's app (both data planes)."""


def app_factory() -> ASGIApp:
    """Build the app from the environment (each uvicorn worker calls this)."""
    from gateway.app import create_app

    try:
        settings = Settings()
    except ValidationError as exc:  # one line, not uvicorn's traceback of the factory
        print(f"gateway: error: {setting_error(exc)}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
    http_limits.install(settings)  # before the server accepts a connection
    return create_app(GatewayRuntime(settings, freeze_heap=True))


def settings_to_environment(overrides: dict[str, str]) -> None:
    """Hand CLI overrides to worker processes through their GATEWAY_* variables."""
    for name, value in overrides.items():
        os.environ[f"{ENV_PREFIX}{name.upper()}"] = value


def simulator_specs(settings: Settings) -> list[SimulatorSpec]:
    """One simulator per catalog region whose base URL is on this machine's loopback."""
    specs = []
    for region in _catalog(settings).regions:
        port = loopback_port(region.base_url)
        if port:
            specs.append(
                SimulatorSpec(region_id=region.id, port=port, models=tuple(sorted(region.models)))
            )
    return specs


def _catalog(settings: Settings) -> PolicySnapshot:
    """The policy from the database, else (database down) from the verified snapshot cache."""
    store = PolicyStore(settings.resolved_database_url)
    try:
        return store.load_snapshot()
    except StoreUnavailable:
        cached = SnapshotCache.for_settings(settings).load() if settings.snapshot_cache else None
        if cached is None:
            raise
        return cached.policy
    finally:
        store.close()


@contextlib.contextmanager
def simulated_regions(
    settings: Settings, existing_ports: SimulatorPorts | None = None
) -> Iterator[SimulatorFleet | None]:
    """Run region simulators for the loopback regions when `simulate_regions` is on.

    `existing_ports`: what `--simulator-ports` asked for when the database already had its
    catalog (its ports stay; a different base port is an error). A simulator that does not
    start (its port is taken) is a `SimulatedRegionsError` naming the region and the port.
    """
    if not settings.simulate_regions:
        yield None
        return
    specs = simulator_specs(settings)
    if existing_ports is not None:
        check_existing((s.port for s in specs), existing_ports)
    fleet = SimulatorFleet(specs)
    try:
        fleet.start()
    except SimulatorStartError as exc:
        raise SimulatedRegionsError(
            f"simulated region {exc.spec.region_id} did not start: {exc.reason} (its port "
            "comes from the region's base_url in the catalog; `gateway demo --simulator-ports "
            "auto` seeds a new database with free ports)"
        ) from None
    try:
        for spec in specs:
            logger.info("simulated region %s on %s", spec.region_id, spec.base_url)
        yield fleet
    finally:
        fleet.stop()


class _Stopped(BaseException):
    """SIGTERM or SIGINT arrived: unwind so the simulators are stopped, then exit by it."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[None]:
    """Turn SIGTERM/SIGINT into an exception, so `with` blocks (the simulators) clean up.

    uvicorn handles both while it serves, then re-raises the signal it got once it has shut
    down; with the default handler the process died right there, leaving the simulators
    running. After the clean-up the process still ends by that signal (status as before).
    """
    stopping: list[int] = []

    def handler(signum: int, _frame: FrameType | None) -> None:
        if not stopping:  # a second signal must not interrupt the clean-up it started
            stopping.append(signum)
            raise _Stopped(signum)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    except _Stopped:
        pass
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
    if stopping:
        signal.signal(stopping[0], signal.SIG_DFL)
        signal.raise_signal(stopping[0])


def _prepare(settings: Settings, simulator_ports: SimulatorPorts | None) -> bool:
    """Migrate and seed (True if seeded now); with the database down, start anyway."""
    try:
        return prepare_database(settings, simulator_ports)
    except StoreUnavailable as exc:  # the runtime retries it
        logger.warning(
            "policy database unreachable at start (%s); starting not ready, retrying in the "
            "background",
            exc,
        )
        return False


def serve(settings: Settings, simulator_ports: SimulatorPorts | None = None) -> None:
    """Prepare the database, start simulated regions if asked, and run the HTTP server.

    `simulator_ports` moves the simulated regions of the catalog seeded now (see
    `gateway.simulator_ports`).
    """
    with _stop_on_signals():
        _run(settings, simulator_ports)


def _run(settings: Settings, simulator_ports: SimulatorPorts | None) -> None:
    if settings.data_plane == "envoy":  # before anything is created or started
        from gateway.envoy.serve import preflight

        preflight(settings)
    seeded = _prepare(settings, simulator_ports)
    log_fast_paths()
    with simulated_regions(settings, None if seeded else simulator_ports):
        if settings.data_plane == "envoy":
            from gateway.envoy.serve import serve_envoy

            serve_envoy(settings)
            return
        uvicorn.run(
            "gateway.server:app_factory",
            factory=True,
            host=settings.host,
            port=settings.port,
            workers=settings.workers,
            **UVICORN_OPTIONS,
        )
