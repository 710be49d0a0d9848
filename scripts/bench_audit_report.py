"""Benchmark: the audit report (and searches) over 1,000,000 routing records.

"CPU here" is this process's CPU time: all of SQLite's work, only the client's for
PostgreSQL. It shows what the wall-clock figure would be on an unloaded machine.

Fills a temporary SQLite file and a temporary PostgreSQL database (127.0.0.1:5432, see
tests/pg.py) with realistic records: each is a real routing-core decision over the default
policy pack and the demo catalog (explanation JSON included), spread over 30 days. Then times
`AuditReader.report` for the whole period and for one week, plus a few searches, and prints
the figures. Loading uses executemany (SQLite) and COPY (PostgreSQL).

    python scripts/bench_audit_report.py [--records N] [--backend sqlite|postgresql|both]
"""

from __future__ import annotations

import argparse
import json
import random
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

PROJECT_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_ROOT))

import psycopg  # noqa: E402

from compliance.audit_query.filters import parse_filter  # noqa: E402
from compliance.audit_query.reader import AuditReader  # noqa: E402
from compliance.store.routing_log_store import COLUMNS  # noqa: E402
from tests.audit_support import make_record, seeded_store  # noqa: E402
from tests.pg import PostgresUnavailable, temporary_database  # noqa: E402

START = datetime(2026, 10, 1, tzinfo=UTC)
SPAN = timedelta(days=30)
TEMPLATES = 2000
CLIENTS = ["DE", "FR", "GB", "IN", "US", "CN", "BR", "JP", "CH", "IE", "NL", "SG", "AU", None]
SUBJECTS = [None] * 8 + ["FR", "IN", "GB", "CN", "US", "DE"]
CLASSES = ["personal"] * 7 + ["public", "health", "payment", "special", "financial_securities"]
TENANTS = ["demo", "demo", "acme-eu"]
JSON_COLUMNS = ("attempts", "jurisdictions", "regimes", "reasons", "explanation")
LOADED = [c for c in COLUMNS if c not in ("prev_hash", "record_hash", "chain_seq")]
T = TypeVar("T")


def templates(url: str) -> list[dict[str, Any]]:
    """TEMPLATES records decided by the routing core over the database's policy (version 1)."""
    from gateway.routing.snapshot import RoutingSnapshot

    store = seeded_store(url)
    try:
        snapshot = RoutingSnapshot(store.load_snapshot())
    finally:
        store.close()
    rng = random.Random(7)
    out = []
    for n in range(TEMPLATES):
        record = make_record(
            snapshot,
            f"t{n}",
            START,
            client=rng.choice(CLIENTS),
            subject=rng.choice(SUBJECTS),
            data_class=rng.choice(CLASSES),
            tenant=rng.choice(TENANTS),
            fail_first=rng.random() < 0.02,
        )
        for column in JSON_COLUMNS:
            record[column] = json.dumps(record[column])
        out.append(record)
    return out


def rows(count: int, shapes: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """`count` records in time order, cycling through the templates."""
    step = SPAN / count
    for i in range(count):
        record = dict(shapes[i % len(shapes)])
        record["decision_id"] = f"b{i:012d}"
        record["decided_at"] = START + step * i
        record["trace_id"] = f"{i:032x}"
        yield record


def load_sqlite(path: Path, count: int, shapes: list[dict[str, Any]]) -> float:
    """Insert with executemany in one transaction (timestamps in SQLAlchemy's SQLite format)."""
    started = time.perf_counter()
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA synchronous = OFF")
        placeholders = ", ".join("?" for _ in LOADED)
        sql = f"INSERT INTO routing_decisions ({', '.join(LOADED)}) VALUES ({placeholders})"

        def values() -> Iterator[tuple[Any, ...]]:
            for record in rows(count, shapes):
                at = record["decided_at"].replace(tzinfo=None)
                record["decided_at"] = at.strftime("%Y-%m-%d %H:%M:%S.%f")
                yield tuple(record[c] for c in LOADED)

        with conn:
            conn.executemany(sql, values())
        # No ANALYZE: the gateway never runs it, so the planner works without statistics.
    finally:
        conn.close()
    return time.perf_counter() - started


def load_postgres(url: str, count: int, shapes: list[dict[str, Any]]) -> float:
    """COPY the records in, then ANALYZE (as autovacuum would soon)."""
    started = time.perf_counter()
    dsn = url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn) as conn, conn.cursor() as cursor:
        with cursor.copy(f"COPY routing_decisions ({', '.join(LOADED)}) FROM STDIN") as copy:
            for record in rows(count, shapes):
                copy.write_row(tuple(record[c] for c in LOADED))
        conn.commit()
        conn.autocommit = True
        cursor.execute("VACUUM ANALYZE routing_decisions")
    return time.perf_counter() - started


