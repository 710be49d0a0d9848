"""Turn benchmark results into target verdicts, a plain-text table and a latency chart."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from bench.envoy_plane import DECISION, PLAIN

PATHS = ("direct", "naive", "gateway")
"""The paths of a run without the Envoy data plane (`--data-plane python`)."""


def paths_of(results: dict[str, Any]) -> tuple[str, ...]:
    """The paths this run measured, in the order they ran."""
    return tuple(_get(results, "meta", "paths") or PATHS)


def _get(results: dict[str, Any], *keys: Any) -> Any:
    node: Any = results
    for key in keys:
        if not isinstance(node, dict | list):
            return None
        try:
            node = node[key]
        except (KeyError, IndexError):
            return None
    return node


def _rate_row(results: dict[str, Any], path: str, rate: int) -> dict[str, Any] | None:
    for row in _get(results, "open_loop", path) or []:
        if row["offered_rps"] == rate:
            return dict(row)
    return None


def _failed_total(results: dict[str, Any]) -> int:
    total = 0
    for path in paths_of(results):
        total += _get(results, "single_client", path, "failed") or 0
        total += sum(r["failed"] for r in _get(results, "open_loop", path) or [])
        total += _get(results, "peak", path, "failed") or 0
        total += _get(results, "streaming", path, "errors") or 0
    total += _get(results, "memory", "load", "failed") or 0
    total += _get(results, "records", "missing") or 0
    return int(total)


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Each issue-5 target with the measured value and a verdict (None: not measured)."""
    at_1000 = _rate_row(results, "gateway", 1000)
    checks: list[tuple[str, str, Any, float, bool]] = [
        # (name, unit, value, limit, higher_is_better)
        ("added p50 at one client", "ms", _get(results, "added", "single_p50_ms"), 0.5, False),
        ("added p99 at one client", "ms", _get(results, "added", "single_p99_ms"), 2.0, False),
        ("peak on one core", "req/s", _get(results, "peak", "gateway", "rps"), 3000, True),
        ("share of naive peak", "%", _get(results, "added", "share_of_naive_peak_pct"), 50, True),
        ("p99 at 1,000 req/s", "ms", at_1000["p99_ms"] if at_1000 else None, 5.0, False),
        ("streaming added TTFT", "ms", _get(results, "added", "stream_ttft_p50_ms"), 1.0, False),
        (
            "streaming added per chunk",
            "ms",
            _get(results, "added", "stream_chunk_p50_ms"),
            0.2,
            False,
        ),
        ("RSS growth", "%", _get(results, "memory", "growth_pct"), 5.0, False),
    ]
    if "envoy_added" in results:
        checks += _envoy_checks(results)
    checks.append(("requests lost or failed", "", _failed_total(results), 0, False))
    rows = []
    for name, unit, value, limit, higher in checks:
        ok = None
        if isinstance(value, int | float) and not math.isnan(value):
            ok = value >= limit if higher else value <= limit
        rows.append(
            {
                "target": name,
                "limit": f"{'>=' if higher else '<='} {limit:g} {unit}".strip(),
                "measured": value,
                "unit": unit,
                "met": ok,
            }
        )
    return rows


def _envoy_checks(results: dict[str, Any]) -> list[tuple[str, str, Any, float, bool]]:
    """Issue 15's targets for the in-Envoy decision (ratios of paths run side by side)."""
    added = results["envoy_added"]
    decision = added[DECISION]
    return [
        ("envoy: decision / plain peak", "%", added["decision_share_of_plain_peak_pct"], 60, True),
        ("envoy: decision peak", "req/s", _get(results, "peak", DECISION, "rps"), 1e4, True),
        ("envoy: decision / Python peak", "x", added["decision_over_python_peak_x"], 3, True),
        ("envoy: added p50, one client", "ms", decision["single_p50_ms"], 0.3, False),
        ("envoy: added TTFT", "ms", decision["stream_ttft_p50_ms"], 0.5, False),
        ("envoy: push-to-use max", "ms", _get(results, "push_to_use", "use_max_ms"), 1000, False),
    ]


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.{digits}f}"
    return str(value)


