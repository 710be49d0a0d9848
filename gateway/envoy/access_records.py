"""One line of Envoy's access log -> the routing record the Python data path would write.

Envoy logs the decision's facts (gateway.envoy.access_log) and its own account of the outcome;
the reasons are re-derived here by the same `decide()` over the policy snapshot of the logged
policy version (the policy history keeps one per version). Envoy's allowed set and
jurisdictions are compared with Python's: a disagreement is logged as an error and written into
the record's reasons and explanation, never smoothed over.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from compliance.evaluation import PolicyEvaluation
from compliance.jurisdictions import DataClass
from compliance.snapshot import PolicySnapshot
from gateway.routing.decide import decide
from gateway.routing.decision import Decision, Jurisdiction, JurisdictionSource, Outcome
from gateway.routing.facts import RequestFacts
from gateway.routing.records import Attempt, routing_record
from gateway.routing.snapshot import RoutingSnapshot

logger = logging.getLogger(__name__)

PolicyAt = Callable[[int], PolicySnapshot | None]
"""The policy snapshot of a version (None: not in the history)."""
Pseudonymise = Callable[[str | None], str | None]

REFUSALS = {
    "no_allowed_region": Outcome.REFUSED,
    "no_healthy_region": Outcome.UNAVAILABLE,
    "model_not_found": Outcome.MODEL_NOT_FOUND,
}
CLIENT_CLOSED = 499
MAX_ID_CHARS = 40


class MalformedLine(ValueError):
    """An access-log line that is not a decision entry this module can read."""


@dataclass(frozen=True, slots=True)
class AccessEntry:
    """The fields of one decision's access-log line, checked."""

    decision_id: str
    at: datetime
    tenant: str
    data_class: DataClass
    policy_version: int
    jurisdictions: tuple[tuple[str, str], ...]
    allowed: frozenset[str]
    order: tuple[str, ...]
    refusal: str | None
    raw: Mapping[str, Any]

    def get(self, key: str) -> Any:
        """A raw field (Envoy writes null for an absent value)."""
        return self.raw.get(key)


def _text(raw: Mapping[str, Any], key: str) -> str | None:
    value = raw.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise MalformedLine(f"{key}: expected text, got {type(value).__name__}")
    return value


def _ids(raw: Mapping[str, Any], key: str) -> tuple[str, ...]:
    text = _text(raw, key)
    return tuple(text.split(",")) if text else ()


