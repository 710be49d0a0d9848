"""The routing decision: a value that carries its reasons."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from compliance.evaluation import RegimeApplication, RegionVerdict
from gateway.routing.facts import RequestFacts


class Outcome(StrEnum):
    """How a decision ended."""

    ROUTED = "routed"
    REFUSED = "refused"
    UNAVAILABLE = "unavailable"
    MODEL_NOT_FOUND = "model_not_found"
    UPSTREAM_ERROR = "upstream_error"


HTTP_STATUS: dict[Outcome, int] = {
    Outcome.ROUTED: 200,
    Outcome.REFUSED: 451,
    Outcome.UNAVAILABLE: 503,
    Outcome.MODEL_NOT_FOUND: 404,
    Outcome.UPSTREAM_ERROR: 502,
}


class JurisdictionSource(StrEnum):
    """Where a jurisdiction came from."""

    CLIENT_IP = "client_ip"
    DECLARED_SUBJECT = "declared_subject"
    TENANT_HOME = "tenant_home"


@dataclass(frozen=True, slots=True)
class Jurisdiction:
    """A country whose law may govern the request, and how the gateway learned of it."""

    country: str
    source: JurisdictionSource


@dataclass(frozen=True, slots=True)
class Decision:
    """One routing decision with every reason behind it.

    Contract: `chosen` and every entry of `fallbacks` are regions the policy allowed.
    """

    id: str
    outcome: Outcome
    facts: RequestFacts
    jurisdictions: tuple[Jurisdiction, ...]
    regimes: tuple[RegimeApplication, ...]
    verdicts: tuple[RegionVerdict, ...]
    skipped: tuple[tuple[str, str], ...]
    chosen: str | None
    fallbacks: tuple[str, ...]
    policy_version: int
    reasons: tuple[str, ...]
    stage_ns: tuple[int, int, int] = (0, 0, 0)

    @property
    def http_status(self) -> int:
        """The HTTP status this decision answers with if nothing is forwarded."""
        return HTTP_STATUS[self.outcome]

    @property
    def allowed_regions(self) -> tuple[str, ...]:
        """Ids of every region the policy allowed."""
        return tuple(v.region_id for v in self.verdicts if v.allowed)

    def route(self) -> tuple[str, ...]:
        """The regions to try, in order: the chosen one, then the fallbacks."""
        return ((self.chosen,) if self.chosen else ()) + self.fallbacks

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready explanation of the decision."""
        skipped = dict(self.skipped)
        facts = self.facts
        return {
            "decision_id": self.id,
            "outcome": self.outcome.value,
            "status": self.http_status,
            "chosen_region": self.chosen,
            "fallbacks": list(self.fallbacks),
            "policy_version": self.policy_version,
            "reasons": list(self.reasons),
            "facts": {
                "tenant": facts.tenant_id,
                "client_country": facts.client_country,
                "subject_country": facts.subject_country,
                "data_class": facts.data_class.value,
                "model": facts.model,
                "at": facts.at.isoformat(),
            },
            "jurisdictions": [
                {"country": j.country, "source": j.source.value} for j in self.jurisdictions
            ],
            "regimes": _RENDERED.get(self.regimes, _regimes),
            "candidates": (
                _candidates(self.verdicts, skipped)
                if skipped
                else _RENDERED.get(self.verdicts, _candidates)
            ),
        }


def _regimes(regimes: tuple[RegimeApplication, ...]) -> list[dict[str, Any]]:
    return [
        {
            "id": r.regime_id,
            "name": r.regime_name,
            "triggered_by": list(r.triggered_by),
            "rules": list(r.rules),
            "waived_rules": list(r.waived),
        }
        for r in regimes
    ]


def _candidates(
    verdicts: tuple[RegionVerdict, ...], skipped: dict[str, str] | None = None
) -> list[dict[str, Any]]:
    skipped = skipped or {}
    return [
        {
            "region": v.region_id,
            "allowed": v.allowed,
            "policy": list(v.reasons),
            "skipped": skipped.get(v.region_id),
        }
        for v in verdicts
    ]


class _RenderedParts:
    """JSON forms of the memoised policy evaluation's parts, built once per evaluation.

    The policy stage is memoised (PolicySnapshot.evaluate), so the same `verdicts` and
    `regimes` tuples recur in every decision with the same facts; their JSON form is kept,
    keyed by the tuple's identity (the entry holds the tuple, so the id cannot be reused).
    Callers must not mutate what they get.
    """

    def __init__(self, limit: int = 1024) -> None:
        self._limit = limit
        self._parts: dict[int, tuple[object, list[dict[str, Any]]]] = {}

    def get(self, part: Any, render: Callable[[Any], list[dict[str, Any]]]) -> list[dict[str, Any]]:
        entry = self._parts.get(id(part))
        if entry is not None and entry[0] is part:
            return entry[1]
        rendered: list[dict[str, Any]] = render(part)
        if len(self._parts) >= self._limit:
            self._parts.clear()
        self._parts[id(part)] = (part, rendered)
        return rendered


_RENDERED = _RenderedParts()
