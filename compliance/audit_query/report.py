"""Period report over the routing log, aggregated in SQL.

Definitions (also returned with every report):
- subject jurisdiction: the declared data-subject country (X-Data-Subject-Country), else the
  client's country from GeoIP, else "unknown". A tenant's home jurisdiction is the
  controller's law, not the subject's location, so it does not count here (it does in the
  re-evaluation, as it did when routing).
- processing region: the region that served the request; records no region served (refused,
  unavailable, unknown model, every attempt failed) are counted under "not processed".
- re-evaluation: every region a record was chosen for, served by or sent to is checked against
  the policy version it was decided under; any region that version did not allow is a
  violation. Records are grouped in SQL by everything the policy stage depends on, and each
  distinct group is evaluated once.

Cost: one GROUP BY over scalar columns that one index covers (no table rows read), plus row
reads only for refusals (their reasons) and failed-over requests (their attempts).
"""

from __future__ import annotations

import itertools
from collections import Counter, defaultdict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, time
from typing import Any

import orjson
from sqlalchemy import (
    ColumnElement,
    Connection,
    Text,
    and_,
    cast,
    func,
    or_,
    select,
)

from compliance.audit.intents import UNKNOWN_OUTCOME
from compliance.audit_query import open_intents
from compliance.audit_query.filters import DecisionFilter
from compliance.audit_query.reevaluate import (
    Group,
    Reevaluation,
    Violation,
    attempted_regions,
    reevaluate,
    rule_boundaries,
)
from compliance.audit_query.search import conditions
from compliance.store.policy_history import load_history
from compliance.store.schema import routing_decisions as t
from compliance.store.schema import routing_intents

UNKNOWN = "unknown"
SAMPLE_LIMIT = 5
_CHUNK = 1000
_PREFIX = "k_"
"""Output names of the grouping keys (distinct from column names: GROUP BY prefers those)."""
DEFINITIONS: Mapping[str, str] = {
    "subject_jurisdiction": (
        "declared data-subject country, else the client's country from GeoIP, else 'unknown'"
    ),
    "processing_region": (
        "the region that served the request; records no region served count as not processed"
    ),
    "without_outcome": (
        "write-ahead decisions with no outcome recorded (the gateway stopped between forwarding "
        "and answering, or the request is still in flight): each may have reached its chosen "
        "region; counted in outcomes as 'unknown', not in the matrix nor re-evaluated"
    ),
    "reevaluation": (
        "each record's chosen, served and attempted regions re-checked against the policy "
        "version it was decided under, with the jurisdictions its facts give under that "
        "version (client country, declared subject country, tenant home)"
    ),
}
_FAILOVER = and_(
    t.c.chosen_region.is_not(None),
    or_(t.c.served_region.is_(None), t.c.served_region != t.c.chosen_region),
)
"""Only a failed-over request can have been sent to a region other than chosen and served."""


