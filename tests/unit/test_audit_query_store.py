"""Audit search and reports on real databases: a SQLite file and a throwaway PostgreSQL DB."""

from __future__ import annotations

import dataclasses
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command

from compliance.audit_query.filters import DecisionFilter, parse_filter
from compliance.audit_query.reader import AuditReader
from compliance.model import Destination, Tenant
from compliance.store import schema
from compliance.store.migrate import alembic_config, upgrade
from compliance.store.policy_history import load_history
from compliance.store.routing_log_store import RoutingLogStore
from gateway.routing.snapshot import RoutingSnapshot
from tests.audit_support import make_record, seeded_store
from tests.pg import PostgresUnavailable, temporary_database

START = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)
# (client, subject, data class, tenant, fail first)
CASES: list[tuple[str | None, str | None, str, str | None, bool]] = [
    ("DE", None, "personal", "demo", False),
    ("DE", "CN", "personal", "demo", False),
    ("GB", "FR", "health", "acme-eu", False),
    ("IN", None, "payment", "demo", False),
    ("US", None, "personal", None, False),
    (None, None, "personal", "demo", False),
    ("FR", None, "public", "demo", False),
    ("DE", None, "personal", "acme-eu", True),
    (None, "IN", "special", "demo", False),
    ("CH", None, "personal", "demo", True),
]
BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


def _database(stack: ExitStack, backend: str, tmp: Path) -> str:
    if backend == "sqlite":
        return f"sqlite:///{tmp / 'audit.db'}"
    try:
        return stack.enter_context(temporary_database("rg_audit"))
    except PostgresUnavailable as exc:
        pytest.skip(str(exc))


class Log:
    """A seeded database, the records written to it (in order) and a reader."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.store = seeded_store(url)
        self.writer = RoutingLogStore(self.store.engine)
        self.reader = AuditReader(self.store.engine)
        self.records: list[dict[str, Any]] = []

    @property
    def snapshot(self) -> RoutingSnapshot:
        return RoutingSnapshot(self.store.load_snapshot())

    def write(self, records: list[dict[str, Any]]) -> None:
        self.writer.append_batch(records)
        self.records.extend(records)

    def fill(self, count: int, prefix: str = "d", start: datetime = START) -> None:
        snapshot = self.snapshot
        batch = []
        for i in range(count):
            client, subject, data_class, tenant, fail = CASES[i % len(CASES)]
            # Every 7th record shares its time with the previous one: ties are broken by seq.
            at = start + timedelta(minutes=i - (i % 7 == 6))
            batch.append(
                make_record(
                    snapshot,
                    f"{prefix}{i:05d}",
                    at,
                    client=client,
                    subject=subject,
                    data_class=data_class,
                    tenant=tenant,
                    fail_first=fail,
                )
            )
        self.write(batch)

    def set(self, decision_id: str, **values: Any) -> None:
        """Change a stored record behind the gateway's back (as a tamperer would)."""
        table = schema.routing_decisions
        with self.store.engine.begin() as conn:
            conn.execute(sa.update(table).where(table.c.decision_id == decision_id).values(values))

    def all_pages(self, spec: DecisionFilter, limit: int) -> list[str]:
        ids: list[str] = []
        cursor = None
        while True:
            page = self.reader.search(spec, limit, cursor)
            assert len(page.records) <= limit
            ids.extend(r["decision_id"] for r in page.records)
            if page.next_cursor is None:
                return ids
            cursor = page.next_cursor

    def close(self) -> None:
        self.store.close()


@pytest.fixture(scope="module", params=BACKENDS)
def logged(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Log]:
    """120 varied records, shared by the read-only tests of one backend."""
    with ExitStack() as stack:
        log = Log(_database(stack, request.param, tmp_path_factory.mktemp("audit")))
        log.fill(120)
        yield log
        log.close()


@pytest.fixture(params=BACKENDS)
def fresh(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Log]:
    """An empty, seeded log for tests that write or tamper."""
    with ExitStack() as stack:
        log = Log(_database(stack, request.param, tmp_path))
        yield log
        log.close()


def _matches(record: dict[str, Any], spec: DecisionFilter) -> bool:
    at = record["decided_at"]
    checks = [
        spec.since is None or at >= spec.since,
        spec.until is None or at < spec.until,
        spec.tenant is None or record["tenant_id"] == spec.tenant,
        spec.client_country is None or record["client_country"] == spec.client_country,
        spec.jurisdiction is None
        or (record["subject_country"] or record["client_country"]) == spec.jurisdiction,
        spec.data_class is None or record["data_class"] == spec.data_class,
        spec.region is None or spec.region in (record["chosen_region"], record["served_region"]),
        spec.outcome is None or record["outcome"] == spec.outcome,
    ]
    return all(checks)


