"""Benchmark: policy snapshot -> Envoy resources (`gateway.envoy.translate`). Not a test.

Translates catalogs of 5, 20 and 50 regions (the 20-region catalog of `tests.factories`; 5 is
its first five, 50 adds copies of it a few kilometres away) with the in-Envoy decision on, and
prints the best of `--repeat` timings per size, the number of failover orders (aggregate
clusters) and the size of the pushed resources. The issue wants a change at every Envoy within
1 s, so translating 20 regions should take well under that.

    python scripts/bench_translate.py [--sizes 5,20,50] [--repeat 3] [--profile 20]
"""

from __future__ import annotations

import argparse
import cProfile
import dataclasses
import pstats
import sys
import time
from datetime import date
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_ROOT))

from compliance.snapshot import PolicySnapshot, hash_api_key  # noqa: E402
from gateway.envoy.translate import EnvoyOptions, EnvoyResources, translate  # noqa: E402
from regions.catalog import Region  # noqa: E402
from tests.factories import default_regimes, tenant, twenty_regions  # noqa: E402

ON = date(2026, 11, 26)


def catalog(size: int) -> tuple[Region, ...]:
    """`size` regions: the 20-region catalog, cut or extended with nearby copies."""
    base = twenty_regions()
    regions = list(base[:size])
    copy = 1
    while len(regions) < size:
        for region in base:
            if len(regions) == size:
                break
            regions.append(
                dataclasses.replace(
                    region,
                    id=f"{region.id}-{copy}",
                    latitude=region.latitude + 0.05 * copy,
                    base_url=f"http://{region.id}-{copy}.invalid",
                )
            )
        copy += 1
    return tuple(regions)


def policy(size: int) -> PolicySnapshot:
    """The default pack over `size` regions, with three tenants of distinct policy classes."""
    tenants = [
        dataclasses.replace(t, api_key_hashes=frozenset({hash_api_key(f"rg-{t.id}-key")}))
        for t in (
            tenant("demo"),
            tenant("acme", home="DE"),
            tenant("narrow", allowed_countries=["GB", "US"]),
        )
    ]
    return PolicySnapshot(1, default_regimes(), list(catalog(size)), tenants)


OPTIONS = EnvoyOptions(decision_on=ON, geoip_database="/dev/null")


def timed(snapshot: PolicySnapshot, repeat: int) -> tuple[float, EnvoyResources]:
    """The best wall-clock time of `repeat` translations, and the last result."""
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        resources = translate(snapshot, OPTIONS)
        best = min(best, time.perf_counter() - started)
    return best, resources


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="5,20,50", help="catalog sizes, comma separated")
    parser.add_argument("--repeat", type=int, default=3, help="translations per size")
    parser.add_argument("--profile", type=int, help="profile one translation of this size")
    args = parser.parse_args()
    if args.profile:
        snapshot = policy(args.profile)
        translate(snapshot, OPTIONS)  # warm: pydantic builds its schemas on first use
        profiler = cProfile.Profile()
        profiler.runcall(translate, snapshot, OPTIONS)
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(30)
        return 0
    print(f"{'regions':>7} {'seconds':>8} {'aggregates':>10} {'bytes':>10}")
    for size in (int(s) for s in args.sizes.split(",")):
        seconds, resources = timed(policy(size), args.repeat)
        aggregates = sum(1 for c in resources.clusters if c.name.startswith("failover_"))
        pushed = sum(len(bytes(m)) for m in (*resources.routes, *resources.clusters))
        print(f"{size:>7} {seconds:>8.3f} {aggregates:>10} {pushed:>10}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