@dataclass(frozen=True, slots=True)
class Report:
    """Counts for a period: outcomes, jurisdiction x region matrix, refusals, re-evaluation."""

    spec: DecisionFilter
    total: int
    outcomes: dict[str, int]
    matrix: dict[str, dict[str, int]]
    not_processed: dict[str, int]
    refusals: list[tuple[str, int]]
    reevaluation: Reevaluation
    without_outcome: int = 0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form (what the API and `gateway audit report --json` return)."""
        regions = sorted({r for row in self.matrix.values() for r in row})
        jurisdictions = sorted(set(self.matrix) | set(self.not_processed))
        re = self.reevaluation
        return {
            "period": {"since": _iso(self.spec.since), "until": _iso(self.spec.until)},
            "filters": self.spec.as_query(),
            "definitions": dict(DEFINITIONS),
            "total": self.total,
            "outcomes": dict(sorted(self.outcomes.items())),
            "without_outcome": self.without_outcome,
            "matrix": {
                "jurisdictions": jurisdictions,
                "regions": regions,
                "counts": {j: dict(sorted(self.matrix.get(j, {}).items())) for j in jurisdictions},
                "not_processed": {j: self.not_processed.get(j, 0) for j in jurisdictions},
            },
            "refusals": [{"reason": reason, "count": n} for reason, n in self.refusals],
            "reevaluation": {
                "checked": re.checked,
                "not_routed": re.not_routed,
                "groups_evaluated": re.groups,
                "violations": re.flagged,
                "unverifiable": sum(re.unverifiable.values()),
                "unverifiable_reasons": [
                    {"reason": k, "count": v} for k, v in sorted(re.unverifiable.items())
                ],
                "violating": [_violation_dict(v) for v in re.violations],
            },
        }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _violation_dict(violation: Violation) -> dict[str, Any]:
    group = violation.group
    return {
        "region": violation.region,
        "why": violation.why,
        "count": group.count,
        "policy_version": group.policy_version,
        "tenant_id": group.tenant_id,
        "data_class": group.data_class,
        "jurisdictions": list(violation.jurisdictions),
        "sample_decision_ids": list(violation.samples),
    }


def _intervals(
    spec: DecisionFilter, boundaries: Sequence[date]
) -> list[tuple[int, list[ColumnElement[bool]]]]:
    """(bucket, extra conditions) for every rule-date bucket that overlaps the period.

    Bucket i holds decisions made on UTC dates in [boundaries[i-1], boundaries[i]): within
    one bucket every rule is either in force or not, so one evaluation serves all of it.
    """
    edges: list[datetime | None] = [None, *(datetime.combine(d, time(), UTC) for d in boundaries)]
    edges.append(None)
    out = []
    for index, (low, high) in enumerate(itertools.pairwise(edges)):
        if (spec.until and low and low >= spec.until) or (
            spec.since and high and high <= spec.since
        ):
            continue
        where = []
        if low is not None:
            where.append(t.c.decided_at >= low)
        if high is not None:
            where.append(t.c.decided_at < high)
        out.append((index, where))
    return out


KEYS: Mapping[str, ColumnElement[Any]] = {
    "policy_version": t.c.policy_version,
    "tenant_id": t.c.tenant_id,
    "client_country": t.c.client_country,
    "subject_country": t.c.subject_country,
    "data_class": t.c.data_class,
    "outcome": t.c.outcome,
    "chosen_region": t.c.chosen_region,
    "served_region": t.c.served_region,
}
"""The policy stage's inputs and the report's axes, in the order of the report index."""


def _failed_over(row: Mapping[str, Any]) -> bool:
    """_FAILOVER for an aggregated row (chosen and served are among its keys)."""
    chosen, served = row["chosen_region"], row["served_region"]
    return chosen is not None and (served is None or served != chosen)


def _group(row: Mapping[str, Any], regions: Sequence[str], count: int, bucket: int) -> Group:
    return Group(
        policy_version=row["policy_version"],
        tenant_id=row["tenant_id"],
        client_country=row["client_country"],
        subject_country=row["subject_country"],
        data_class=row["data_class"],
        regions=tuple(dict.fromkeys(r for r in regions if r)),
        bucket=bucket,
        count=count,
    )


def _aggregate(conn: Connection, where: Sequence[ColumnElement[bool]]) -> list[dict[str, Any]]:
    """Counts by every key, in the report index's order (so no sort is needed)."""
    stmt = select(*KEYS.values(), func.count()).where(*where).group_by(*KEYS.values())
    out = []
    for row in conn.execute(stmt):
        values = dict(zip(KEYS, row[:-1], strict=True))
        values["n"] = int(row[-1])
        out.append(values)
    return out


def _refusals(conn: Connection, spec: DecisionFilter) -> Counter[str]:
    reasons = cast(t.c.reasons, Text)
    stmt = (
        select(reasons, func.count())
        .where(*conditions(spec), t.c.outcome == "refused")
        .group_by(reasons)
    )
    counts: Counter[str] = Counter()
    for text, n in conn.execute(stmt):
        listed = orjson.loads(text) if text else []
        counts["; ".join(str(r) for r in listed) or "no reason recorded"] += int(n)
    return counts


