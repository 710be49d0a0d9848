"""Peak throughput with `wrk` (closed loop: used only to find the most req/s a path sustains)."""

from __future__ import annotations

import json
import statistics
import subprocess
from pathlib import Path
from typing import Any

_SCRIPT = """
wrk.method = "POST"
wrk.body = {body}
{headers}
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {{"requests":%d,"duration_us":%d,"status":%d,"connect":%d,"read":%d,' ..
    '"write":%d,"timeout":%d,"p50_us":%d,"p99_us":%d}}\\n',
    summary.requests, summary.duration, e.status, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""


def _lua_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def write_script(path: Path, headers: dict[str, str], body: bytes) -> Path:
    """A wrk Lua script sending our POST and printing a JSON summary line."""
    lines = "\n".join(
        f"wrk.headers[{_lua_string(k)}] = {_lua_string(v)}" for k, v in headers.items()
    )
    path.write_text(_SCRIPT.format(body=_lua_string(body.decode()), headers=lines))
    return path


def run_wrk(
    url: str, script: Path, cores: str, duration: float, connections: int, threads: int = 1
) -> dict[str, Any]:
    """Run wrk pinned to `cores`; req/s, errors (socket + non-2xx) and latency percentiles."""
    argv = [
        "taskset",
        *("-c", cores),
        "wrk",
        *("-t", str(threads), "-c", str(connections), "-d", f"{duration:g}s"),
        *("--timeout", "5s", "-s", str(script), url),
    ]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60, check=False)
    line = next((x for x in done.stdout.splitlines() if x.startswith("WRKJSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk gave no summary (exit {done.returncode}): {done.stderr.strip()}")
    raw = json.loads(line.removeprefix("WRKJSON "))
    socket_errors = raw["connect"] + raw["read"] + raw["write"] + raw["timeout"]
    seconds = raw["duration_us"] / 1e6
    return {
        "rps": round(raw["requests"] / seconds, 1),
        "requests": raw["requests"],
        "seconds": round(seconds, 2),
        "connections": connections,
        "non_2xx": raw["status"],
        "socket_errors": socket_errors,
        "failed": raw["status"] + socket_errors,
        "p50_ms": raw["p50_us"] / 1e3,
        "p99_ms": raw["p99_us"] / 1e3,
    }


def median_of_rounds(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Several wrk runs of one path as one result: the median run's figures (req/s and CPU per
    request each the median over the runs), every run's req/s and CPU, failures summed."""
    by_rps = sorted(rounds, key=lambda r: r["rps"])
    result = dict(by_rps[(len(by_rps) - 1) // 2])
    result["rps"] = statistics.median([r["rps"] for r in rounds])
    cpu = [r["server_cpu_us_per_req"] for r in rounds if "server_cpu_us_per_req" in r]
    if cpu:
        result["server_cpu_us_per_req"] = statistics.median(cpu)
    result["rounds"] = len(rounds)
    result["rps_by_round"] = [r["rps"] for r in rounds]
    result["cpu_us_per_req_by_round"] = cpu
    for key in ("failed", "non_2xx", "socket_errors", "requests"):
        result[key] = sum(r[key] for r in rounds)
    return result
