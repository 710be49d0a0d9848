"""Benchmark: audit-chain costs. Prints two figures the issue sets targets for.

1. Strict-durability latency: what waiting for a routing record to be fsynced in the local spool
   adds to a request (target <= 1 ms p50 at 500 req/s). Measured directly on the real writer
   (`RoutingLogWriter` + spool in a temporary directory on the data disk, a real SQLite store
   draining it in the background): records are submitted at a fixed rate and each one's time
   from submit to "durable" is recorded. Several rates show the group commit at work.
2. `gateway audit verify` throughput (target >= 100,000 records/s): a SQLite chain of N routing
   records (plus a config change every 1,000 and a signed checkpoint every 10,000) is written
   exactly as the gateway writes it, then verified in one process and with one worker process
   per CPU (what `gateway audit verify` uses); best of two runs each.

    python scripts/bench_audit.py [--records 200000] [--rates 500,2000,10000] [--seconds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_ROOT))

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: E402

from compliance.audit.spool import Spool  # noqa: E402
from compliance.audit.verify import verify  # noqa: E402
from compliance.routing_log import RoutingLogWriter  # noqa: E402
from compliance.store.engine import create_store_engine  # noqa: E402
from compliance.store.migrate import upgrade  # noqa: E402
from compliance.store.routing_log_store import RoutingLogStore  # noqa: E402
from tests.audit_chain_support import T0, decision, keys_of  # noqa: E402
from tests.audit_chain_support import build_chain as build  # noqa: E402


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def strict_latency(directory: Path, rate: int, seconds: float) -> list[float]:
    """Submit `rate` records a second for `seconds`; each one's submit-to-durable time (s)."""
    url = f"sqlite:///{directory}/log.db"
    upgrade(url)
    store = RoutingLogStore(url)
    writer = RoutingLogWriter(store, Spool(directory / "spool"), batch_size=512)
    writer.start()
    latencies: list[float] = []

    async def one(n: int) -> None:
        started = time.perf_counter()
        await writer.record(decision(n, T0 + timedelta(microseconds=n)))
        latencies.append(time.perf_counter() - started)

    tasks = []
    begin = time.perf_counter()
    total = int(rate * seconds)
    for n in range(total):
        delay = begin + n / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(n)))
    await asyncio.gather(*tasks)
    await writer.close()
    stored = store.count()
    store.close()
    assert stored == total, f"stored {stored} of {total}"
    return latencies


def build_chain(path: Path, records: int, key: Ed25519PrivateKey) -> None:
    """`records` decisions, a config change every 1,000, a checkpoint every 10,000, written by
    the gateway's own code (RoutingLogStore.append_batch, record_change, checkpoints)."""
    url = f"sqlite:///{path}"
    upgrade(url)
    engine = create_store_engine(url)
    build(engine, key, records, change_every=1000, checkpoint_every=10_000, batch=1000)
    engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--rates", default="500,2000")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--dir", type=Path, default=None, help="scratch directory (data disk)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-audit-", dir=args.dir) as scratch:
        root = Path(scratch)
        print("1. strict durability: submit -> fsynced in the spool (group commit)")
        for rate in (int(r) for r in args.rates.split(",")):
            directory = root / f"rate-{rate}"
            directory.mkdir()
            ms = [x * 1000 for x in asyncio.run(strict_latency(directory, rate, args.seconds))]
            print(
                f"   {rate:>6} records/s: p50 {percentile(ms, 0.5):.3f} ms, "
                f"p90 {percentile(ms, 0.9):.3f} ms, p99 {percentile(ms, 0.99):.3f} ms, "
                f"mean {statistics.fmean(ms):.3f} ms ({len(ms)} records)"
            )
        print(f"2. gateway audit verify over {args.records:,} routing records (SQLite)")
        key = Ed25519PrivateKey.generate()
        path = root / "chain.db"
        started = time.perf_counter()
        build_chain(path, args.records, key)
        print(f"   built in {time.perf_counter() - started:.1f} s")
        engine = create_store_engine(f"sqlite:///{path}")
        workers = os.cpu_count() or 1
        for label, count in (("1 process", 1), (f"{workers} processes (the CLI default)", workers)):
            runs = []
            for _ in range(2):
                cpu = time.process_time()
                report = verify(engine, keys_of(key), workers=count)
                runs.append((report, time.process_time() - cpu))
            best, cpu = min(runs, key=lambda run: run[0].seconds)
            assert best.ok, best.summary()
            on_cpu = f", {best.records / cpu:,.0f} per CPU-second" if count == 1 else ""
            print(
                f"   {label}: {best.summary()} ({best.checkpoints} checkpoints) in "
                f"{best.seconds:.2f} s = {best.records / best.seconds:,.0f} records/s{on_cpu}"
            )
        print(f"   (load average while measuring: {os.getloadavg()[0]:.1f} on {workers} CPUs)")
        engine.dispose()


if __name__ == "__main__":
    main()
