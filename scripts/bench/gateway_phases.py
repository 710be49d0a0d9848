"""Phases that measure the Python gateway alone: memory over many requests, a py-spy profile,
and N workers."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import time
from typing import Any

from bench import procs, profile
from bench.harness import LOAD_CORE, REPO, Bench, mib


async def memory(bench: Bench) -> dict[str, Any]:
    """RSS before and after `--requests` requests (closed loop, 16 connections)."""
    total = bench.args.requests
    pid = bench.gateway_pid
    before = procs.rss_kib(pid)
    samples: list[tuple[int, float]] = [(0, mib(before))]
    started = time.monotonic()

    def progress(done: int) -> None:
        samples.append((done, mib(procs.rss_kib(pid))))
        rate = done / (time.monotonic() - started)
        bench.log(f"  {done:,} / {total:,} requests ({rate:,.0f} req/s), RSS {samples[-1][1]} MiB")

    bench.log(f"memory: {total:,} requests through the gateway (closed loop, 16 connections)")
    every = max(1, min(100_000, total // 10))
    load = await bench.closed("gateway", total, 16, progress=progress, progress_every=every)
    await asyncio.sleep(2.0)  # let the routing-log writer drain its queue
    after = procs.rss_kib(pid)
    return {
        "requests": total,
        "rss_before_mib": mib(before),
        "rss_after_mib": mib(after),
        "growth_pct": round(100 * (after - before) / before, 2),
        "samples": samples,
        "load": {
            k: load[k]
            for k in ("ok", "failed", "achieved_rps", "p50_ms", "p99_ms", "server_cpu_us_per_req")
        },
    }


async def profile_gateway(bench: Bench, peak_rps: float) -> dict[str, Any]:
    """py-spy on the gateway while an open loop offers `--profile-rate` req/s."""
    args = bench.args
    rate = args.profile_rate or max(100, round(0.8 * peak_rps * 0.01) * 100)
    out = bench.tmp / "gateway.pyspy.raw"
    bench.log(f"profile: py-spy {args.profile_duration:g}s at {rate} req/s")
    await bench.settle()
    threads_before = procs.thread_cpu(bench.gateway_pid)
    argv = profile.py_spy_argv(bench.gateway_pid, out, args.profile_duration, 200)
    spy = bench.ps.start("py-spy", argv, LOAD_CORE)
    load = await bench.open_loop("gateway", rate, args.profile_duration + 1.0, settle=False)
    threads = thread_shares(bench.gateway_pid, threads_before, args.profile_duration + 1.0)
    with contextlib.suppress(subprocess.TimeoutExpired):
        await asyncio.to_thread(spy.wait, args.profile_duration + 30)
    bench.ps.stop("py-spy", timeout=5)
    if not out.exists():
        return {"error": f"py-spy wrote nothing: {bench.ps.log_tail('py-spy')}"}
    keep = bench.args.out / "gateway.pyspy.raw"
    keep.write_bytes(out.read_bytes())
    summary = profile.summarise(out, REPO)
    summary["raw_file"] = str(keep)
    summary["thread_cpu_percent_of_core"] = threads
    summary["load_under_profiler"] = {
        k: load[k] for k in ("offered_rps", "p50_ms", "p99_ms", "failed", "server_cpu_us_per_req")
    }
    bench.log(profile.format_report(summary))
    return summary


async def multi_worker(bench: Bench) -> dict[str, Any]:
    """Gateway with N workers on cores 0..N-1 (the load generator then shares a core)."""
    n = bench.args.workers
    cores = ",".join(str(c) for c in range(min(n, os.cpu_count() or n)))
    name = f"gateway-{n}w"
    bench.log(f"{n} workers on cores {cores}: peak and open loop")
    bench.start_gateway(name, n, cores)
    bench.payloads()
    await bench.closed(name, 2_000, 16)
    rows = []
    for rate in bench.args.rate_list:
        rows.append(await bench.open_loop(name, rate, bench.args.duration))
    result = {
        "workers": n,
        "cores": cores,
        "note": f"gateway on cores {cores}; load generator, wrk, upstream share core {LOAD_CORE}",
        "peak": await bench.wrk(name),
        "open_loop": rows,
    }
    result["records"] = bench.stop_gateway(name)
    return result


def thread_shares(pid: int, before: dict[int, float], seconds: float) -> dict[str, float]:
    """CPU used by the main thread and by all other threads, % of one core over `seconds`."""
    after = procs.thread_cpu(pid)
    used = {tid: cpu - before.get(tid, 0.0) for tid, cpu in after.items()}
    main = used.pop(pid, 0.0)
    return {
        "main_thread": round(100 * main / seconds, 1),
        "other_threads": round(100 * sum(used.values()) / seconds, 1),
        "threads": len(after),
    }
