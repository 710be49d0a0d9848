#!/usr/bin/env python3
"""Gateway overhead benchmark (issues 5 and 15): both data planes against a direct path and a
naive proxy.

Starts a fast fake upstream (core 1), then pinned to core 0: a naive aiohttp passthrough, the
Python gateway (`python -m gateway.cli serve`, embedded defaults, full pipeline: GeoIP, policy,
selection, routing record, tracing with the default sampler) and, with `--data-plane envoy`
(default), two Envoys (`--concurrency 1`) driven by our ADS server: plain passthrough (the
ceiling) and the in-Envoy decision (bench.envoy_plane). From core 1 it measures, in interleaved
rounds: one client, open-loop fixed rates, peak req/s (wrk), SSE streaming; then xDS
push-to-use, RSS over many requests, optionally a py-spy profile and an N-worker run. Ratios
compare paths run side by side. Writes bench-results/gateway.json and gateway.png.

    ./dev bench-gateway                        full run (1,000,000 requests for the memory figure)
    ./dev bench-gateway --quick                a short smoke run of everything
    ./dev bench-gateway --data-plane python    without the Envoy rows
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench import envoy_plane, figures, gateway_phases, peak, procs, push, report
from bench.harness import (
    BODY,
    CLIENT_IP,
    GATEWAY_CORE,
    INFERENCE_PATH,
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
    p.add_argument(
        "--data-plane",
        choices=("envoy", "python"),
        default="envoy",
        help="envoy (default): also plain Envoy and Envoy with the in-Envoy decision, each on "
        "one core; python: only direct, naive and the Python gateway",
    )
    p.add_argument(
        "--envoy-access-log",
        action="store_true",
        help="the decision Envoy also writes its JSON access log (the Envoy routing records' "
        "source) to the temporary directory",
    )
    p.add_argument(
        "--push-rounds", type=int, help="xDS drain/restore pushes timed (default 10, --quick 4)"
    )
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
        "push_rounds": 4 if quick else 10,
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
    planes = start_envoys(bench) if args.data_plane == "envoy" else {}
    envoy_paths = tuple(planes)
    bench.payloads()
    paths = ("direct", "naive", *envoy_paths, "gateway")
    results["meta"]["paths"] = paths
    for name in paths:  # warm-up: connection pools, caches, JIT-free but lazy imports
        await bench.closed(name, 2_000 if not args.quick else 500, 8)
    results["memory"] = {"rss_startup_mib": mib(procs.rss_kib(bench.gateway_pid))}

    bench.checkpoint(results)
    say(f"one client: {args.single} sequential requests per path, {args.peak_rounds} rounds")
    single = await interleaved(paths, args.peak_rounds, lambda n: bench.closed(n, args.single, 1))
    results["single_client"] = {n: figures.merge_runs(runs) for n, runs in single.items()}

    bench.checkpoint(results)
    results["open_loop"] = {n: [] for n in paths}
    for rate in args.rate_list:
        for name in paths:  # interleaved, so machine noise hits every path alike
            say(f"open loop {rate} req/s for {args.duration:g}s: {name}")
            results["open_loop"][name].append(await bench.open_loop(name, rate, args.duration))
            await asyncio.sleep(0.3)

    bench.checkpoint(results)
    say(
        f"peak (wrk, {args.peak_connections} connections, {args.peak_duration:g}s, "
        f"{args.peak_rounds} interleaved rounds)"
    )
    rounds = await interleaved(paths, args.peak_rounds, bench.wrk, pause=0.5, say=say)
    results["peak"] = {name: peak.median_of_rounds(runs) for name, runs in rounds.items()}

    bench.checkpoint(results)
    per_round = -(-args.streams // args.peak_rounds)
    say(f"streaming: {per_round} streams of {args.chunks} chunks per path and round")
    streamed = await interleaved(paths, args.peak_rounds, lambda n: bench.streams(n, per_round))
    results["streaming"] = {n: figures.merge_runs(runs) for n, runs in streamed.items()}

    bench.checkpoint(results)
    if bench.policy is not None and args.push_rounds > 0:
        region = results["meta"]["routed_to"]
        say(f"xDS push-to-use: {args.push_rounds} pushes draining/restoring {region}")
        request = (INFERENCE_PATH, bench.headers(envoy_plane.DECISION), BODY)
        results["push_to_use"] = await asyncio.to_thread(
            push.push_to_use,
            planes[envoy_plane.DECISION],
            bench.policy,
            region,
            args.push_rounds,
            request,
        )
    if planes:
        results["envoy_stats"] = {n: plane.stats() for n, plane in planes.items()}
        bench.stop_envoys()

    bench.checkpoint(results)
    if args.profile:
        results["profile"] = await gateway_phases.profile_gateway(
            bench, results["peak"]["gateway"]["rps"]
        )

    bench.checkpoint(results)
    if args.requests > 0:
        results["memory"].update(await gateway_phases.memory(bench))

    results["records"] = bench.stop_gateway("gateway")
    results["records"]["responses_ok"] = bench.gateway_ok
    results["traces"] = bench.trace_stats()  # after the stop: the exporter flushes at shutdown
    written = results["records"].get("written")
    if written is not None:
        results["records"]["missing"] = max(0, bench.gateway_ok - written)

    bench.checkpoint(results)
    if args.workers > 1:
        results["workers"] = await gateway_phases.multi_worker(bench)

    results["meta"]["loadavg_at_end"] = os.getloadavg()
    results["added"] = figures.added(results)
    if envoy_paths:
        results["envoy_added"] = figures.envoy_added(results)
    results["targets"] = report.targets(results)
    return results


async def interleaved(
    paths: Sequence[str],
    rounds: int,
    measure: Callable[[str], Awaitable[dict[str, Any]]],
    pause: float = 0.0,
    say: Callable[[str], None] | None = None,
) -> dict[str, list[dict[str, Any]]]:
    """`measure` every path once per round, path after path: a slow spell of the machine hits
    every path alike, so figures of one round compare."""
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in paths}
    for number in range(1, rounds + 1):
        for name in paths:
            if say is not None:
                say(f"  round {number}/{rounds}: {name}")
            runs[name].append(await measure(name))
            await asyncio.sleep(pause)
    return runs


def start_envoys(bench: Bench) -> dict[str, envoy_plane.EnvoyPlane]:
    """Plain Envoy and Envoy with the decision, each `--concurrency 1` on the gateway core."""
    bench.log("starting plain Envoy and Envoy with the decision (core 0), ADS servers here")
    bench.policy = envoy_plane.bench_policy(bench.tmp / "catalog.yaml")
    planes = bench.planes
    for name, decision in ((envoy_plane.PLAIN, False), (envoy_plane.DECISION, True)):
        log = bench.tmp / "envoy-access.log" if decision and bench.args.envoy_access_log else None
        plane = envoy_plane.start_plane(
            bench.ps,
            name,
            bench.policy,
            decision=decision,
            core=GATEWAY_CORE,
            directory=bench.tmp,
            access_log=log,
        )
        planes[name] = plane
        extra = {} if decision else envoy_plane.PLAIN_HEADERS
        bench.add_path(name, plane.port, plane.pid, extra)
        for stream in (False, True):
            smoke(plane.port, stream, bench.headers(name), decided=decision)
    return planes


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
        bench: Bench | None = None
        try:
            bench = Bench(args, ps, tmp)
            bench.partial = args.out / f"{stem}.partial.json"
            results = uvloop.run(run(bench))
        except (procs.StartError, RuntimeError, OSError) as exc:
            print(f"bench-gateway: {exc}", file=sys.stderr)
            return 1
        finally:
            if bench is not None:
                bench.stop_envoys()
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
