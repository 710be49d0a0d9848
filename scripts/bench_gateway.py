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
import math
import os
import platform
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench import loadgen, peak, procs, profile, report

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
API_KEY = "rg-bench-key"
CLIENT_IP = "80.128.0.1"  # the bundled GeoIP places it in DE: GDPR applies, eu-frankfurt chosen
BODY = b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hello"}]}'
STREAM_BODY = BODY[:-1] + b',"stream":true}'
HEADERS = {
    "Content-Type": "application/json",
    "Authorization": f"Bearer {API_KEY}",
    "X-Forwarded-For": CLIENT_IP,
}
INFERENCE_PATH = "/v1/chat/completions"
REGIONS = (
    ("eu-frankfurt", "DE", 50.11, 8.68, ""),
    ("uk-london", "GB", 51.51, -0.13, ""),
    ("in-mumbai", "IN", 19.08, 72.88, ""),
    ("us-virginia", "US", 38.95, -77.45, ""),
    ("us-oregon", "US", 45.60, -121.18, "[eu_us_dpf, uk_extension_dpf, swiss_us_dpf]"),
)
GATEWAY_CORE, LOAD_CORE = "0", "1"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--quick", action="store_true", help="short smoke run of every phase")
    p.add_argument("--requests", type=int, help="requests for the RSS figure (default 1,000,000)")
    p.add_argument("--single", type=int, help="sequential requests at one client (default 2,000)")
    p.add_argument("--rates", default="500,1000,2000", help="open-loop offered rates, req/s")
    p.add_argument("--duration", type=float, help="seconds per open-loop rate (default 10)")
    p.add_argument("--peak-duration", type=float, help="seconds per wrk run (default 10)")
    p.add_argument("--peak-connections", type=int, default=64)
    p.add_argument("--streams", type=int, help="SSE streams per path (default 200)")
    p.add_argument("--chunks", type=int, default=64, help="SSE events per stream")
    p.add_argument("--chunk-interval-ms", type=float, default=1.0)
    p.add_argument("--workers", type=int, default=1, help="also run the gateway with N workers")
    p.add_argument("--profile", action="store_true", help="py-spy the gateway at --profile-rate")
    p.add_argument("--profile-rate", type=int, default=2000)
    p.add_argument("--profile-duration", type=float, help="seconds (default 10)")
    p.add_argument(
        "--gateway-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra gateway setting, e.g. GATEWAY_AUDIT_DURABILITY=relaxed (repeatable)",
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


def catalog_yaml(upstream_port: int) -> str:
    """Every region of the demo layout, all served by the one fast upstream."""
    lines = ["regions:"]
    for region_id, country, lat, lon, attestations in REGIONS:
        lines += [
            f"  - id: {region_id}",
            f"    name: {region_id} (bench upstream)",
            f"    country: {country}",
            f"    latitude: {lat}",
            f"    longitude: {lon}",
            f"    base_url: http://127.0.0.1:{upstream_port}",
            "    models: [gpt-4o-mini, gpt-4o]",
        ]
        if attestations:
            lines.append(f"    attestations: {attestations}")
    lines += [
        "tenants:",
        "  - id: bench",
        "    name: Benchmark tenant",
        f"    api_keys: [{API_KEY}]",
    ]
    return "\n".join(lines) + "\n"


def clean_env() -> dict[str, str]:
    """The environment without GATEWAY_*/OTEL_* settings from the caller's shell."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "OTEL_"))}


class Bench:
    """The processes of one run and the measurements taken against them."""

    def __init__(self, args: argparse.Namespace, ps: procs.ProcessSet, tmp: Path) -> None:
        self.args = args
        self.ps = ps
        self.tmp = tmp
        self.ports: dict[str, int] = {}
        self.pids: dict[str, int] = {}  # the server process behind each path
        self.gateway_pid = 0
        self.gateway_ok = 0  # 200 responses the gateway gave (routing records expected)
        self.payload: dict[str, bytes] = {}
        self.stream_payload: dict[str, bytes] = {}
        self.wrk_script = peak.write_script(tmp / "post.lua", HEADERS, BODY)
        self.log = print

    # -- processes -------------------------------------------------------------------------
    def start_upstream(self) -> None:
        port = self.ports["direct"] = procs.free_port()
        argv = [PYTHON, str(REPO / "scripts/bench/upstream.py"), "--port", str(port)]
        argv += ["--chunks", str(self.args.chunks)]
        argv += ["--chunk-interval-ms", str(self.args.chunk_interval_ms)]
        self.pids["direct"] = self.ps.start("upstream", argv, LOAD_CORE, clean_env()).pid
        self.ps.wait_http("upstream", f"http://127.0.0.1:{port}/healthz", 30)

    def start_naive(self) -> None:
        port = self.ports["naive"] = procs.free_port()
        argv = [PYTHON, str(REPO / "scripts/bench/naive_proxy.py"), "--port", str(port)]
        argv += ["--upstream", f"http://127.0.0.1:{self.ports['direct']}"]
        self.pids["naive"] = self.ps.start("naive", argv, GATEWAY_CORE, clean_env()).pid
        self.ps.wait_http("naive", f"http://127.0.0.1:{port}/healthz", 30)

    def start_gateway(self, name: str, workers: int, cores: str) -> int:
        port = self.ports[name] = procs.free_port()
        data_dir = self.tmp / name
        data_dir.mkdir()
        catalog = self.tmp / "catalog.yaml"
        catalog.write_text(catalog_yaml(self.ports["direct"]))
        env = clean_env() | {
            "GATEWAY_DATA_DIR": str(data_dir),
            "GATEWAY_SEED_CATALOG": str(catalog),
            "OTEL_TRACES_EXPORTER": "none",
            **self.args.extra_env,
        }
        argv = [PYTHON, "-m", "gateway.cli", "serve", "--host", "127.0.0.1", "--port", str(port)]
        argv += ["--workers", str(workers), "--trust-proxy", "127.0.0.1/32"]
        proc = self.ps.start(name, argv, cores, env, cwd=REPO)
        self.pids[name] = proc.pid
        self.ps.wait_http(name, f"http://127.0.0.1:{port}/readyz", 120)
        return proc.pid

    def stop_gateway(self, name: str) -> dict[str, Any]:
        """Stop gracefully (queued records are written) and count the routing records."""
        code = self.ps.stop(name, timeout=180)
        return {"exit_code": code, **count_records(self.tmp / name)}

    # -- measurements ----------------------------------------------------------------------
    async def settle(self) -> None:
        """Let every server finish what an earlier run left queued before the next one."""
        waited = await asyncio.to_thread(procs.settle, self.ps.pids())
        if waited > 5:
            self.log(f"  (waited {waited:g}s for the servers to go idle)")

    def payloads(self) -> None:
        for name, port in self.ports.items():
            self.payload[name] = loadgen.build_request(INFERENCE_PATH, port, HEADERS, BODY)
            self.stream_payload[name] = loadgen.build_request(
                INFERENCE_PATH, port, HEADERS, STREAM_BODY
            )

    def _cpu(
        self, name: str, before: tuple[float, float], ok: int, seconds: float
    ) -> dict[str, Any]:
        """CPU the path's server used per successful request (noise-robust, unlike wall time)."""
        main, total = procs.cpu_split(self.pids[name])
        used, used_main = total - before[1], main - before[0]
        per = 1e6 / ok if ok else math.nan
        return {
            "server_cpu_us_per_req": round(used * per, 1),
            "server_main_thread_us_per_req": round(used_main * per, 1),
            "server_cpu_util_pct": round(100 * used / seconds, 1) if seconds else math.nan,
        }

    def _count(self, name: str, ok: int) -> None:
        if name.startswith("gateway"):
            self.gateway_ok += ok

    async def closed(self, name: str, total: int, concurrency: int, **kw: Any) -> dict[str, Any]:
        await self.settle()
        pool = loadgen.ClosedLoop(self.ports[name], self.payload[name], **kw)
        cpu = procs.cpu_split(self.pids[name])
        stats = await pool.run(total, concurrency)
        summary = stats.summary()
        summary.update(self._cpu(name, cpu, summary["ok"], stats.elapsed))
        self._count(name, summary["ok"])
        return summary

    async def open_loop(self, name: str, rate: int, duration: float) -> dict[str, Any]:
        await self.settle()
        pool = loadgen.OpenLoop(self.ports[name], self.payload[name], max_connections=1024)
        preopen = min(64, max(8, rate // 50))
        cpu = procs.cpu_split(self.pids[name])
        stats = await pool.run(rate, duration, preopen)
        summary = stats.summary()
        summary.update(self._cpu(name, cpu, summary["ok"], stats.elapsed))
        self._count(name, summary["ok"])
        return {"offered_rps": rate, "duration_s": duration, **summary}

    async def wrk(self, name: str, cores: str = LOAD_CORE) -> dict[str, Any]:
        await self.settle()
        url = f"http://127.0.0.1:{self.ports[name]}{INFERENCE_PATH}"
        cpu = procs.cpu_split(self.pids[name])
        result = peak.run_wrk(
            url, self.wrk_script, cores, self.args.peak_duration, self.args.peak_connections
        )
        result.update(self._cpu(name, cpu, result["requests"], result["seconds"]))
        self._count(name, result["requests"] - result["non_2xx"])
        return result

    async def streams(self, name: str) -> dict[str, Any]:
        await self.settle()
        client = loadgen.StreamClient(self.ports[name], self.stream_payload[name], self.args.chunks)
        summary = (await client.run(self.args.streams)).summary()
        self._count(name, summary["streams"])
        return summary


def count_records(data_dir: Path) -> dict[str, Any]:
    """Routing records in the gateway's SQLite database, and any set aside as refused."""
    out: dict[str, Any] = {}
    db = data_dir / "gateway.db"
    try:
        with contextlib.closing(sqlite3.connect(db)) as conn:
            out["written"] = conn.execute("SELECT count(*) FROM routing_decisions").fetchone()[0]
    except sqlite3.Error as exc:
        out["written"] = None
        out["error"] = str(exc)
    rejected = data_dir / "routing-log-rejected.jsonl"
    out["set_aside"] = len(rejected.read_bytes().splitlines()) if rejected.exists() else 0
    return out


def smoke(port: int, stream: bool = False) -> dict[str, str]:
    """One request through the gateway: it must be routed (200, x-residency-region)."""
    import urllib.request

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{INFERENCE_PATH}",
        data=STREAM_BODY if stream else BODY,
        headers=HEADERS,
        method="POST",
    )
    with opener.open(request, timeout=10) as response:
        body = response.read()
        headers = {k.lower(): v for k, v in response.headers.items()}
    if response.status != 200 or "x-residency-region" not in headers or not body:
        raise RuntimeError(f"gateway smoke request failed: {response.status} {body[:200]!r}")
    return headers


async def run(bench: Bench) -> dict[str, Any]:
    args = bench.args
    say = bench.log
    results: dict[str, Any] = {"meta": meta(args)}
    results["meta"]["fdatasync"] = fdatasync_ms(bench.tmp)
    say("starting upstream (core 1), naive passthrough and gateway (core 0)")
    bench.start_upstream()
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

    say(f"one client: {args.single} sequential requests per path")
    results["single_client"] = {n: await bench.closed(n, args.single, 1) for n in paths}

    results["open_loop"] = {n: [] for n in paths}
    for rate in args.rate_list:
        for name in paths:  # interleaved, so machine noise hits every path alike
            say(f"open loop {rate} req/s for {args.duration:g}s: {name}")
            results["open_loop"][name].append(await bench.open_loop(name, rate, args.duration))
            await asyncio.sleep(0.3)

    results["peak"] = {}
    for name in paths:
        say(f"peak (wrk, {args.peak_connections} connections, {args.peak_duration:g}s): {name}")
        results["peak"][name] = await bench.wrk(name)
        await asyncio.sleep(0.5)

    say(f"streaming: {args.streams} streams of {args.chunks} chunks per path")
    results["streaming"] = {n: await bench.streams(n) for n in paths}

    if args.profile:
        results["profile"] = await profile_gateway(bench)

    if args.requests > 0:
        results["memory"].update(await memory(bench))

    results["records"] = bench.stop_gateway("gateway")
    results["records"]["responses_ok"] = bench.gateway_ok
    written = results["records"].get("written")
    if written is not None:
        results["records"]["missing"] = max(0, bench.gateway_ok - written)

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


async def profile_gateway(bench: Bench) -> dict[str, Any]:
    """py-spy on the gateway while an open loop offers `--profile-rate` req/s."""
    args = bench.args
    out = bench.tmp / "gateway.pyspy.raw"
    bench.log(f"profile: py-spy {args.profile_duration:g}s at {args.profile_rate} req/s")
    await bench.settle()
    threads_before = procs.thread_cpu(bench.gateway_pid)
    argv = profile.py_spy_argv(bench.gateway_pid, out, args.profile_duration, 100)
    spy = bench.ps.start("py-spy", argv, LOAD_CORE)
    load = await bench.open_loop("gateway", args.profile_rate, args.profile_duration + 1.0)
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
    summary["load_under_profiler"] = {k: load[k] for k in ("offered_rps", "p50_ms", "p99_ms")}
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
        "share_of_naive_peak_pct": round(100 * peak_["gateway"]["rps"] / peak_["naive"]["rps"], 1),
        # CPU per request is far less sensitive to other load on the machine than wall time:
        "peak_cpu_us_per_req_over_naive": round(
            peak_["gateway"]["server_cpu_us_per_req"] - peak_["naive"]["server_cpu_us_per_req"], 1
        ),
        "cpu_bound_peak_estimate_rps": round(1e6 / peak_["gateway"]["server_cpu_us_per_req"]),
        "naive_cpu_bound_peak_estimate_rps": round(1e6 / peak_["naive"]["server_cpu_us_per_req"]),
    }
    return out


def fdatasync_ms(directory: Path, count: int = 100) -> dict[str, float]:
    """Latency of a small write + fdatasync where the gateway keeps its data (its spool)."""
    path = directory / "fdatasync.probe"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    times = []
    try:
        os.posix_fallocate(fd, 0, 1 << 20)
        os.fsync(fd)
        for i in range(count):
            os.pwrite(fd, b"r" * 256, i * 256)
            started = time.perf_counter()
            os.fdatasync(fd)
            times.append(time.perf_counter() - started)
    finally:
        os.close(fd)
        path.unlink()
    times.sort()
    return {
        "p50_ms": round(loadgen.percentile(times, 50) * 1e3, 3),
        "p99_ms": round(loadgen.percentile(times, 99) * 1e3, 3),
    }


def mib(kib: int) -> float:
    return round(kib / 1024, 1)


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
            results = uvloop.run(run(Bench(args, ps, tmp)))
        except (procs.StartError, RuntimeError, OSError) as exc:
            print(f"bench-gateway: {exc}", file=sys.stderr)
            return 1
        finally:
            ps.stop_all()
    json_path, png_path = args.out / f"{stem}.json", args.out / f"{stem}.png"
    json_path.write_text(json.dumps(results, indent=2, default=str) + "\n")
    report.chart(results, png_path)
    print()
    print(report.table(results))
    print(f"\nwrote {json_path} and {png_path}")
    return 0 if all(t["met"] is not False for t in results["targets"][-1:]) else 1


if __name__ == "__main__":
    sys.exit(main())