CPU: dict[str, float] = {}


def timed(call: Callable[[], T]) -> tuple[float, T]:
    """Wall-clock seconds of `call` (its CPU time in this process goes to CPU["last"])."""
    started, cpu = time.perf_counter(), time.process_time()
    result = call()
    CPU["last"] = time.process_time() - cpu
    return time.perf_counter() - started, result


def measure(name: str, url: str, count: int, load: Callable[[], float]) -> None:
    seconds = load()
    print(f"{name}: loaded {count:,} records in {seconds:.1f} s ({count / seconds:,.0f}/s)")
    reader = AuditReader(url)
    try:
        everything = parse_filter()
        cold, report = timed(lambda: reader.report(everything))
        cold_cpu = CPU["last"]
        warm, report = timed(lambda: reader.report(everything))
        warm_cpu = CPU["last"]
        re = report.reevaluation
        assert report.total == count, report.total
        print(
            f"{name}: report over {report.total:,} records: {cold:.2f} s (first run, "
            f"{cold_cpu:.2f} s CPU here), {warm:.2f} s (again, {warm_cpu:.2f} s CPU here); "
            f"{re.groups:,} distinct cases evaluated for "
            f"{re.checked:,} routed records; violations {re.flagged}; "
            f"unverifiable {sum(re.unverifiable.values())}"
        )
        week = parse_filter(since="2026-10-08", until="2026-10-15")
        seconds, report = timed(lambda: reader.report(week))
        print(f"{name}: report over one week ({report.total:,} records): {seconds:.2f} s")
        for label, spec in (
            ("newest page, no filter", parse_filter()),
            ("tenant acme-eu, jurisdiction FR", parse_filter(tenant="acme-eu", jurisdiction="FR")),
            (
                "region in-mumbai, one day",
                parse_filter(region="in-mumbai", since="2026-10-20", until="2026-10-21"),
            ),
        ):
            seconds, page = timed(lambda spec=spec: reader.search(spec, 50))
            cursor = page.next_cursor
            deep = 0.0
            for _ in range(20):  # keep paging: each page costs the same
                elapsed, page = timed(lambda c=cursor, spec=spec: reader.search(spec, 50, c))
                deep = max(deep, elapsed)
                cursor = page.next_cursor
            print(
                f"{name}: search ({label}): first page {seconds * 1000:.1f} ms, "
                f"slowest of the next 20 pages {deep * 1000:.1f} ms"
            )
    finally:
        reader.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--keep", type=Path, help="keep the SQLite file in this directory")
    args = parser.parse_args()
    with ExitStack() as stack:
        directory = args.keep or Path(
            stack.enter_context(tempfile.TemporaryDirectory(prefix="rg-bench-"))
        )
        directory.mkdir(parents=True, exist_ok=True)
        if args.backend in ("sqlite", "both"):
            path = directory / "audit.db"
            url = f"sqlite:///{path}"
            shapes = templates(url)
            measure("SQLite", url, args.records, lambda: load_sqlite(path, args.records, shapes))
            print(f"SQLite: database file {path.stat().st_size / 2**30:.2f} GiB")
        if args.backend in ("postgresql", "both"):
            try:
                url = stack.enter_context(temporary_database("rg_bench"))
            except PostgresUnavailable as exc:
                print(f"PostgreSQL: skipped ({exc})")
                return 0
            shapes = templates(url)
            measure(
                "PostgreSQL", url, args.records, lambda: load_postgres(url, args.records, shapes)
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
