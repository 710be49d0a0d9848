"""xDS push-to-use: how soon a policy change pushed over ADS decides Envoy's requests.

Each round alternately drains the region the benchmark client is routed to and restores it
(every change a new policy version). The clock starts at `XdsServer.set_snapshot` (the
translation is timed apart, before it) and stops at
- `ack`: Envoy's ACK of the new version for every resource type, and
- `use`: the first response the new policy decided (drain: a region other than the drained
  one answered; restore: the drained region answers again), one client sending back to back.
The resolution of `use` is one request round trip; a drain round also counts requests the
drained region answered after the ACK (must be 0). Answers other than 200 during the pushes are
counted: a state-of-the-world CDS update that removes a cluster before the RDS update stops
naming it makes Envoy answer 503 (`no_cluster`) for that gap.
"""

from __future__ import annotations

import http.client
import statistics
import time
from typing import Any

from bench.envoy_plane import EnvoyPlane, with_status

from compliance.snapshot import PolicySnapshot
from gateway.envoy.translate import REGION_HEADER
from regions.catalog import RegionStatus

ROUND_LIMIT_S = 10.0
AFTER_ACK_REQUESTS = 20
NO_CLUSTER = "http.residency.no_cluster"
"""Envoy's count of requests whose route named a cluster it no longer has (answered 503)."""


class _Client:
    """One keep-alive connection posting the benchmark request; returns who answered."""

    def __init__(self, port: int, path: str, headers: dict[str, str], body: bytes) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        self.path, self.headers, self.body = path, headers, body
        self.sent = 0
        self.failed = 0  # answers other than 200 (e.g. 503: a route to a cluster already gone)

    def region(self) -> str | None:
        """The region that answered (None unless 200)."""
        self.sent += 1
        self.conn.request("POST", self.path, self.body, self.headers)
        response = self.conn.getresponse()
        response.read()
        if response.status != 200:
            self.failed += 1
            return None
        return response.getheader(REGION_HEADER)

    def close(self) -> None:
        self.conn.close()


def push_to_use(
    plane: EnvoyPlane,
    policy: PolicySnapshot,
    region: str,
    rounds: int,
    request: tuple[str, dict[str, str], bytes],
) -> dict[str, Any]:
    """`rounds` drain/restore pushes of `region`; times in ms (see the module docstring)."""
    client = _Client(plane.port, *request)
    no_cluster = plane.stats().get(NO_CLUSTER, 0)
    translate_ms: list[float] = []
    ack_ms: list[float] = []
    use_ms: list[float] = []
    stale = timeouts = 0
    current = policy
    try:
        for number in range(rounds):
            draining = number % 2 == 0
            status = RegionStatus.DRAINING if draining else RegionStatus.ACTIVE
            current = with_status(current, region, status)
            started = time.perf_counter()
            resources = plane.translator(current, plane.options)
            translate_ms.append((time.perf_counter() - started) * 1e3)
            ack, use = _one_push(plane, client, resources.version, resources.by_type(), region)
            if ack is None or use is None:
                timeouts += 1
            else:
                ack_ms.append(ack)
                use_ms.append(use)
            if draining:
                stale += sum(client.region() == region for _ in range(AFTER_ACK_REQUESTS))
            time.sleep(0.2)
    finally:
        client.close()
        # Leave the policy as it was (the region active) for whatever runs next.
        plane.publish(with_status(current, region, RegionStatus.ACTIVE))
    return {
        "rounds": rounds,
        "region": region,
        "translate_p50_ms": _median(translate_ms),
        "ack_p50_ms": _median(ack_ms),
        "ack_max_ms": round(max(ack_ms), 2) if ack_ms else None,
        "use_p50_ms": _median(use_ms),
        "use_max_ms": round(max(use_ms), 2) if use_ms else None,
        "use_ms_by_round": [round(v, 2) for v in use_ms],
        "drained_answers_after_ack": stale,
        "rounds_timed_out": timeouts,
        "requests": client.sent,
        "non_200_answers": client.failed,
        "no_cluster_503s": plane.stats().get(NO_CLUSTER, 0) - no_cluster,
    }


def _one_push(
    plane: EnvoyPlane, client: _Client, version: str, resources: Any, region: str
) -> tuple[float | None, float | None]:
    """Push one snapshot; ms to the ACK and to the first response the new policy decided."""
    before = client.region()  # who answers under the old policy (the expectation flips)
    started = time.perf_counter()
    plane.server.set_snapshot(version, resources)
    ack = use = None
    while ack is None or use is None:
        elapsed = (time.perf_counter() - started) * 1e3
        if elapsed > ROUND_LIMIT_S * 1e3:
            break
        if use is None:
            answered = client.region()
            if answered is not None and (answered == region) != (before == region):
                use = (time.perf_counter() - started) * 1e3
        if ack is None and plane.accepted(version):
            ack = (time.perf_counter() - started) * 1e3
    return ack, use


def _median(values: list[float]) -> float | None:
    return round(statistics.median(values), 2) if values else None