def _expected(log: Log, spec: DecisionFilter) -> list[str]:
    """Matching ids, newest first; equal times newest-written first."""
    indexed = [(r["decided_at"], i, r) for i, r in enumerate(log.records) if _matches(r, spec)]
    return [
        r["decision_id"] for _, _, r in sorted(indexed, key=lambda x: (x[0], x[1]), reverse=True)
    ]


FILTERS = [
    {},
    {"since": "2026-11-20T08:30:00Z", "until": "2026-11-20T09:15:00Z"},
    {"tenant": "acme-eu"},
    {"client_country": "DE"},
    {"jurisdiction": "FR"},
    {"jurisdiction": "IN"},
    {"data_class": "health"},
    {"region": "eu-frankfurt"},
    {"region": "uk-london"},
    {"outcome": "refused"},
    {"outcome": "routed", "client_country": "de", "since": "2026-11-20T08:20:00Z"},
]


@pytest.mark.parametrize("raw", FILTERS, ids=lambda f: ",".join(f) or "none")
def test_search_filters_and_pages(logged: Log, raw: dict[str, str]) -> None:
    spec = parse_filter(**raw)
    expected = _expected(logged, spec)
    assert expected, "the data set must exercise this filter"
    assert logged.all_pages(spec, limit=7) == expected
    first = logged.reader.search(spec, 1000)
    assert [r["decision_id"] for r in first.records] == expected
    assert first.next_cursor is None


def test_search_rows_carry_the_summary_columns(logged: Log) -> None:
    page = logged.reader.search(parse_filter(jurisdiction="FR", data_class="health"), 1)
    (row,) = page.records
    assert row["jurisdiction"] == "FR" and row["client_country"] == "GB"
    assert row["served_region"] == "uk-london" and row["outcome"] == "routed"
    assert row["decided_at"].tzinfo is not None
    assert "explanation" not in row


def test_get_one_record(logged: Log) -> None:
    record = logged.reader.get("d00001")
    assert record is not None
    assert record["explanation"]["regimes"][1]["name"] == "China PIPL"
    assert record["jurisdiction"] == "CN" and record["trace_id"]
    assert logged.reader.get("nope") is None


def test_paging_while_others_write(fresh: Log) -> None:
    """Records that existed when paging began appear exactly once, in order, whatever is
    written meanwhile: new decisions and late ones (a replayed spool) with old times."""
    fresh.fill(300)
    before = [r["decision_id"] for r in fresh.records]
    snapshot = fresh.snapshot
    stop = threading.Event()
    written: list[int] = []

    def writer() -> None:
        n = 0
        writer_log = RoutingLogStore(fresh.url)
        try:
            while not stop.is_set() and n < 2000:
                at = START + timedelta(minutes=150 if n % 2 else 600, seconds=n)
                writer_log.append_batch(
                    [make_record(snapshot, f"w{n:05d}-{k}", at) for k in range(5)]
                )
                n += 1
                written.append(n)
        finally:
            writer_log.close()

    thread = threading.Thread(target=writer)
    thread.start()
    seen: list[tuple[datetime, str]] = []
    cursor = None
    try:
        while True:
            page = fresh.reader.search(parse_filter(), 11, cursor)
            seen.extend((r["decided_at"], r["decision_id"]) for r in page.records)
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
            if len(written) < 3:  # make sure writes really interleave with the paging
                threading.Event().wait(0.01)
    finally:
        stop.set()
        thread.join()
    assert len(written) >= 3
    ids = [i for _, i in seen]
    assert len(ids) == len(set(ids)), "a record was shown twice"
    assert set(before) <= set(ids), f"missing: {sorted(set(before) - set(ids))[:5]}"
    assert [at for at, _ in seen] == sorted((at for at, _ in seen), reverse=True)


