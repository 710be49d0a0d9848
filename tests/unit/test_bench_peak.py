"""The overhead benchmark: interleaved wrk rounds reduced to medians, and its report."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"
sys.path.insert(0, str(SCRIPTS))

from bench.figures import share_of_naive  # noqa: E402
from bench.peak import median_of_rounds  # noqa: E402


def _run(rps: float, cpu: float, failed: int = 0) -> dict[str, Any]:
    return {
        "rps": rps,
        "server_cpu_us_per_req": cpu,
        "requests": int(rps * 10),
        "failed": failed,
        "non_2xx": failed,
        "socket_errors": 0,
        "p99_ms": rps / 100,
    }


def test_the_median_run_counts_and_every_run_is_kept() -> None:
    result = median_of_rounds([_run(1000, 700), _run(1600, 600, failed=2), _run(1300, 650)])
    assert result["rps"] == 1300
    assert result["server_cpu_us_per_req"] == 650
    assert result["p99_ms"] == 13.0  # the other figures are the median run's
    assert result["rps_by_round"] == [1000, 1600, 1300]
    assert result["cpu_us_per_req_by_round"] == [700, 600, 650]
    assert (result["failed"], result["requests"], result["rounds"]) == (2, 39000, 3)


def test_share_of_naive_is_the_median_of_side_by_side_ratios() -> None:
    gateway = median_of_rounds([_run(1000, 700), _run(1500, 600), _run(1200, 650)])
    naive = median_of_rounds([_run(2500, 300), _run(2000, 350), _run(3000, 290)])
    # rounds: 40%, 75%, 40% -> 40%; the ratio of the medians would say 1200/2500 = 48%
    assert share_of_naive(gateway, naive) == 40.0
    assert share_of_naive({"rps": 500}, {"rps": 1000}) == 50.0  # a single run


def test_the_report_counts_spans_dropped_on_the_way_to_the_collector() -> None:
    from bench.report import _extras

    results = {
        "traces": {"spans": 1990, "exports": 4, "by_name": {}},
        "records": {"responses_ok": 1000},
    }
    line = next(x for x in _extras(results) if x.startswith("tracing:"))
    assert "1.99 per response, 10 short of 2 per response: dropped" in line


def test_the_report_says_how_idle_cpus_wait(tmp_path: Path) -> None:
    from bench.harness import cpu_idle
    from bench.report import _extras

    (tmp_path / "driver").write_text("haltpoll\n")
    (tmp_path / "poll").write_text("0\n")
    idle = cpu_idle({"driver": tmp_path / "driver", "guest_halt_poll_ns": tmp_path / "poll"})
    assert idle == {"driver": "haltpoll", "guest_halt_poll_ns": "0"}
    assert cpu_idle({"driver": tmp_path / "absent"}) == {}
    lines = _extras({"meta": {"cpu_idle": idle}})
    assert "idle CPUs: cpuidle driver haltpoll, polling 0 ns before halting" in lines
    lines = _extras({"meta": {"cpu_idle": {"driver": "acpi_idle"}}})
    assert "idle CPUs: cpuidle driver acpi_idle" in lines
