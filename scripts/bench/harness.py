"""The benchmark's parts and probes: the processes of one run and the measurements against them.

Paths: `direct` (the fake upstream itself), `naive` (the naive passthrough), `gateway` and, with
`--data-plane envoy`, the two Envoy paths (bench.envoy_plane); each server runs pinned to its
core, and every measurement also records the CPU its server used.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import math
import os
import sqlite3
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from bench import envoy_plane, loadgen, peak, procs, streams

from compliance.snapshot import PolicySnapshot

REPO = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
API_KEY = "rg_bench-key-0123456789abcdefghijklmnopqrstuvwxyz"
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
        self.extra_headers: dict[str, dict[str, str]] = {}  # what a path's clients add
        self.wrk_scripts: dict[str, Path] = {}
        self.policy: PolicySnapshot | None = None  # what the Envoy paths were given
        self.planes: dict[str, envoy_plane.EnvoyPlane] = {}
        self.log = functools.partial(print, flush=True)
        self.partial: Path | None = None  # where results so far are saved after each phase

    def checkpoint(self, results: dict[str, Any]) -> None:
        if self.partial is not None:
            self.partial.write_text(json.dumps(results, indent=2, default=str) + "\n")

    def headers(self, name: str) -> dict[str, str]:
        """The request headers the clients of path `name` send."""
        return HEADERS | self.extra_headers.get(name, {})

    def add_path(self, name: str, port: int, pid: int, extra: dict[str, str] | None = None) -> None:
        """A server started elsewhere (an Envoy) that clients reach at `port`, with `extra`
        request headers."""
        self.ports[name], self.pids[name] = port, pid
        if extra:
            self.extra_headers[name] = extra
            self.wrk_scripts[name] = peak.write_script(
                self.tmp / f"post-{name}.lua", self.headers(name), BODY
            )

    def stop_envoys(self) -> None:
        """Stop the Envoy processes and their ADS servers."""
        for name, plane in self.planes.items():
            self.ps.stop(name, timeout=15)
            plane.stop()
        self.planes.clear()

    # -- processes -------------------------------------------------------------------------
    def start_upstream(self) -> None:
        port = self.ports["direct"] = procs.free_port()
        argv = [PYTHON, str(REPO / "scripts/bench/upstream.py"), "--port", str(port)]
        argv += ["--chunks", str(self.args.chunks)]
        argv += ["--chunk-interval-ms", str(self.args.chunk_interval_ms)]
        self.pids["direct"] = self.ps.start("upstream", argv, LOAD_CORE, clean_env()).pid
        self.ps.wait_http("upstream", f"http://127.0.0.1:{port}/healthz", 30)

    def start_trace_sink(self) -> None:
        """The stand-in OTLP collector the gateway exports its spans to (load core)."""
        port = self.ports["traces"] = procs.free_port()
        argv = [PYTHON, str(REPO / "scripts/bench/trace_sink.py"), "--port", str(port)]
        self.ps.start("trace-sink", argv, LOAD_CORE, clean_env())
        self.ps.wait_http("trace-sink", f"http://127.0.0.1:{port}/healthz", 30)

    def trace_stats(self) -> dict[str, Any]:
        """Spans the trace sink has received (empty if spans are not exported)."""
        if "traces" not in self.ports:
            return {}
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(f"http://127.0.0.1:{self.ports['traces']}/stats", timeout=10) as reply:
            stats: dict[str, Any] = json.loads(reply.read())
        return stats

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
            **self.trace_env(),
            **self.args.extra_env,
        }
        argv = [PYTHON, "-m", "gateway.cli", "serve", "--host", "127.0.0.1", "--port", str(port)]
        argv += ["--workers", str(workers), "--trust-proxy", "127.0.0.1/32"]
        proc = self.ps.start(name, argv, cores, env, cwd=REPO)
        self.pids[name] = proc.pid
        self.ps.wait_http(name, f"http://127.0.0.1:{port}/readyz", 120)
        return proc.pid

    def trace_env(self) -> dict[str, str]:
        """Spans exported over OTLP/HTTP to the trace sink, or (without one) not recorded."""
        if "traces" not in self.ports:
            return {"OTEL_TRACES_EXPORTER": "none"}
        endpoint = f"http://127.0.0.1:{self.ports['traces']}/v1/traces"
        return {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": endpoint}

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
            headers = self.headers(name)
            self.payload[name] = loadgen.build_request(INFERENCE_PATH, port, headers, BODY)
            self.stream_payload[name] = loadgen.build_request(
                INFERENCE_PATH, port, headers, STREAM_BODY
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

    async def open_loop(
        self, name: str, rate: int, duration: float, settle: bool = True
    ) -> dict[str, Any]:
        if settle:  # (not under a profiler: its own sampling never looks idle)
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
        script = self.wrk_scripts.get(name, self.wrk_script)
        result = peak.run_wrk(
            url, script, cores, self.args.peak_duration, self.args.peak_connections
        )
        result.update(self._cpu(name, cpu, result["requests"], result["seconds"]))
        self._count(name, result["requests"] - result["non_2xx"])
        return result

    async def streams(self, name: str, count: int | None = None) -> dict[str, Any]:
        """`count` (default `--streams`) SSE streams one after another."""
        await self.settle()
        client = streams.StreamClient(self.ports[name], self.stream_payload[name], self.args.chunks)
        summary = (await client.run(count or self.args.streams)).summary()
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


def smoke(
    port: int, stream: bool = False, headers: dict[str, str] = HEADERS, decided: bool = True
) -> dict[str, str]:
    """One request through a proxy: it must be answered (200) and, if `decided`, routed by a
    residency decision (x-residency-region)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{INFERENCE_PATH}",
        data=STREAM_BODY if stream else BODY,
        headers=headers,
        method="POST",
    )
    try:
        with opener.open(request, timeout=10) as response:
            body = response.read()
            answered = {k.lower(): v for k, v in response.headers.items()}
    except urllib.error.HTTPError as exc:
        raise RuntimeError(
            f"smoke request to port {port} failed: {exc.code} {exc.read()[:300]!r}"
        ) from None
    if response.status != 200 or (decided and "x-residency-region" not in answered) or not body:
        raise RuntimeError(f"smoke request to port {port} failed: {response.status} {body[:200]!r}")
    return answered


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


CPU_IDLE_FILES = {
    "driver": Path("/sys/devices/system/cpu/cpuidle/current_driver"),
    "guest_halt_poll_ns": Path("/sys/module/haltpoll/parameters/guest_halt_poll_ns"),
}


def cpu_idle(files: dict[str, Path] = CPU_IDLE_FILES) -> dict[str, str]:
    """How an idle core waits here: the cpuidle driver and, in a KVM guest, how long it polls
    before halting. A halted virtual CPU is slow to wake, which every request pays at low
    rates (one client: guest halt polling took ~0.3 ms off the gateway's added p50 here)."""
    found = {}
    for name, path in files.items():
        with contextlib.suppress(OSError):
            found[name] = path.read_text().strip()
    return found


def mib(kib: int) -> float:
    return round(kib / 1024, 1)
