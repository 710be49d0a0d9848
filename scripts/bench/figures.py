"""What each proxy adds over the direct path, and peak ratios of paths run side by side.

A ratio of two peaks is the median of the per-round ratios: the rounds are interleaved, so the
two paths of one round saw the same machine (absolute req/s swing ~2x between runs here).
"""

from __future__ import annotations

import statistics
from typing import Any

from bench.envoy_plane import DECISION, PLAIN


def ratio_by_round(top: dict[str, Any], bottom: dict[str, Any]) -> float:
    """Median over the interleaved wrk rounds of `top` req/s / `bottom` req/s."""
    by_round = zip(
        top.get("rps_by_round", [top["rps"]]),
        bottom.get("rps_by_round", [bottom["rps"]]),
        strict=True,
    )
    return float(statistics.median([t / b for t, b in by_round]))


_SUMMED = frozenset({"scheduled", "ok", "errors", "lost", "failed", "streams", "connections"})
BY_ROUND = ("p50_ms", "p99_ms", "ttft_p50_ms", "chunk_transit_p50_ms", "chunk_gap_mean_ms")


def merge_runs(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Interleaved runs of one path as one result: counts summed, `max_ms` the maximum, every
    other figure the median over the runs; the key latencies also kept by round."""
    out: dict[str, Any] = {}
    for key, first in runs[0].items():
        values = [run[key] for run in runs]
        if key in _SUMMED:
            out[key] = sum(values)
        elif key == "max_ms":
            out[key] = max(values)
        elif isinstance(first, dict):
            out[key] = {k: sum(v.get(k, 0) for v in values) for k in first}
        elif isinstance(first, int | float):
            out[key] = round(statistics.median(values), 4)
        else:
            out[key] = first
    out["rounds"] = len(runs)
    out["by_round"] = {k: [run[k] for run in runs] for k in BY_ROUND if k in runs[0]}
    return out


def share_of_naive(gateway: dict[str, Any], naive: dict[str, Any]) -> float:
    """The gateway's peak as % of the naive proxy's: the median over rounds run side by side."""
    return round(100 * ratio_by_round(gateway, naive), 1)


def _over_direct(results: dict[str, Any], path: str) -> dict[str, float]:
    """One-client and streaming figures of `path` minus the direct path's, ms."""
    single, stream = results["single_client"], results["streaming"]

    def diff(section: dict[str, Any], key: str) -> float:
        """The median of the per-round differences (the two ran side by side in each round)."""
        mine, direct = section[path], section["direct"]
        pairs = zip(
            mine.get("by_round", {}).get(key, [mine[key]]),
            direct.get("by_round", {}).get(key, [direct[key]]),
            strict=True,
        )
        return round(float(statistics.median([m - d for m, d in pairs])), 4)

    return {
        "single_p50_ms": diff(single, "p50_ms"),
        "single_p99_ms": diff(single, "p99_ms"),
        "stream_ttft_p50_ms": diff(stream, "ttft_p50_ms"),
        "stream_chunk_p50_ms": diff(stream, "chunk_transit_p50_ms"),
        "stream_chunk_gap_ms": diff(stream, "chunk_gap_mean_ms"),
    }


def added(results: dict[str, Any]) -> dict[str, Any]:
    """What the Python gateway adds over the direct path, and its share of the naive peak."""
    single, peak_ = results["single_client"], results["peak"]
    out: dict[str, Any] = _over_direct(results, "gateway")
    out["naive_single_p50_ms"] = round(single["naive"]["p50_ms"] - single["direct"]["p50_ms"], 4)
    out["share_of_naive_peak_pct"] = share_of_naive(peak_["gateway"], peak_["naive"])
    # CPU per request is far less sensitive to other load on the machine than wall time:
    out["peak_cpu_us_per_req_over_naive"] = round(
        peak_["gateway"]["server_cpu_us_per_req"] - peak_["naive"]["server_cpu_us_per_req"], 1
    )
    out["cpu_bound_peak_estimate_rps"] = round(1e6 / peak_["gateway"]["server_cpu_us_per_req"])
    out["naive_cpu_bound_peak_estimate_rps"] = round(1e6 / peak_["naive"]["server_cpu_us_per_req"])
    return out


def envoy_added(results: dict[str, Any]) -> dict[str, Any]:
    """The Envoy paths over direct, and the decision's peak against plain Envoy and Python."""
    peak_ = results["peak"]
    decision, plain = peak_[DECISION], peak_[PLAIN]
    return {
        PLAIN: _over_direct(results, PLAIN),
        DECISION: _over_direct(results, DECISION),
        "decision_share_of_plain_peak_pct": round(100 * ratio_by_round(decision, plain), 1),
        "decision_over_python_peak_x": round(ratio_by_round(decision, peak_["gateway"]), 2),
        "decision_over_naive_peak_x": round(ratio_by_round(decision, peak_["naive"]), 2),
        "decision_cpu_us_per_req_over_plain": round(
            decision["server_cpu_us_per_req"] - plain["server_cpu_us_per_req"], 1
        ),
        # Envoy's CPU per request at peak, which other load on the machine disturbs far less
        # than req/s: the decision's share of plain Envoy's peak on a core it had to itself.
        "decision_cpu_share_of_plain_pct": round(100 * _cpu_ratio_by_round(plain, decision), 1),
        "decision_cpu_bound_peak_estimate_rps": round(1e6 / decision["server_cpu_us_per_req"]),
        "plain_cpu_bound_peak_estimate_rps": round(1e6 / plain["server_cpu_us_per_req"]),
    }


def _cpu_ratio_by_round(top: dict[str, Any], bottom: dict[str, Any]) -> float:
    """Median over the rounds of `top` CPU per request / `bottom` CPU per request."""
    pairs = zip(
        top.get("cpu_us_per_req_by_round") or [top["server_cpu_us_per_req"]],
        bottom.get("cpu_us_per_req_by_round") or [bottom["server_cpu_us_per_req"]],
        strict=True,
    )
    return float(statistics.median([t / b for t, b in pairs]))
