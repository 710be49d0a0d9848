"""Benchmark: the pure routing core, `decide(facts, snapshot)`. Not a test.

Builds the default policy pack, the 20-region catalog of `tests.factories` and a few tenants,
warms the snapshot's memo caches, then times every call over a realistic mix of requests
(clients and declared subjects from several regimes, every data class, several models, with
and without GeoIP coordinates) and prints the median, p90 and p99 in microseconds, plus the
per-stage medians from `Decision.stage_ns`. Target: median <= 20 us.

    python scripts/bench_decide.py [--calls 200000] [--seed 7] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_ROOT))

from gateway.routing.decide import decide  # noqa: E402
from gateway.routing.facts import RequestFacts  # noqa: E402
from gateway.routing.snapshot import RoutingSnapshot  # noqa: E402
from tests.factories import facts, routing_snapshot, tenant, twenty_regions  # noqa: E402

TARGET_MEDIAN_US = 20.0
NOW = datetime(2026, 11, 26, 9, 30, tzinfo=UTC)
DISTINCT_FACTS = 8192

# (client country, weight, GeoIP city coordinates)
CLIENTS: list[tuple[str, int, list[tuple[float, float]]]] = [
    ("DE", 14, [(52.52, 13.40), (48.14, 11.58), (50.11, 8.68), (53.55, 9.99)]),
    ("FR", 8, [(48.86, 2.35), (45.76, 4.84), (43.30, 5.37)]),
    ("NL", 4, [(52.37, 4.90)]),
    ("ES", 3, [(40.42, -3.70), (41.39, 2.17)]),
    ("IT", 3, [(45.46, 9.19), (41.90, 12.50)]),
    ("GB", 9, [(51.51, -0.13), (53.48, -2.24), (55.95, -3.19)]),
    ("CH", 3, [(47.37, 8.54), (46.20, 6.14)]),
    ("US", 16, [(40.71, -74.01), (37.77, -122.42), (41.88, -87.63), (30.27, -97.74)]),
    ("CA", 3, [(43.65, -79.38), (45.50, -73.57)]),
    ("IN", 12, [(19.08, 72.88), (12.97, 77.59), (28.61, 77.21)]),
    ("JP", 4, [(35.68, 139.69), (34.69, 135.50)]),
    ("KR", 2, [(37.57, 126.98)]),
    ("CN", 3, [(31.23, 121.47), (39.90, 116.40)]),
    ("RU", 1, [(55.76, 37.62)]),
    ("AU", 3, [(-33.87, 151.21), (-37.81, 144.96)]),
    ("BR", 4, [(-23.55, -46.63), (-22.91, -43.17)]),
    ("SG", 3, [(1.29, 103.85)]),
    ("IL", 1, [(32.08, 34.78)]),
    ("AR", 1, [(-34.60, -58.38)]),
    ("SA", 1, [(24.71, 46.68)]),
]
SUBJECTS = [(None, 70), ("DE", 8), ("IN", 8), ("GB", 4), ("FR", 3), ("US", 3), ("BR", 2)]
DATA_CLASSES = [
    ("personal", 55),
    ("public", 15),
    ("special", 5),
    ("health", 7),
    ("payment", 8),
    ("financial_securities", 5),
    ("insurance", 5),
]
MODELS = [
    ("gpt-4o-mini", 45),
    ("gpt-4o", 30),
    ("llama-3.1-70b", 8),
    ("text-embedding-3-small", 7),
    (None, 8),
    ("no-such-model", 2),
]
TENANTS = [
    tenant("demo"),
    tenant("acme-eu", home="DE"),
    tenant("fin-in", home="IN", opt_ins=["rbi_offshore_processing_with_purge"]),
    tenant("sdf-in", flags=["significant_data_fiduciary"]),
    tenant("global", transfers=[("gdpr", "US"), ("uk_gdpr", "US"), ("gdpr", "IN")]),
    tenant("narrow-eu", allowed_countries=["DE", "FR", "IE"], denied_regions=["eu-dublin"]),
]
TENANT_WEIGHTS = [("demo", 30), ("acme-eu", 20), ("fin-in", 15), ("sdf-in", 5)]
TENANT_WEIGHTS += [("global", 20), ("narrow-eu", 10)]


def _pick(rng: random.Random, table: list[tuple[Any, int]]) -> Any:
    return rng.choices([v for v, _ in table], weights=[w for _, w in table])[0]


def request_mix(rng: random.Random, n: int) -> list[RequestFacts]:
    """`n` distinct request facts drawn from the weighted tables above."""
    clients = [(c, w) for c, w, _ in CLIENTS]
    cities = {c: coords for c, _, coords in CLIENTS}
    out = []
    for i in range(n):
        client = _pick(rng, clients)
        out.append(
            facts(
                client=client,
                coords=rng.choice(cities[client]) if rng.random() < 0.7 else None,
                subject=_pick(rng, SUBJECTS),
                tenant_id=_pick(rng, TENANT_WEIGHTS),
                data_class=_pick(rng, DATA_CLASSES),
                model=_pick(rng, MODELS),
                at=NOW,
                request_id=f"req-{rng.getrandbits(64):016x}-{i}",
            )
        )
    return out


def build_snapshot() -> RoutingSnapshot:
    # one region down, as in a real fleet
    return routing_snapshot(twenty_regions(), tenants=TENANTS, health={"eu-paris": False})


def percentile(ordered: list[int], q: float) -> int:
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run(calls: int, seed: int) -> dict[str, Any]:
    snapshot = build_snapshot()
    mix = request_mix(random.Random(seed), DISTINCT_FACTS)
    for f in mix * 2:  # warm-up: fills the evaluation and distance memos, settles the interpreter
        decide(f, snapshot)
    clock = time.perf_counter_ns
    totals: list[int] = []
    stages: tuple[list[int], list[int], list[int]] = ([], [], [])
    outcomes: Counter[str] = Counter()
    n_mix = len(mix)
    for i in range(calls):
        f = mix[i % n_mix]
        t0 = clock()
        decision = decide(f, snapshot)
        totals.append(clock() - t0)
        locate_ns, policy_ns, select_ns = decision.stage_ns
        stages[0].append(locate_ns)
        stages[1].append(policy_ns)
        stages[2].append(select_ns)
        outcomes[decision.outcome.value] += 1
    totals.sort()
    for s in stages:
        s.sort()
    median_us = percentile(totals, 0.5) / 1000
    return {
        "calls": calls,
        "distinct_facts": n_mix,
        "regions": len(snapshot.policy.regions),
        "regimes": len(snapshot.policy.regimes),
        "tenants": len(snapshot.policy.tenants),
        "python": sys.version.split()[0],
        "median_us": median_us,
        "p90_us": percentile(totals, 0.9) / 1000,
        "p99_us": percentile(totals, 0.99) / 1000,
        "max_us": totals[-1] / 1000,
        "stage_median_us": {
            name: percentile(s, 0.5) / 1000
            for name, s in zip(("locate", "policy", "select"), stages, strict=True)
        },
        "outcomes": dict(outcomes.most_common()),
        "target_median_us": TARGET_MEDIAN_US,
        "meets_target": median_us <= TARGET_MEDIAN_US,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200_000, help="timed decide() calls")
    parser.add_argument("--seed", type=int, default=7, help="seed of the request mix")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write results here")
    args = parser.parse_args(argv)
    result = run(args.calls, args.seed)
    stage = result["stage_median_us"]
    print(
        f"decide() over {result['calls']:,} calls ({result['distinct_facts']:,} distinct facts, "
        f"{result['regions']} regions, {result['regimes']} regimes, {result['tenants']} tenants)"
    )
    print(
        f"  median {result['median_us']:.2f} us   p90 {result['p90_us']:.2f} us   "
        f"p99 {result['p99_us']:.2f} us   max {result['max_us']:.1f} us"
    )
    print(
        f"  stage medians: locate {stage['locate']:.2f} us, policy {stage['policy']:.2f} us, "
        f"select {stage['select']:.2f} us"
    )
    print(f"  outcomes: {result['outcomes']}")
    verdict = "meets" if result["meets_target"] else "MISSES"
    print(f"  {verdict} the target (median <= {TARGET_MEDIAN_US:.0f} us)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n", "utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
