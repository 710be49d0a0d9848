"""A real Envoy deciding with pushed tables, in front of the simulated regions."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

import httpx

from compliance.snapshot import PolicySnapshot
from compliance.store.catalog_file import load_catalog
from gateway.envoy.translate import EnvoyOptions
from gateway.envoy.xds_server import XdsServer
from regions.geoip import bundled_database_path
from regions.simulator.fleet import free_port
from tests.factories import default_regimes
from tests.integration.envoy_support import (
    RunningEnvoy,
    accepted,
    publish,
    require_envoy,
    running_envoy,
    wait_for,
)

CLIENT = httpx.Client(timeout=10.0, trust_env=False)


def catalog_policy(catalog: Path, version: int = 1) -> PolicySnapshot:
    """The test catalog's regions and tenants under the default policy pack."""
    regions, tenants = load_catalog(catalog)
    return PolicySnapshot(version, default_regimes(), regions, tenants)


def decision_options() -> EnvoyOptions:
    """Envoy deciding by today's law; one trusted hop so tests can pose as any client IP."""
    return EnvoyOptions(
        listener_port=free_port(),
        trusted_hops=1,
        decision_on=datetime.now(UTC).date(),
        geoip_database=str(bundled_database_path()),
    )


@dataclass
class DecidingEnvoy:
    """The ADS server, the Envoy it drives and the options its listener was built from."""

    server: XdsServer
    envoy: RunningEnvoy
    options: EnvoyOptions

    def post(
        self, body: object, headers: dict[str, str], path: str = "/v1/chat/completions"
    ) -> httpx.Response:
        """POST JSON to the Envoy listener."""
        return CLIENT.post(
            f"http://127.0.0.1:{self.options.listener_port}{path}", json=body, headers=headers
        )

    def healthy(self, region: str) -> bool:
        """True once Envoy's own health check passed for `region`."""
        prefix = f"region_{region}::127.0.0.1:"
        return any(
            line.startswith(prefix) and line.endswith("::health_flags::healthy")
            for line in self.envoy.admin("/clusters").text.splitlines()
        )


@contextmanager
def deciding_envoy(
    policy: PolicySnapshot,
    directory: Path,
    node: str,
    regions: tuple[str, ...],
    options: EnvoyOptions | None = None,
) -> Iterator[DecidingEnvoy]:
    """Push `policy` with the decision filter; wait until `regions` are healthy in Envoy.

    `options`: the listener's (default: `decision_options()`)."""
    require_envoy()
    server = XdsServer()
    server.start()
    options = options or decision_options()
    resources = publish(server, policy, options)
    try:
        with running_envoy(directory, server.port, node) as envoy:
            wait_for("the ACK of every type", lambda: accepted(server, node, resources.version))
            plane = DecidingEnvoy(server, envoy, options)
            for region in regions:
                wait_for(f"{region} healthy in Envoy", partial(plane.healthy, region))
            yield plane
    finally:
        server.stop()
