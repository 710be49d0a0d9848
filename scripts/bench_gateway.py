#!/usr/bin/env python3
"""Gateway overhead benchmark (issue 5): the gateway against a direct path and a naive proxy.

Starts a fast fake upstream (core 1), a naive passthrough proxy and the gateway (`python -m
gateway.cli serve`, embedded defaults, full pipeline: GeoIP, policy, selection, routing record,
tracing with the default sampler) pinned to core 0, and measures from core 1: one client,
open-loop fixed rates, peak req/s (wrk), SSE streaming, RSS over many requests, optionally a
py-spy profile and an N-worker run. Writes bench-results/gateway.json and gateway.png.

    ./dev bench-gateway            full run (1,000,000 requests for the memory figure)
    ./dev bench-gateway --quick    a short smoke run of everything
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench import peak, procs, profile, report
from bench.harness import (
    CLIENT_IP,
    GATEWAY_CORE,
    LOAD_CORE,
    PYTHON,
    REPO,
    Bench,
    cpu_idle,
    fdatasync_ms,
    mib,
    smoke,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--quick", action="store_true", help="short smoke run of every phase")
    p.add_argument("--requests", type=int, help="requests for the RSS figure (default 1,000,000)")
    p.add_argument("--single", type=int, help="sequential requests at one client (default 2,000)")
    p.add_argument("--rates", default="500,1000,2000", help="open-loop offered rates, req/s")
    p.add_argument("--duration", type=float, help="seconds per open-loop rate (default 10)")
    p.add_argument("--peak-duration", type=float, help="seconds per wrk run (default 10)")
    p.add_argument("--peak-connections", type=int, default=64)
    p.add_argument(
        "--peak-rounds",
        type=int,
        help="wrk runs per path, interleaved; the median counts (default 3, --quick 1)",
    )
    p.add_argument("--streams", type=int, help="SSE streams per path (default 200)")
    p.add_argument("--chunks", type=int, default=64, help="SSE events per stream")
    p.add_argument("--chunk-interval-ms", type=float, default=1.0)
    p.add_argument("--workers", type=int, default=1, help="also run the gateway with N workers")
    p.add_argument("--profile", action="store_true", help="py-spy the gateway at --profile-rate")
    p.add_argument(
        "--profile-rate", type=int, help="req/s offered while profiling (default: 80%% of peak)"
    )
    p.add_argument("--profile-duration", type=float, help="seconds (default 10)")
    p.add_argument(
        "--gateway-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra gateway setting, e.g. GATEWAY_AUDIT_DURABILITY=relaxed (repeatable)",
    )
    p.add_argument(
        "--no-trace-export",
        action="store_true",
        help="run the gateway with OTEL_TRACES_EXPORTER=none (default: OTLP/HTTP to a sink)",
    )
    p.add_argument("--out", type=Path, default=REPO / "bench-results")
    p.add_argument("--tag", help="suffix of the result files, e.g. relaxed -> gateway-relaxed.json")
    args = p.parse_args(argv)
    quick = args.quick
    defaults = {
        "requests": 20_000 if quick else 1_000_000,
        "single": 300 if quick else 2_000,
        "duration": 3.0 if quick else 10.0,
        "peak_duration": 3.0 if quick else 10.0,
        "peak_rounds": 1 if quick else 3,
        "streams": 30 if quick else 200,
        "profile_duration": 4.0 if quick else 10.0,
    }
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    args.rate_list = [int(r) for r in args.rates.split(",") if r.strip()]
    args.extra_env = {}
    for item in args.gateway_env:
        name, sep, value = item.partition("=")
        if not sep or not name:
            p.error(f"--gateway-env: expected NAME=VALUE, got {item!r}")
        args.extra_env[name] = value
    return args


async def run(bench: Bench) -> dict[str, Any]:
    args = bench.args
    say = bench.log
    results: dict[str, Any] = {"meta": meta(args)}
    results["meta"]["fdatasync"] = fdatasync_ms(bench.tmp)
    results["meta"]["cpu_idle"] = cpu_idle()
    say("starting upstream (core 1), naive passthrough and gateway (core 0)")
    bench.start_upstream()
    if not args.no_trace_export:
        bench.start_trace_sink()
    bench.start_naive()
    bench.gateway_pid = bench.start_gateway("gateway", 1, GATEWAY_CORE)
    headers = smoke(bench.ports["gateway"])
    smoke(bench.ports["gateway"], stream=True)
    bench.gateway_ok += 2
    results["meta"]["routed_to"] = headers.get("x-residency-region")
    bench.payloads()
    paths = report.PATHS
    for name in paths:  # warm-up: connection pools, caches, JIT-free but lazy imports
        await bench.closed(name, 2_000 if not args.quick else 500, 8)
    results["memory"] = {"rss_startup_mib": mib(procs.rss_kib(bench.gateway_pid))}

    bench.checkpoint(results)
    say(f"one client: {args.single} sequential requests per path")
    results["single_client"] = {n: await bench.closed(n, args.single, 1) for n in paths}

    bench.checkpoint(results)
    results["open_loop"] = {n: [] for n in paths}
    for rate in args.rate_list:
        for name in paths:  # interleaved, so machine noise hits every path alike
            say(f"open loop {rate} req/s for {args.duration:g}s: {name}")
            results["open_loop"][name].append(await bench.open_loop(name, rate, args.duration))
            await asyncio.sleep(0.3)

    bench.checkpoint(results)
    rounds: dict[str, list[dict[str, Any]]] = {name: [] for name in paths}
    for number in range(1, args.peak_rounds + 1):
        for name in paths:  # interleaved: a slow spell of the machine hits every path alike
            say(
                f"peak (wrk, {args.peak_connections} connections, {args.peak_duration:g}s, "
                f"round {number}/{args.peak_rounds}): {name}"
            )
            rounds[name].append(await bench.wrk(name))
            await asyncio.sleep(0.5)
    results["peak"] = {name: peak.median_of_rounds(runs) for name, runs in rounds.items()}

    bench.checkpoint(results)
    say(f"streaming: {args.streams} streams of {args.chunks} chunks per path")
    results["streaming"] = {n: await bench.streams(n) for n in paths}

    bench.checkpoint(results)
    if args.profile:
        results["profile"] = await profile_gateway(bench, results["peak"]["gateway"]["rps"])

    bench.checkpoint(results)
    if args.requests > 0:
        results["memory"].update(await memory(bench))

    results["records"] = bench.stop_gateway("gateway")
    results["records"]["responses_ok"] = bench.gateway_ok
    results["traces"] = bench.trace_stats()  # after the stop: the exporter flushes at shutdown
    written = results["records"].get("written")
    if written is not None:
        results["records"]["missing"] = max(0, bench.gateway_ok - written)

    bench.checkpoint(results)
    if args.workers > 1:
        results["workers"] = await multi_worker(bench)

    results["meta"]["loadavg_at_end"] = os.getloadavg()
    results["added"] = added(results)
    results["targets"] = report.targets(results)
    return results


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


def added(results: dict[str, Any]) -> dict[str, Any]:
    """What the gateway adds over the direct path, and its share of the naive peak."""
    single, stream, peak_ = results["single_client"], results["streaming"], results["peak"]
    out = {
        "single_p50_ms": round(single["gateway"]["p50_ms"] - single["direct"]["p50_ms"], 4),
        "single_p99_ms": round(single["gateway"]["p99_ms"] - single["direct"]["p99_ms"], 4),
        "naive_single_p50_ms": round(single["naive"]["p50_ms"] - single["direct"]["p50_ms"], 4),
        "stream_ttft_p50_ms": round(
            stream["gateway"]["ttft_p50_ms"] - stream["direct"]["ttft_p50_ms"], 4
        ),
        "stream_chunk_p50_ms": round(
            stream["gateway"]["chunk_transit_p50_ms"] - stream["direct"]["chunk_transit_p50_ms"], 4
        ),
        "stream_chunk_gap_ms": round(
            stream["gateway"]["chunk_gap_mean_ms"] - stream["direct"]["chunk_gap_mean_ms"], 4
        ),
        # the median of each round's ratio: the two ran back to back, so they saw the same machine
        "share_of_naive_peak_pct": share_of_naive(peak_["gateway"], peak_["naive"]),
        # CPU per request is far less sensitive to other load on the machine than wall time:
        "peak_cpu_us_per_req_over_naive": round(
            peak_["gateway"]["server_cpu_us_per_req"] - peak_["naive"]["server_cpu_us_per_req"], 1
        ),
        "cpu_bound_peak_estimate_rps": round(1e6 / peak_["gateway"]["server_cpu_us_per_req"]),
        "naive_cpu_bound_peak_estimate_rps": round(1e6 / peak_["naive"]["server_cpu_us_per_req"]),
    }
    return out


def share_of_naive(gateway: dict[str, Any], naive: dict[str, Any]) -> float:
    """The gateway's peak as % of the naive proxy's: the median over rounds run side by side."""
    by_round = zip(
        gateway.get("rps_by_round", [gateway["rps"]]),
        naive.get("rps_by_round", [naive["rps"]]),
        strict=True,
    )
    return round(statistics.median([100 * g / n for g, n in by_round]), 1)


def meta(args: argparse.Namespace) -> dict[str, Any]:
    rev = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    dirty = bool(
        subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "gateway", "compliance", "regions"],
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    return {
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "git": rev + ("+dirty" if dirty else ""),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "quick": args.quick,
        "loadavg_at_start": os.getloadavg(),
        "gateway_env": args.extra_env,
        "gateway_cores": GATEWAY_CORE,
        "load_cores": LOAD_CORE,
        "client_ip_header": CLIENT_IP,
        "settings": {
            k: v for k, v in vars(args).items() if k not in ("out", "rate_list", "extra_env")
        },
        "latency_note": "open-loop latency runs from each request's scheduled send time",
        "stream_note": "chunk transit = client receive time - upstream write time per SSE event",
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if (os.cpu_count() or 1) < 2:
        print("bench-gateway: needs 2 cores (gateway on core 0, load on core 1)", file=sys.stderr)
        return 2
    missing = [tool for tool in ("taskset", "wrk") if shutil.which(tool) is None]
    if args.profile and not (Path(PYTHON).parent / "py-spy").exists():
        missing.append("py-spy (pip install py-spy into the venv)")
    if missing:
        print(f"bench-gateway: missing: {', '.join(missing)}", file=sys.stderr)
        return 2
    os.sched_setaffinity(0, {int(LOAD_CORE)})
    args.out.mkdir(parents=True, exist_ok=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the finally blocks
    stem = "gateway" + ("-quick" if args.quick else "") + (f"-{args.tag}" if args.tag else "")
    with tempfile.TemporaryDirectory(prefix="bench-gateway-") as tmp_name:
        tmp = Path(tmp_name)
        log_dir = args.out / "logs"
        log_dir.mkdir(exist_ok=True)
        for old in log_dir.glob("*.log"):
            old.unlink()
        ps = procs.ProcessSet(log_dir)
        try:
            bench = Bench(args, ps, tmp)
            bench.partial = args.out / f"{stem}.partial.json"
            results = uvloop.run(run(bench))
        except (procs.StartError, RuntimeError, OSError) as exc:
            print(f"bench-gateway: {exc}", file=sys.stderr)
            return 1
        finally:
            ps.stop_all()
    json_path, png_path = args.out / f"{stem}.json", args.out / f"{stem}.png"
    json_path.write_text(json.dumps(results, indent=2, default=str) + "\n")
    (args.out / f"{stem}.partial.json").unlink(missing_ok=True)
    report.chart(results, png_path)
    print()
    print(report.table(results))
    print(f"\nwrote {json_path} and {png_path}")
    return 0 if all(t["met"] is not False for t in results["targets"][-1:]) else 1


if __name__ == "__main__":
    sys.exit(main())
