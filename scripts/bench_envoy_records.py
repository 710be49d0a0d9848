"""Benchmark: the Envoy records shipper's throughput (access-log lines -> chain records per second).

A temporary data dir is seeded with the default pack and the demo catalog (SQLite); an access log
of N lines in Envoy's format (routed and refused decisions, each with its own decision id) is
shipped by the real shipper (`gateway.envoy.shipper_setup`: re-derived reasons, one transaction
per read, checkpoints). Prints lines/s and CPU ms per record, best of `--runs`.

    python scripts/bench_envoy_records.py [--lines 20000] [--runs 2]
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
import uuid
from pathlib import Path

import orjson

from gateway.bootstrap import prepare_database
from gateway.envoy.shipper_setup import build_records_shipper
from gateway.settings import Settings

ROUTED = {
    "start_time": "2026-12-01T12:00:00.000000Z",
    "client_ip": "80.128.0.1",
    "status": 200,
    "flags": "-",
    "served_region": "eu-frankfurt",
    "attempts": 1,
    "bytes_received": 67,
    "bytes_sent": 465,
    "duration_ms": 3,
    "first_byte_ms": 2,
    "tenant": "demo",
    "data_class": "personal",
    "model": "gpt-4o-mini",
    "client_country": "DE",
    "jurisdictions": "DE:client_ip",
    "policy_version": 1,
    "allowed": "eu-frankfurt,uk-london,us-oregon",
    "order": "eu-frankfurt,uk-london,us-oregon",
}
REFUSED = {
    **ROUTED,
    "status": 451,
    "served_region": None,
    "attempts": 0,
    "data_class": "payment",
    "subject_country": "IN",
    "jurisdictions": "DE:client_ip,IN:declared_subject",
    "allowed": "",
    "order": None,
    "refusal": "no_allowed_region",
}


def _write_log(path: Path, lines: int) -> None:
    with path.open("wb") as log:
        for i in range(lines):
            entry = {**(REFUSED if i % 4 == 3 else ROUTED), "decision_id": str(uuid.uuid4())}
            log.write(orjson.dumps(entry) + b"\n")


def run(lines: int) -> tuple[float, float]:
    """(lines per second, CPU ms per record) of one shipping run."""
    with tempfile.TemporaryDirectory(prefix="rg-bench-ship-") as name:
        settings = Settings(data_dir=Path(name))
        prepare_database(settings)
        _write_log(settings.resolved_envoy_access_log, lines)
        shipper = build_records_shipper(settings)
        stop = threading.Event()
        stop.set()  # ship what is written, then return
        started, cpu = time.perf_counter(), time.process_time()
        shipper.run(stop)
        elapsed, used = time.perf_counter() - started, time.process_time() - cpu
        assert shipper.counts.stored == lines, shipper.counts
    return lines / elapsed, used * 1000 / lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=20000)
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args()
    results = [run(args.lines) for _ in range(args.runs)]
    rate, cpu = max(results)
    print(f"shipper: {rate:,.0f} lines/s, {cpu:.3f} CPU ms per record ({args.lines} lines)")


if __name__ == "__main__":
    main()