def parse_line(line: bytes) -> AccessEntry | None:
    """The decision entry of `line`; None for a request answered before any decision (400,
    401, 405: no tenant or policy yet, as the Python path records none). MalformedLine else."""
    try:
        raw = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise MalformedLine(f"not JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise MalformedLine("not a JSON object")
    if raw.get("policy_version") is None or raw.get("tenant") is None:
        return None
    decision_id = _text(raw, "decision_id")
    if decision_id is None or len(decision_id) > MAX_ID_CHARS:
        raise MalformedLine(f"decision_id: {decision_id!r} is missing or too long")
    try:
        at = datetime.fromisoformat(str(raw.get("start_time"))).astimezone(UTC)
        data_class = DataClass(str(raw.get("data_class")))
        version = int(raw["policy_version"])
        status = raw.get("status")
        if not isinstance(status, int):
            raise MalformedLine(f"status: {status!r} is not a number")
    except (TypeError, ValueError) as exc:
        raise MalformedLine(str(exc)) from None
    jurisdictions = tuple(tuple(j.split(":", 1)) for j in _ids(raw, "jurisdictions"))
    sources = {s.value for s in JurisdictionSource}
    if any(len(j) != 2 or j[1] not in sources for j in jurisdictions):
        raise MalformedLine(f"jurisdictions: {raw.get('jurisdictions')!r}")
    return AccessEntry(
        decision_id=decision_id,
        at=at,
        tenant=str(raw["tenant"]),
        data_class=data_class,
        policy_version=version,
        jurisdictions=tuple((c, s) for c, s in jurisdictions),
        allowed=frozenset(_ids(raw, "allowed")),
        order=_ids(raw, "order"),
        refusal=_text(raw, "refusal"),
        raw=raw,
    )


def _facts(entry: AccessEntry) -> RequestFacts:
    model = entry.get("model")
    return RequestFacts(
        request_id=entry.decision_id,
        at=entry.at,
        tenant_id=entry.tenant,
        client_ip=_text(entry.raw, "client_ip"),
        client_country=_text(entry.raw, "client_country"),
        subject_country=_text(entry.raw, "subject_country"),
        data_class=entry.data_class,
        model=model if isinstance(model, str) else None,
    )


def _outcome(entry: AccessEntry) -> tuple[Outcome, int, str | None]:
    """(outcome, status, region that served) as Envoy reports them (response flags: Envoy's
    short codes, e.g. DC downstream closed, UH no healthy upstream)."""
    status = int(entry.get("status"))
    served = _text(entry.raw, "served_region")
    flags = set(str(entry.get("flags") or "-").split(","))
    if entry.refusal is not None:
        return REFUSALS.get(entry.refusal, Outcome.REFUSED), status, None
    if status == 0 or "DC" in flags:  # the client left: logged as 499, as the Python path
        return Outcome.ROUTED, CLIENT_CLOSED, served
    if served is None and flags & {"UH", "NC"}:  # every region down (health checks) or, NC,
        # the chosen regions' cluster is missing from Envoy's configuration: none was tried
        return Outcome.UNAVAILABLE, status, None
    if served is None or status >= 500:
        return Outcome.UPSTREAM_ERROR, status, served
    return Outcome.ROUTED, status, served


def _attempts(entry: AccessEntry, status: int, served: str | None) -> list[Attempt]:
    """Envoy counts attempts and names the region that answered; the failed ones before it
    are the failover order's regions before it (retries go in priority order), unless Envoy
    skipped a region it had marked unhealthy: then which ones were tried is not known."""
    count = entry.get("attempts")
    if not isinstance(count, int) or count <= 0:
        return []
    flags = str(entry.get("flags") or "-")
    before = list(entry.order[: entry.order.index(served)]) if served in entry.order else []
    failed = before if len(before) == count - 1 else ["unknown"] * (count - 1)
    attempts = [Attempt(region, "failed_before_response") for region in failed]
    last = served or "unknown"
    result = "ok" if served and 0 < status < 500 else f"envoy:{flags}"
    if status == CLIENT_CLOSED:
        result = "client_disconnected"
    attempts.append(Attempt(last, result, status or None, float(entry.get("duration_ms") or 0)))
    return attempts


def _envoy_outcome(entry: AccessEntry) -> dict[str, Any]:
    keys = (
        *("flags", "details", "upstream_cluster", "upstream_host", "attempts"),
        *("bytes_received", "bytes_sent", "duration_ms", "first_byte_ms"),
    )
    return {"data_plane": "envoy", **{k: entry.get(k) for k in keys}}


def _disagreement(entry: AccessEntry, decision: Decision) -> str | None:
    python_allowed = frozenset(decision.allowed_regions)
    python_places = tuple((j.country, j.source.value) for j in decision.jurisdictions)
    problems = []
    if python_allowed != entry.allowed:
        problems.append(
            f"Envoy's allowed set {sorted(entry.allowed)} differs from the policy evaluation's "
            f"{sorted(python_allowed)}"
        )
    if python_places != entry.jurisdictions:
        problems.append(
            f"Envoy's jurisdictions {list(entry.jurisdictions)} differ from {list(python_places)}"
        )
    if entry.order and not set(entry.order) <= python_allowed:
        problems.append(f"Envoy's failover order {list(entry.order)} leaves the allowed set")
    if not problems:
        return None
    return f"DISAGREEMENT at policy version {entry.policy_version}: " + "; ".join(problems)


def _routed_reason(decision: Decision, chosen: str, order: tuple[str, ...]) -> tuple[str, ...]:
    """Python's reason for the policy part, Envoy's for the choice (a weighted pick may differ)."""
    reason = decision.reasons[0] if decision.reasons else ""
    policy_part = reason.partition(f"; {decision.chosen} is ")[0] if decision.chosen else reason
    return (
        f"{policy_part}; {chosen} is Envoy's choice among the nearest allowed active regions "
        f"serving the model (failover order: {', '.join(order)})",
    )


def _unexplained(entry: AccessEntry) -> Decision:
    """A decision from the log alone, for a policy version missing from the history."""
    reason = (
        f"policy version {entry.policy_version} is not in the policy history: reasons not "
        f"re-derived; Envoy allowed {sorted(entry.allowed)}"
    )
    return Decision(
        id=entry.decision_id,
        outcome=Outcome.REFUSED,
        facts=_facts(entry),
        jurisdictions=tuple(Jurisdiction(c, JurisdictionSource(s)) for c, s in entry.jurisdictions),
        evaluation=PolicyEvaluation(regimes=(), verdicts=(), allowed=frozenset()),
        skipped=(),
        chosen=None,
        fallbacks=(),
        policy_version=entry.policy_version,
        reasons=(reason,),
    )


def entry_record(
    entry: AccessEntry, policy_at: PolicyAt, pseudonymise: Pseudonymise
) -> dict[str, Any]:
    """The routing record of one decision entry (routing_decisions columns)."""
    policy = policy_at(entry.policy_version)
    outcome, status, served = _outcome(entry)
    disagreement: str | None = None
    if policy is None:
        logger.error("Envoy record %s: %s", entry.decision_id, "policy version not in history")
        decision = _unexplained(entry)
    else:
        decision = decide(_facts(entry), RoutingSnapshot(policy, health_known=False))
        disagreement = _disagreement(entry, decision)
    chosen = entry.order[0] if entry.order else None
    reasons = decision.reasons
    if chosen is not None and policy is not None:
        reasons = _routed_reason(decision, chosen, entry.order)
    if disagreement is not None:
        logger.error("Envoy record %s: %s", entry.decision_id, disagreement)
        reasons = (*reasons, disagreement)
    decision = dataclasses.replace(
        decision,
        outcome=outcome,
        chosen=chosen,
        fallbacks=entry.order[1:],
        policy_version=entry.policy_version,
        reasons=reasons,
    )
    record = routing_record(
        decision,
        outcome=outcome,
        status_code=status,
        served_region=served,
        attempts=_attempts(entry, status, served),
        latency_ms=float(entry.get("duration_ms") or 0),
        trace_id=_trace_id(entry.get("traceparent")),
        client_ip_hmac=pseudonymise(decision.facts.client_ip),
    )
    record["explanation"]["envoy"] = {
        **_envoy_outcome(entry),
        "allowed": sorted(entry.allowed),
        "disagreement": disagreement,
    }
    return record


def _trace_id(traceparent: object) -> str | None:
    if isinstance(traceparent, str):
        parts = traceparent.split("-")
        if len(parts) == 4 and len(parts[1]) == 32:
            return parts[1]
    return None
