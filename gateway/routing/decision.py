"""The routing decision: a value that carries its reasons."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from compliance.evaluation import (
    PolicyEvaluation,
    RegimeApplication,
    RegionVerdict,
    candidates_json,
)
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
    evaluation: PolicyEvaluation
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
    def regimes(self) -> tuple[RegimeApplication, ...]:
        """The regimes that applied (from the policy stage)."""
        return self.evaluation.regimes

    @property
    def verdicts(self) -> tuple[RegionVerdict, ...]:
        """Every region's verdict (from the policy stage)."""
        return self.evaluation.verdicts

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
            "regimes": self.evaluation.regimes_json,
            "candidates": (
                candidates_json(self.verdicts, skipped)
                if skipped
                else self.evaluation.candidates_json
            ),
        }