def table(results: dict[str, Any]) -> str:
    """The figures as an aligned plain-text table, then the target verdicts."""
    paths = paths_of(results)
    rows: list[list[str]] = [["", *paths]]
    rows.append(
        ["one client p50 / p99 ms"]
        + [
            f"{_fmt(_get(results, 'single_client', p, 'p50_ms'))} / "
            f"{_fmt(_get(results, 'single_client', p, 'p99_ms'))}"
            for p in paths
        ]
    )
    rates = sorted({r["offered_rps"] for p in paths for r in _get(results, "open_loop", p) or []})
    for rate in rates:
        cells = []
        for p in paths:
            row = _rate_row(results, p, rate)
            cells.append(f"{_fmt(row['p50_ms'])} / {_fmt(row['p99_ms'])}" if row else "-")
        rows.append([f"{rate} req/s p50 / p99 ms", *cells])
    rows.append(["peak req/s (wrk)"] + [_fmt(_get(results, "peak", p, "rps"), 0) for p in paths])
    rows.append(
        ["server CPU us/req: 1 client / peak"]
        + [
            f"{_fmt(_get(results, 'single_client', p, 'server_cpu_us_per_req'), 0)} / "
            f"{_fmt(_get(results, 'peak', p, 'server_cpu_us_per_req'), 0)}"
            for p in paths
        ]
    )
    rows.append(
        ["server CPU use at peak %"]
        + [_fmt(_get(results, "peak", p, "server_cpu_util_pct"), 0) for p in paths]
    )
    rows.append(
        ["stream TTFT p50 ms"] + [_fmt(_get(results, "streaming", p, "ttft_p50_ms")) for p in paths]
    )
    rows.append(
        ["stream chunk transit p50 ms"]
        + [_fmt(_get(results, "streaming", p, "chunk_transit_p50_ms")) for p in paths]
    )
    rows.append(
        ["errors / unfinished (all runs)"]
        + [f"{_errors_of(results, p)} / {_unfinished_of(results, p)}" for p in paths]
    )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    for extra in _extras(results):
        lines.append(extra)
    lines.append("")
    for t in results.get("targets", []):
        verdict = {True: "met", False: "MISSED", None: "not measured"}[t["met"]]
        lines.append(f"  {t['target']:<28} {t['limit']:<14} {_fmt(t['measured'])} {verdict}")
    return "\n".join(lines)


def _errors_of(results: dict[str, Any], path: str) -> int:
    """Failed responses: non-200 statuses, broken connections, broken streams."""
    return int(
        (_get(results, "single_client", path, "errors") or 0)
        + sum(r["errors"] for r in _get(results, "open_loop", path) or [])
        + (_get(results, "peak", path, "failed") or 0)
        + (_get(results, "streaming", path, "errors") or 0)
    )


def _unfinished_of(results: dict[str, Any], path: str) -> int:
    """Requests not answered before the run's deadline (an overloaded server's backlog)."""
    return int(
        (_get(results, "single_client", path, "lost") or 0)
        + sum(r["lost"] for r in _get(results, "open_loop", path) or [])
    )


def _extras(results: dict[str, Any]) -> list[str]:
    meta = results.get("meta", {})
    out = [
        "machine load average at start / end: {} / {}; gateway settings: {}".format(
            _load(meta.get("loadavg_at_start")),
            _load(meta.get("loadavg_at_end")),
            meta.get("gateway_env") or "embedded defaults",
        )
    ]
    traces = results.get("traces")
    if traces:
        records = results.get("records", {})
        routed = records.get("responses_ok") or 0
        out.append(
            "tracing: every request sampled, spans exported over OTLP/HTTP to a stand-in "
            "collector: {:,} spans received in {:,} exports ({} per response, {:,} short of 2 "
            "per response: dropped) {}".format(
                traces["spans"],
                traces["exports"],
                _fmt(traces["spans"] / routed if routed else None, 2),
                max(0, 2 * routed - traces["spans"]),
                traces.get("by_name", {}),
            )
        )
    elif results.get("meta", {}).get("settings", {}).get("no_trace_export"):
        out.append("tracing: spans not exported (OTEL_TRACES_EXPORTER=none)")
    if meta.get("fdatasync"):
        sync = meta["fdatasync"]
        out.append(
            f"fdatasync in the gateway's data dir: p50 {sync['p50_ms']} / p99 {sync['p99_ms']} ms"
        )
    idle = meta.get("cpu_idle")
    if idle:
        polling = idle.get("guest_halt_poll_ns")
        out.append(
            "idle CPUs: cpuidle driver {}{}".format(
                idle.get("driver", "unknown"),
                "" if polling is None else f", polling {polling} ns before halting",
            )
        )
    added = results.get("added", {})
    if added:
        out.append(
            "added by the gateway: one client p50 {} / p99 {} ms; stream TTFT {} ms, "
            "per chunk {} ms; peak {}% of naive".format(
                *(
                    _fmt(added.get(k))
                    for k in (
                        "single_p50_ms",
                        "single_p99_ms",
                        "stream_ttft_p50_ms",
                        "stream_chunk_p50_ms",
                    )
                ),
                _fmt(added.get("share_of_naive_peak_pct"), 1),
            )
        )
        rounds = [
            f"{path} {_get(results, 'peak', path, 'rps_by_round')}"
            for path in ("naive", "gateway")
            if _get(results, "peak", path, "rps_by_round")
        ]
        if rounds:
            out.append("peak req/s by round (median counts): " + "; ".join(rounds))
        out.append(
            "CPU per request at peak: gateway {} us more than naive; a core fully used would give "
            "~{} req/s (naive ~{})".format(
                _fmt(added.get("peak_cpu_us_per_req_over_naive"), 0),
                _fmt(added.get("cpu_bound_peak_estimate_rps"), 0),
                _fmt(added.get("naive_cpu_bound_peak_estimate_rps"), 0),
            )
        )
    out += envoy_lines(results)
    memory = results.get("memory")
    if memory and "rss_after_mib" in memory:
        out.append(
            f"gateway RSS: {memory['rss_before_mib']} MiB -> {memory['rss_after_mib']} MiB over "
            f"{memory['requests']:,} requests ({_fmt(memory['growth_pct'], 2)}%)"
        )
    records = results.get("records")
    if records:
        out.append(f"routing records: {records}")
    workers = results.get("workers")
    if workers:
        out.append(
            f"{workers['workers']} workers: peak {workers['peak']['rps']} req/s "
            f"(1 worker: {_get(results, 'peak', 'gateway', 'rps')}); {workers['note']}"
        )
        for row in workers["open_loop"]:
            out.append(
                f"  {row['offered_rps']} req/s: p50 {_fmt(row['p50_ms'])} / "
                f"p99 {_fmt(row['p99_ms'])} ms, failed {row['failed']}"
            )
    return out


