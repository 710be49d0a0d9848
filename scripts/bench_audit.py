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
3. CPU per routing record, the figure that limits a one-core gateway (issue 5): records made
   by the real routing core and `gateway.routing.records.routing_record` are logged in strict
   mode at a fixed rate on uvloop, as the data path does (spool, fsync, batched SQLite writes,
   checkpoint job off); the event-loop thread's CPU and the rest of the process's (spool and
   database threads, their kernel time included) are measured, minus a run that only paces the
   same tasks. Median of three runs.

    python scripts/bench_audit.py [--records 200000] [--rates 500,2000,10000] [--seconds 5]
        [--cpu-rates 1000,3000] [--only latency|verify|cpu]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_ROOT))

import uvloop  # noqa: E402
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: E402

from compliance.audit.spool import Spool  # noqa: E402
from compliance.audit.verify import verify  # noqa: E402
from compliance.jurisdictions import DataClass  # noqa: E402
from compliance.routing_log import RoutingLogWriter  # noqa: E402
from compliance.store.engine import create_store_engine  # noqa: E402
from compliance.store.migrate import upgrade  # noqa: E402
from compliance.store.routing_log_store import RoutingLogStore  # noqa: E402
from gateway.routing.decide import decide  # noqa: E402
from gateway.routing.decision import Decision  # noqa: E402
from gateway.routing.facts import RequestFacts  # noqa: E402
from gateway.routing.records import Attempt, routing_record  # noqa: E402
from gateway.routing.snapshot import RoutingSnapshot  # noqa: E402
from tests.audit_chain_support import T0, decision, keys_of  # noqa: E402
from tests.audit_chain_support import build_chain as build  # noqa: E402
from tests.audit_support import TRACE, seeded_store  # noqa: E402


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


def decisions(url: str, count: int) -> list[Decision]:
    """`count` routed decisions (distinct ids) over the seeded demo policy in `url`."""
    store = seeded_store(url)
    snapshot = RoutingSnapshot(store.load_snapshot())
    store.close()
    facts = RequestFacts(
        request_id="bench",
        at=datetime.now(UTC),
        tenant_id="demo",
        client_country="DE",
        subject_country=None,
        data_class=DataClass("personal"),
        model="gpt-4o-mini",
    )
    made = decide(facts, snapshot)
    return [dataclasses.replace(made, id=f"{n:024x}") for n in range(count)]


async def paced_cpu(directory: Path, rate: int, seconds: float, log: bool) -> tuple[float, float]:
    """(event-loop thread, whole process) CPU seconds to run `rate` tasks a second for
    `seconds`, each logging one routing record in strict mode if `log` (else doing nothing),
    until every record is in the database."""
    url = f"sqlite:///{directory}/log.db"
    total = int(rate * seconds)
    made: list[Decision | None] = [*decisions(url, total)] if log else [None] * total
    store = RoutingLogStore(url)
    writer = RoutingLogWriter(store, Spool(directory / "spool"), batch_size=512)
    writer.start()
    await asyncio.sleep(0.1)

    async def one(decision: Decision | None) -> None:
        if decision is None:
            return
        await writer.record(
            routing_record(
                decision,
                outcome=decision.outcome,
                status_code=200,
                served_region=decision.chosen,
                attempts=[Attempt(decision.chosen or "", "ok", 200, 7.5)],
                latency_ms=0.25,
                trace_id=TRACE,
                client_ip_hmac="ab" * 32,
            )
        )

    loop_cpu, cpu, begin = time.thread_time(), time.process_time(), time.perf_counter()
    tasks = []
    per_tick = max(1, rate // 1000)
    for n in range(0, total, per_tick):
        tasks.extend(asyncio.ensure_future(one(d)) for d in made[n : n + per_tick])
        delay = begin + (n + per_tick) / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
    await asyncio.gather(*tasks)
    loop_cpu = time.thread_time() - loop_cpu
    await writer.close()
    cpu = time.process_time() - cpu
    stored = store.count() if log else 0
    store.close()
    assert stored == (total if log else 0), f"stored {stored} of {total}"
    return loop_cpu, cpu


def cpu_per_record(root: Path, rate: int, seconds: float) -> tuple[float, float]:
    """Median (loop, other threads) CPU microseconds per routing record at `rate`."""
    loops, others = [], []
    for run in range(3):
        figures = []
        for log in (False, True):
            directory = root / f"cpu-{rate}-{run}-{log}"
            directory.mkdir()
            if not log:
                seeded_store(f"sqlite:///{directory}/log.db").close()
            figures.append(uvloop.run(paced_cpu(directory, rate, seconds, log)))
        (base_loop, base_all), (loop, all_) = figures
        total = rate * seconds
        loops.append((loop - base_loop) / total * 1e6)
        others.append(((all_ - loop) - (base_all - base_loop)) / total * 1e6)
    return statistics.median(loops), statistics.median(others)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--rates", default="500,2000")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--dir", type=Path, default=None, help="scratch directory (data disk)")
    parser.add_argument("--cpu-rates", default="1000,3000")
    parser.add_argument("--only", choices=("latency", "verify", "cpu"), default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-audit-", dir=args.dir) as scratch:
        root = Path(scratch)
        if args.only in (None, "latency"):
            strict_latencies(root, args.rates, args.seconds)
        if args.only in (None, "verify"):
            verify_throughput(root, args.records)
        if args.only in (None, "cpu"):
            print("3. CPU per routing record (strict, real records, SQLite), median of 3 runs")
            for rate in (int(r) for r in args.cpu_rates.split(",")):
                loop, others = cpu_per_record(root, rate, args.seconds)
                print(
                    f"   {rate:>6} records/s: event loop {loop:.1f} us, spool and database "
                    f"threads {others:.1f} us, total {loop + others:.1f} us per record"
                )


def strict_latencies(root: Path, rates: str, seconds: float) -> None:
    """Section 1 (see the module docstring)."""
    print("1. strict durability: submit -> fsynced in the spool (group commit)")
    for rate in (int(r) for r in rates.split(",")):
        directory = root / f"rate-{rate}"
        directory.mkdir()
        ms = [x * 1000 for x in asyncio.run(strict_latency(directory, rate, seconds))]
        print(
            f"   {rate:>6} records/s: p50 {percentile(ms, 0.5):.3f} ms, "
            f"p90 {percentile(ms, 0.9):.3f} ms, p99 {percentile(ms, 0.99):.3f} ms, "
            f"mean {statistics.fmean(ms):.3f} ms ({len(ms)} records)"
        )


def verify_throughput(root: Path, records: int) -> None:
    """Section 2 (see the module docstring)."""
    print(f"2. gateway audit verify over {records:,} routing records (SQLite)")
    key = Ed25519PrivateKey.generate()
    path = root / "chain.db"
    started = time.perf_counter()
    build_chain(path, records, key)
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
