"""The overhead benchmark, quickest run: every path answers and every row is printed.

Figures only: nothing here compares times (the benchmark prints them; targets are its verdicts).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.envoy_support import require_envoy

pytestmark = pytest.mark.integration

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "bench_gateway.py"
PATHS = ("direct", "naive", "envoy", "envoy-decision", "gateway")
TABLE_ROWS = (
    "one client p50 / p99 ms",
    "100 req/s p50 / p99 ms",
    "peak req/s (wrk)",
    "server CPU us/req: 1 client / peak",
    "stream TTFT p50 ms",
    "stream chunk transit p50 ms",
    "errors / unfinished (all runs)",
)
LINES = (
    "added by the gateway: one client p50",
    "added by envoy: one client p50",
    "added by envoy-decision: one client p50",
    "envoy-decision peak (median of per-round ratios)",
    "xDS push-to-use (2 drain/restore pushes of eu-frankfurt)",
    "machine load average at start / end",
)
TARGETS = (
    "envoy: decision / plain peak",
    "envoy: decision / Python peak",
    "envoy: added p50, one client",
    "envoy: added TTFT",
    "envoy: push-to-use max",
    "requests lost or failed",
)
QUICKEST = [
    "--quick",
    *("--requests", "0", "--single", "50", "--rates", "100", "--duration", "1"),
    *("--peak-duration", "1", "--streams", "3", "--push-rounds", "2", "--no-trace-export"),
]


def _cells(line: str) -> list[str]:
    return re.split(r"\s{2,}", line.strip())


def test_the_quickest_run_measures_every_path_and_prints_every_row(tmp_path: Path) -> None:
    if shutil.which("wrk") is None or shutil.which("taskset") is None:
        pytest.skip("wrk or taskset is not installed: 'apt-get install wrk util-linux'")
    require_envoy()
    done = subprocess.run(
        [sys.executable, str(SCRIPT), *QUICKEST, "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=900,  # a hang bound on a busy 2-core machine, not a speed check
        check=False,
    )
    output = done.stdout + done.stderr
    # Exit 0: every request of every phase was answered 200 (the last target), on every path.
    assert done.returncode == 0, output[-4000:]
    lines = done.stdout.splitlines()
    header = next(line for line in lines if _cells(line) == list(PATHS))
    table = lines[lines.index(header) + 1 :]
    for row in TABLE_ROWS:
        line = next((x for x in table if x.startswith(row)), None)
        assert line is not None, f"row {row!r} missing:\n{done.stdout}"
        cells = _cells(line.removeprefix(row))
        assert len(cells) == len(PATHS) and "-" not in cells, line
    for start in LINES:
        assert any(x.startswith(start) for x in lines), f"{start!r} missing:\n{done.stdout}"
    for target in TARGETS:
        assert any(x.strip().startswith(target) for x in lines), f"target {target!r} missing"

    results = json.loads((tmp_path / "gateway-quick.json").read_text())
    for path in PATHS:
        assert results["peak"][path]["requests"] > 0, path
        assert results["streaming"][path]["streams"] == 3, path
    push = results["push_to_use"]
    assert push["drained_answers_after_ack"] == 0
    assert len(push["use_ms_by_round"]) == 2
    # The decision Envoy routed the benchmark's requests itself and refused none of them (its
    # 503s are counted apart: see non_200_answers in push_to_use).
    stats = results["envoy_stats"]["envoy-decision"]
    assert stats["http.residency.downstream_rq_2xx"] > 0
    assert stats["http.residency.downstream_rq_4xx"] == 0
