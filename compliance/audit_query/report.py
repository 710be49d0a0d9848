"""Period report over the routing log, aggregated in SQL in one pass.

Definitions (also returned with every report):
- subject jurisdiction: the declared data-subject country (X-Data-Subject-Country), else the
  client's country from GeoIP, else "unknown". A tenant's home jurisdiction is the
  controller's law, not the subject's location, so it does not count here (it does in the
  re-evaluation, as it did when routing).
- processing region: the region that served the request; records no region served (refused,
  unavailable, unknown model, every attempt failed) are counted under "not processed".
- re-evaluation: every record a region was chosen for, served by or sent to is replayed
  against the policy version it was decided under; any such region the policy did not allow
  is a violation. Records are grouped in SQL by everything the policy stage depends on, and
  each distinct group is evaluated once.
"""

from __future__ import annotations

import dataclasses
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from typing import Any

import orjson
from sqlalchemy import (
    ColumnElement,
    Connection,
    Text,
    and_,
    case,
    cast,
    func,
    literal_column,
    select,
)

from compliance.audit_query.filters import DecisionFilter
from compliance.audit_query.reevaluate import (
    Group,
    Reevaluation,
    Violation,
    attempted_regions,
    countries_of,
    reevaluate,
    rule_boundaries,
)
from compliance.audit_query.search import conditions
from compliance.store.policy_history import load_history
from compliance.store.schema import routing_decisions as t

UNKNOWN = "unknown"
_PREFIX = "k_"
"""Output names of the grouping keys (distinct from column names: GROUP BY prefers those)."""
SAMPLE_LIMIT = 5
DEFINITIONS: Mapping[str, str] = {
    "subject_jurisdiction": (
        "declared data-subject country, else the client's country from GeoIP, else 'unknown'"
    ),
    "processing_region": (
        "the region that served the request; records no region served count as not processed"
    ),
    "reevaluation": (
        "each record's chosen, served and attempted regions re-checked against the policy "
        "version it was decided under (jurisdictions: stored ones plus client country, "
        "declared subject country and the tenant's home at that version)"
    ),
}


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

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form (what the API and `gateway audit report --json` return)."""
        regions = sorted({r for row in self.matrix.values() for r in row})
        jurisdictions = sorted(set(self.matrix) | set(self.not_processed))
        re = self.reevaluation
        return {
            "period": {
                "since": _iso(self.spec.since),
                "until": _iso(self.spec.until),
            },
            "filters": self.spec.as_query(),
            "definitions": dict(DEFINITIONS),
            "total": self.total,
            "outcomes": dict(sorted(self.outcomes.items())),
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
        "jurisdictions": list(group.jurisdictions),
        "sample_decision_ids": list(violation.samples),
    }


def _bucket(boundaries: Sequence[date]) -> ColumnElement[Any]:
    """Which interval between rule-date boundaries a record's (UTC) decision date falls in."""
    if not boundaries:
        return literal_column("0")
    whens = [
        (t.c.decided_at < datetime.combine(day, time(), UTC), index)
        for index, day in enumerate(boundaries)
    ]
    return case(*whens, else_=len(boundaries))


def _keys(boundaries: Sequence[date]) -> dict[str, ColumnElement[Any]]:
    """Everything records are grouped by: the policy stage's inputs and the report's axes."""
    failover = and_(
        t.c.chosen_region.is_not(None),
        (t.c.served_region.is_(None)) | (t.c.served_region != t.c.chosen_region),
    )
    return {
        "policy_version": t.c.policy_version,
        "tenant_id": t.c.tenant_id,
        "client_country": t.c.client_country,
        "subject_country": t.c.subject_country,
        "data_class": t.c.data_class,
        "outcome": t.c.outcome,
        "chosen_region": t.c.chosen_region,
        "served_region": t.c.served_region,
        "jurisdictions": cast(t.c.jurisdictions, Text),
        "refusal": case((t.c.outcome == "refused", cast(t.c.reasons, Text))),
        # Only a failed-over request can have been sent to a region other than the two above.
        "attempts": case((failover, cast(t.c.attempts, Text))),
        "bucket": _bucket(boundaries),
    }


def _loads(text: str | None) -> Any:
    return orjson.loads(text) if text else None


def _group(row: Mapping[str, Any]) -> Group:
    regions = [r for r in (row["chosen_region"], row["served_region"]) if r]
    regions.extend(attempted_regions(_loads(row["attempts"])))
    return Group(
        policy_version=row["policy_version"],
        tenant_id=row["tenant_id"],
        client_country=row["client_country"],
        subject_country=row["subject_country"],
        data_class=row["data_class"],
        jurisdictions=countries_of(_loads(row["jurisdictions"])),
        regions=tuple(dict.fromkeys(regions)),
        bucket=int(row["bucket"]),
        count=int(row["n"]),
    )


def _samples(
    conn: Connection, spec: DecisionFilter, boundaries: Sequence[date], raw: Mapping[str, Any]
) -> tuple[str, ...]:
    """A few decision ids of the records in one aggregated row."""
    where = [*conditions(spec)]
    where.extend(expr.is_not_distinct_from(raw[name]) for name, expr in _keys(boundaries).items())
    stmt = select(t.c.decision_id).where(*where).order_by(t.c.seq).limit(SAMPLE_LIMIT)
    return tuple(conn.execute(stmt).scalars())


def build_report(conn: Connection, spec: DecisionFilter) -> Report:
    """The report for records matching `spec` (normally just a period), read in `conn`."""
    history = load_history(conn)
    boundaries = rule_boundaries(history.values())
    keys = _keys(boundaries)
    stmt = (
        select(
            *(expr.label(_PREFIX + name) for name, expr in keys.items()), func.count().label("n")
        )
        .where(*conditions(spec))
        # By output name: PostgreSQL would see two copies of an expression with parameters
        # (the bucket CASE) as different expressions.
        .group_by(*(_PREFIX + name for name in keys))
    )
    raw_rows = [
        {k.removeprefix(_PREFIX): v for k, v in r.items()} for r in conn.execute(stmt).mappings()
    ]
    outcomes: Counter[str] = Counter()
    matrix: dict[str, Counter[str]] = defaultdict(Counter)
    not_processed: Counter[str] = Counter()
    refusals: Counter[str] = Counter()
    groups: list[Group] = []
    for row in raw_rows:
        n = int(row["n"])
        outcomes[row["outcome"]] += n
        who = row["subject_country"] or row["client_country"] or UNKNOWN
        if row["served_region"]:
            matrix[who][row["served_region"]] += n
        else:
            not_processed[who] += n
        if row["refusal"] is not None:
            reasons = _loads(row["refusal"]) or ["no reason recorded"]
            refusals["; ".join(str(r) for r in reasons)] += n
        groups.append(_group(row))
    result = reevaluate(groups, history, boundaries)
    by_group = {id(g): raw for g, raw in zip(groups, raw_rows, strict=True)}
    result.violations = [
        dataclasses.replace(v, samples=_samples(conn, spec, boundaries, by_group[id(v.group)]))
        for v in result.violations
    ]
    return Report(
        spec=spec,
        total=sum(outcomes.values()),
        outcomes=dict(outcomes),
        matrix={j: dict(c) for j, c in matrix.items()},
        not_processed=dict(not_processed),
        refusals=refusals.most_common(),
        reevaluation=result,
    )