def test_report_counts(logged: Log) -> None:
    report = logged.reader.report(parse_filter()).to_dict()
    records = logged.records
    assert report["total"] == len(records)
    assert report["outcomes"] == dict(Counter(r["outcome"] for r in records))
    matrix: Counter[tuple[str, str]] = Counter(
        ((r["subject_country"] or r["client_country"] or "unknown"), r["served_region"] or "-")
        for r in records
    )
    got = Counter(
        {(j, reg): n for j, row in report["matrix"]["counts"].items() for reg, n in row.items()}
    )
    got.update({(j, "-"): n for j, n in report["matrix"]["not_processed"].items() if n})
    assert got == matrix
    assert report["matrix"]["counts"]["IN"] == {"in-mumbai": 24}  # payment + special data
    refusals = Counter("; ".join(r["reasons"]) for r in records if r["outcome"] == "refused")
    assert {x["reason"]: x["count"] for x in report["refusals"]} == dict(refusals)
    re = report["reevaluation"]
    routed = sum(1 for r in records if r["chosen_region"])
    assert (re["checked"], re["not_routed"]) == (routed, len(records) - routed)
    assert (re["violations"], re["unverifiable"], re["violating"]) == (0, 0, [])
    assert 0 < re["groups_evaluated"] < routed  # grouped, not one evaluation per record


def test_report_for_a_period(logged: Log) -> None:
    spec = parse_filter(since="2026-11-20T09:00:00Z", until="2026-11-20T09:30:00Z")
    report = logged.reader.report(spec).to_dict()
    assert report["total"] == len(_expected(logged, spec)) > 20
    assert report["period"] == {
        "since": "2026-11-20T09:00:00+00:00",
        "until": "2026-11-20T09:30:00+00:00",
    }


def test_reevaluation_finds_tampered_records(fresh: Log) -> None:
    fresh.fill(40)
    assert fresh.reader.report(parse_filter()).reevaluation.flagged == 0
    # d00000: German client, personal data: us-virginia lacks the EU-US DPF attestation.
    fresh.set("d00000", served_region="us-virginia")
    # d00007 failed over: its first attempt now claims a region India's payment rule forbids.
    attempts = [{"region": "us-virginia", "result": "http_5xx", "status": 502, "ms": 1.0}]
    attempts.append({"region": "uk-london", "result": "ok", "status": 200, "ms": 2.0})
    fresh.set("d00007", attempts=attempts)
    report = fresh.reader.report(parse_filter()).to_dict()["reevaluation"]
    assert report["violations"] == 2
    flagged = {v["sample_decision_ids"][0]: v for v in report["violating"]}
    assert set(flagged) == {"d00000", "d00007"}
    assert flagged["d00000"]["region"] == "us-virginia"
    assert "eu_us_dpf, which us-virginia lacks" in flagged["d00000"]["why"]
    assert all(v["sample_decision_ids"] == [k] for k, v in flagged.items())


def test_reevaluation_judges_each_record_by_its_own_policy_version(fresh: Log) -> None:
    oregon = dict(chosen_region="us-oregon", served_region="us-oregon")
    fresh.fill(1)
    fresh.set("d00000", **oregon)  # version 1 allows a DPF-certified US region for EU data
    gdpr = next(r for r in fresh.store.load_snapshot().regimes if r.id == "gdpr")
    rule = dataclasses.replace(gdpr.rules[0], destinations=(Destination("DE"),))
    assert fresh.store.replace_regime(dataclasses.replace(gdpr, rules=(rule,))) == 2
    fresh.fill(1, prefix="v2-", start=START + timedelta(hours=1))
    fresh.set("v2-00000", **oregon)  # version 2 no longer does
    report = fresh.reader.report(parse_filter()).to_dict()["reevaluation"]
    assert report["violations"] == 1
    (violation,) = report["violating"]
    assert (violation["policy_version"], violation["sample_decision_ids"]) == (2, ["v2-00000"])
    assert "US is not a permitted destination" in violation["why"]


def test_reevaluation_respects_rule_dates(fresh: Log) -> None:
    """India's Rule 13(4) keeps a Significant Data Fiduciary's data in India from 2027-05-13."""
    sdf = Tenant("sdf", "SDF Ltd", flags=frozenset({"significant_data_fiduciary"}))
    fresh.store.upsert_tenant(sdf, ["rg-sdf-key"])
    snapshot = fresh.snapshot
    days = {
        "early": datetime(2027, 5, 12, 23, 59, tzinfo=UTC),
        "late": datetime(2027, 5, 13, tzinfo=UTC),
    }
    fresh.write(
        [make_record(snapshot, name, at, client="IN", tenant="sdf") for name, at in days.items()]
    )
    for name in days:
        fresh.set(name, chosen_region="eu-frankfurt", served_region="eu-frankfurt")
    report = fresh.reader.report(parse_filter()).to_dict()["reevaluation"]
    assert report["violations"] == 1
    assert report["violating"][0]["sample_decision_ids"] == ["late"]
    assert "in_dpdp.rule13_4_sdf" in report["violating"][0]["why"]


