"""Plain-words rendering of a decision, for people (CLI, audit views)."""

from __future__ import annotations

from gateway.routing.decision import Decision


def explain_text(decision: Decision) -> str:
    """A short, readable account of why the request goes where it goes (or nowhere)."""
    facts = decision.facts
    lines = [
        f"decision {decision.id}: {decision.outcome.value.upper()} "
        f"(HTTP {decision.http_status}), policy version {decision.policy_version}",
        f"data class: {facts.data_class.value}; model: {facts.model or '-'}; "
        f"client country: {facts.client_country or 'unknown'}; "
        f"declared subject country: {facts.subject_country or '-'}; "
        f"tenant: {facts.tenant_id or '-'}",
    ]
    for jurisdiction in decision.jurisdictions:
        lines.append(f"jurisdiction {jurisdiction.country} (from {jurisdiction.source.value})")
    for regime in decision.regimes:
        rules = ", ".join(regime.rules) or "no rule for this data class"
        waived = f"; waived by tenant opt-in: {', '.join(regime.waived)}" if regime.waived else ""
        lines.append(
            f"regime {regime.regime_name} applies "
            f"(via {', '.join(regime.triggered_by)}): {rules}{waived}"
        )
    skipped = dict(decision.skipped)
    for verdict in decision.verdicts:
        if not verdict.allowed:
            lines.append(f"  {verdict.region_id}: excluded - {'; '.join(verdict.reasons)}")
        elif verdict.region_id in skipped:
            lines.append(
                f"  {verdict.region_id}: allowed but skipped - {skipped[verdict.region_id]}"
            )
        else:
            mark = "chosen" if verdict.region_id == decision.chosen else "allowed"
            lines.append(f"  {verdict.region_id}: {mark} - {'; '.join(verdict.reasons)}")
    if decision.fallbacks:
        lines.append(f"fallbacks in order: {', '.join(decision.fallbacks)}")
    lines.extend(f"reason: {reason}" for reason in decision.reasons)
    return "\n".join(lines)