def _failover_groups(
    conn: Connection, where: Sequence[ColumnElement[bool]], bucket: int
) -> Iterator[Group]:
    """Failed-over records grouped by key and by the regions they were sent to."""
    located = select(t.c.seq, *(c.label(name) for name, c in KEYS.items())).where(*where, _FAILOVER)
    rows: dict[int, dict[str, Any]] = {
        int(r["seq"]): dict(r) for r in conn.execute(located).mappings()
    }
    found: dict[tuple[Any, ...], tuple[dict[str, Any], list[str]]] = {}
    seqs = sorted(rows)
    for start in range(0, len(seqs), _CHUNK):
        stmt = select(t.c.seq, t.c.decision_id, cast(t.c.attempts, Text)).where(
            t.c.seq.in_(seqs[start : start + _CHUNK])
        )
        for seq, decision_id, attempts in conn.execute(stmt):
            row = rows[int(seq)]
            sent = attempted_regions(orjson.loads(attempts) if attempts else [])
            regions = tuple(
                dict.fromkeys(r for r in (row["chosen_region"], row["served_region"], *sent) if r)
            )
            key = (*(row[name] for name in KEYS), regions)
            found.setdefault(key, (row, []))[1].append(decision_id)
    for (*_, regions), (first, ids) in found.items():
        group = _group(first, regions, len(ids), bucket)
        yield replace(group, samples=tuple(sorted(ids)[:SAMPLE_LIMIT]))


def _samples(
    conn: Connection, where: Sequence[ColumnElement[bool]], row: Mapping[str, Any]
) -> tuple[str, ...]:
    """A few decision ids of the records in one aggregated row."""
    match = [c.is_not_distinct_from(row[name]) for name, c in KEYS.items()]
    stmt = select(t.c.decision_id).where(*where, *match).order_by(t.c.seq).limit(SAMPLE_LIMIT)
    return tuple(conn.execute(stmt).scalars())


def build_report(conn: Connection, spec: DecisionFilter) -> Report:
    """The report for records matching `spec` (normally just a period), read in `conn`."""
    history = load_history(conn)
    boundaries = rule_boundaries(history.values())
    outcomes: Counter[str] = Counter()
    matrix: dict[str, Counter[str]] = defaultdict(Counter)
    not_processed: Counter[str] = Counter()
    groups: list[Group] = []
    origin: dict[int, tuple[list[ColumnElement[bool]], dict[str, Any]]] = {}
    for bucket, period in _intervals(spec, boundaries):
        where = [*conditions(spec), *period]
        for row in _aggregate(conn, where):
            n = row["n"]
            outcomes[row["outcome"]] += n
            who = row["subject_country"] or row["client_country"] or UNKNOWN
            if row["served_region"]:
                matrix[who][row["served_region"]] += n
            else:
                not_processed[who] += n
            if not _failed_over(row):  # those are judged with their attempts, below
                group = _group(row, (row["chosen_region"], row["served_region"]), n, bucket)
                origin[id(group)] = (where, row)
                groups.append(group)
        groups.extend(_failover_groups(conn, where, bucket))
    unknown = 0
    if open_intents.wanted(spec):
        unknown = open_intents.count_open(conn, conditions(spec, routing_intents))
        if unknown:
            outcomes[UNKNOWN_OUTCOME] += unknown
    result = reevaluate(groups, history, boundaries)
    result.violations = [
        v if v.samples else replace(v, samples=_samples(conn, *origin[id(v.group)]))
        for v in result.violations
    ]
    return Report(
        spec=spec,
        total=sum(outcomes.values()),
        outcomes=dict(outcomes),
        matrix={j: dict(c) for j, c in matrix.items()},
        not_processed=dict(not_processed),
        refusals=_refusals(conn, spec).most_common(),
        reevaluation=result,
        without_outcome=unknown,
    )