def test_records_without_history_are_reported_unverifiable(fresh: Log) -> None:
    fresh.fill(3)
    fresh.set("d00000", policy_version=99)
    report = fresh.reader.report(parse_filter()).to_dict()["reevaluation"]
    assert report["violations"] == 0
    assert report["unverifiable_reasons"] == [
        {"reason": "policy version 99 not in the policy history", "count": 1}
    ]


def test_every_policy_version_is_kept(fresh: Log) -> None:
    fresh.store.upsert_tenant(Tenant("beta", "Beta", home_jurisdiction="GB"), ["rg-beta"])
    current = fresh.store.load_snapshot()
    with fresh.store.engine.connect() as conn:
        history = load_history(conn)
    assert sorted(history) == [1, 2]
    old, new = history[1], history[2]
    assert "beta" not in old.tenants and new.tenants["beta"].home_jurisdiction == "GB"
    assert new.regimes == current.regimes and new.regions == current.regions
    assert new.label == current.label
    stripped = {
        k: dataclasses.replace(t, api_key_hashes=frozenset()) for k, t in current.tenants.items()
    }
    assert dict(new.tenants) == stripped  # keys are secrets: not kept in the history


def test_upgrade_records_the_policy_already_there(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    store = seeded_store(url)
    store.upsert_tenant(Tenant("beta", "Beta"), [])
    store.close()
    config = alembic_config(url)
    command.downgrade(config, "0003")  # as if the database predates the policy history
    upgrade(url)
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            history = load_history(conn)
    finally:
        engine.dispose()
    assert sorted(history) == [2]
    assert "beta" in history[2].tenants and len(history[2].regimes) > 10


def test_sqlite_search_and_report_use_indexes(logged: Log) -> None:
    if logged.store.engine.dialect.name != "sqlite":
        pytest.skip("query plans checked on SQLite")
    from compliance.audit_query.report import KEYS
    from compliance.audit_query.search import SUMMARY_COLUMNS, conditions

    table = schema.routing_decisions
    for raw in ({"since": "2026-11-20"}, {"region": "uk-london"}, {"tenant": "demo"}):
        stmt = (
            sa.select(*(table.c[c] for c in SUMMARY_COLUMNS))
            .where(*conditions(parse_filter(**raw)))
            .order_by(table.c.decided_at.desc(), table.c.seq.desc())
            .limit(51)
        )
        sql = str(stmt.compile(logged.store.engine, compile_kwargs={"literal_binds": True}))
        with logged.store.engine.connect() as conn:
            steps = [row[-1] for row in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}")]
        reads = [s for s in steps if s.startswith(("SCAN", "SEARCH"))]
        assert reads and all(" USING " in s for s in reads), (raw, steps)
        if "since" in raw:  # the time index also gives the order: no sort
            assert not any("TEMP B-TREE" in s for s in steps), steps
    # The report's GROUP BY reads its index alone, already in order.
    grouped = sa.select(*KEYS.values(), sa.func.count()).group_by(*KEYS.values())
    with logged.store.engine.connect() as conn:
        steps = [row[-1] for row in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {grouped}")]
    assert steps == ["SCAN routing_decisions USING COVERING INDEX ix_routing_decisions_report"]


def test_sqlite_planner_gets_statistics(fresh: Log) -> None:
    if fresh.store.engine.dialect.name != "sqlite":
        pytest.skip("PostgreSQL keeps its own statistics")

    def analysed() -> int | None:
        with fresh.store.engine.connect() as conn:
            tables = conn.exec_driver_sql("SELECT name FROM sqlite_master").scalars().all()
            if "sqlite_stat1" not in tables:
                return None
            stat = conn.exec_driver_sql(
                "SELECT stat FROM sqlite_stat1 WHERE idx = 'ix_routing_decisions_search'"
            ).scalar()
            return int(str(stat).split()[0])

    fresh.fill(20)
    assert analysed() is None
    AuditReader(fresh.store.engine).search(parse_filter(), 5)
    assert analysed() == 20
    fresh.fill(500, prefix="more-", start=START + timedelta(days=1))
    AuditReader(fresh.store.engine).search(parse_filter(), 5)
    assert analysed() == 20  # not yet ten times more than when analysed (floor: 100 rows)
    fresh.fill(600, prefix="again-", start=START + timedelta(days=2))
    AuditReader(fresh.store.engine).report(parse_filter())
    assert analysed() == 1120