def envoy_lines(results: dict[str, Any]) -> list[str]:
    """The Envoy rows' ratios, push-to-use and counters, as lines under the table."""
    added = results.get("envoy_added")
    if not added:
        return []
    out = []
    for path in (PLAIN, DECISION):
        mine = added[path]
        out.append(
            f"added by {path}: one client p50 {_fmt(mine['single_p50_ms'])} / p99 "
            f"{_fmt(mine['single_p99_ms'])} ms; stream TTFT {_fmt(mine['stream_ttft_p50_ms'])} "
            f"ms, per chunk {_fmt(mine['stream_chunk_p50_ms'])} ms"
        )

    def fig(key: str, digits: int) -> str:
        return _fmt(added[key], digits)

    out.append(
        f"envoy-decision peak (median of per-round ratios): "
        f"{fig('decision_share_of_plain_peak_pct', 1)}% of plain envoy, "
        f"{fig('decision_over_python_peak_x', 2)}x the Python gateway, "
        f"{fig('decision_over_naive_peak_x', 2)}x naive; "
        f"decision CPU {fig('decision_cpu_us_per_req_over_plain', 1)} us/req over plain"
    )
    out.append(
        "by Envoy CPU per request at peak (less disturbed by other load): decision "
        f"{fig('decision_cpu_share_of_plain_pct', 1)}% of plain; a core fully used would give "
        f"~{fig('decision_cpu_bound_peak_estimate_rps', 0)} req/s with the decision, "
        f"~{fig('plain_cpu_bound_peak_estimate_rps', 0)} plain"
    )
    rounds = [
        f"{path} {_get(results, 'peak', path, 'rps_by_round')}"
        for path in (PLAIN, DECISION, "gateway")
    ]
    out.append("peak req/s by round: " + "; ".join(rounds))
    push = results.get("push_to_use")
    if push:
        out.append(
            f"xDS push-to-use ({push['rounds']} drain/restore pushes of {push['region']}): "
            f"ACK p50 {_fmt(push['ack_p50_ms'], 2)} / max {_fmt(push['ack_max_ms'], 2)} ms, "
            f"first request decided by the new policy p50 {_fmt(push['use_p50_ms'], 2)} / max "
            f"{_fmt(push['use_max_ms'], 2)} ms (translate {_fmt(push['translate_p50_ms'], 1)} ms "
            f"before the clock starts); drained-region answers after ACK "
            f"{push['drained_answers_after_ack']}, rounds timed out {push['rounds_timed_out']}; "
            f"non-200 answers during the pushes {push['non_200_answers']} of "
            f"{push['requests']:,} ({push['no_cluster_503s']} Envoy no_cluster 503s)"
        )
    return out


def _load(values: Any) -> str:
    return " ".join(f"{v:.2f}" for v in values) if values else "-"


def chart(results: dict[str, Any], path: Path) -> None:
    """PNG: p50 and p99 latency against offered rate, one line per path (log scale)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5), sharey=True)
    paths = paths_of(results)
    series = [(p, _get(results, "open_loop", p) or []) for p in paths]
    if results.get("workers"):
        series.append(
            (f"gateway x{results['workers']['workers']}", results["workers"]["open_loop"])
        )
    for ax, key, title in ((axes[0], "p50_ms", "p50"), (axes[1], "p99_ms", "p99")):
        for name, rows in series:
            if rows:
                xs = [r["offered_rps"] for r in rows]
                ax.plot(xs, [r[key] for r in rows], marker="o", label=name)
        ax.set_title(f"{title} latency vs offered rate (open loop)")
        ax.set_xlabel("offered rate, req/s")
        ax.set_yscale("log")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("latency, ms (from scheduled send time)")
    axes[0].legend()
    peaks = ", ".join(f"{p} {_fmt(_get(results, 'peak', p, 'rps'), 0)}" for p in paths)
    fig.suptitle(f"Residency Gateway overhead benchmark - peak req/s: {peaks}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
