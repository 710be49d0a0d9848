"""Write-ahead routing records against the other durability modes, paired (figures, not a test).

One fake upstream and one gateway per mode (`GATEWAY_AUDIT_DURABILITY`), all running at once;
the measurements alternate between the gateways round by round, so a slow spell of a shared
machine hits every mode alike. Prints, per mode: one-client p50/p99 (sequential requests) and
peak req/s (wrk), as the median of the rounds, plus spool fsyncs per request at peak.

    .venv/bin/python scripts/bench_write_ahead.py [--rounds 3] [--single 1000] [--peak 5]
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import tempfile
import urllib.request
from pathlib import Path
from typing import Any

import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench import procs
from bench.harness import GATEWAY_CORE, Bench, fdatasync_ms, smoke

MODES = ("write-ahead", "write-ahead-lazy", "strict", "relaxed")


def fsyncs(port: int) -> float:
    """The gateway's `gateway_routing_log_fsyncs_total`."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    match = re.search(r"^gateway_routing_log_fsyncs_total(?:\{[^}]*\})? (\S+)$", text, re.M)
    return float(match.group(1)) if match else float("nan")


async def run(bench: Bench, rounds: int, single: int) -> dict[str, dict[str, list[float]]]:
    bench.log(f"fdatasync in the data dir's file system: {fdatasync_ms(bench.tmp)}")
    bench.start_upstream()
    for mode in MODES:
        bench.args.extra_env = {"GATEWAY_AUDIT_DURABILITY": mode}
        bench.start_gateway(mode, 1, GATEWAY_CORE)
        smoke(bench.ports[mode])
    bench.payloads()
    for mode in MODES:
        await bench.closed(mode, 500, 8)  # warm-up
    figures: dict[str, dict[str, list[float]]] = {
        m: {"p50": [], "p99": [], "rps": [], "fsyncs_per_req": [], "fsyncs_one_client": []}
        for m in MODES
    }
    for number in range(1, rounds + 1):
        for mode in MODES:
            before = fsyncs(bench.ports[mode])
            one = await bench.closed(mode, single, 1)
            alone = (fsyncs(bench.ports[mode]) - before) / max(one["ok"], 1)
            figures[mode]["p50"].append(one["p50_ms"])
            figures[mode]["p99"].append(one["p99_ms"])
            figures[mode]["fsyncs_one_client"].append(alone)
            before = fsyncs(bench.ports[mode])
            peak = await bench.wrk(mode)
            figures[mode]["rps"].append(peak["rps"])
            ratio = (fsyncs(bench.ports[mode]) - before) / max(peak["requests"], 1)
            figures[mode]["fsyncs_per_req"].append(ratio)
            bench.log(
                f"round {number} {mode:12s} one client p50 {one['p50_ms']:.3f} ms "
                f"p99 {one['p99_ms']:.3f} ms; peak {peak['rps']:.0f} req/s, "
                f"{ratio:.3f} fsyncs/request (one client: {alone:.3f})"
            )
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--single", type=int, default=1000)
    parser.add_argument("--peak", type=float, default=5.0, help="seconds per wrk run")
    options = parser.parse_args()
    args = argparse.Namespace(
        chunks=8,
        chunk_interval_ms=0.0,
        extra_env={},
        peak_duration=options.peak,
        peak_connections=64,
    )
    with tempfile.TemporaryDirectory(prefix="bench-write-ahead-") as name:
        tmp = Path(name)
        ps = procs.ProcessSet(tmp)
        try:
            bench = Bench(args, ps, tmp)
            bench.ports["traces"] = 0
            del bench.ports["traces"]  # spans not exported
            figures = uvloop.run(run(bench, options.rounds, options.single))
        finally:
            ps.stop_all()
    print(
        "\nmedian of rounds      one client p50 / p99 ms   peak req/s   fsyncs per request at peak"
    )
    for mode, values in figures.items():
        med: dict[str, Any] = {k: statistics.median(v) for k, v in values.items()}
        print(
            f"{mode:20s}  {med['p50']:.3f} / {med['p99']:.3f}"
            f"{'':14s}{med['rps']:8.0f}     {med['fsyncs_per_req']:.3f} / "
            f"{med['fsyncs_one_client']:.3f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
