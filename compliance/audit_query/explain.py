"""Plain-words account of a stored routing record (its explanation JSON and columns). Pure.

The live counterpart, gateway/explain_text.py, renders a Decision object; records in the log
are JSON (Decision.to_dict()), possibly written by an older version, so every field is
read defensively and anything missing is simply left out.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from compliance.jurisdictions import EEA, EU27

ATTESTATIONS: Mapping[str, str] = {
    "eu_us_dpf": "EU-US Data Privacy Framework",
    "uk_extension_dpf": "UK Extension to the EU-US DPF",
    "swiss_us_dpf": "Swiss-US Data Privacy Framework",
    "pipeda": "Canadian PIPEDA",
    "appi_private_sector": "Japanese APPI (private sector)",
    "pipa": "Korean PIPA",
}
"""Readable names of the region attestations the default policy pack speaks of."""

_SOURCES: Mapping[str, str] = {
    "client_ip": "client located there by IP address",
    "declared_subject": "declared by the caller",
    "tenant_home": "the tenant's home jurisdiction",
}
_OUTCOMES: Mapping[str, str] = {
    "routed": "Routed",
    "refused": "Refused",
    "unavailable": "Not served: every allowed region was unavailable",
    "model_not_found": "Not served: no region serves the model",
    "upstream_error": "Failed: every allowed region tried returned an error",
    "unknown": "No outcome recorded",
}
_RULE_PREFIX = re.compile(r"^(?P<rule>[A-Za-z0-9_.-]+): (?P<text>.*)$")
_ATTESTATION = re.compile(r"attestation (?P<ids>[a-z0-9_]+(?: or [a-z0-9_]+)*)")


@dataclass(frozen=True, slots=True)
class PlainWords:
    """A one-line summary and a fuller account, line by line."""

    summary: str
    lines: tuple[str, ...]

    @property
    def text(self) -> str:
        """The full account as one string."""
        return "\n".join(self.lines)


def _list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list | tuple) else []


def _dict(value: Any) -> dict[str, Any]:
    return dict(value) if isinstance(value, Mapping) else {}


def _bloc(country: str) -> str:
    if country in EU27:
        return "EU"
    return "EEA" if country in EEA else country


def _attestations(match: re.Match[str]) -> str:
    ids = match.group("ids").split(" or ")
    names = [f"{ATTESTATIONS[i]} ({i})" if i in ATTESTATIONS else i for i in ids]
    return "attestation " + " or ".join(names)


def humanise_reason(reason: str) -> str:
    """'gdpr.chapter_v: US allowed only with attestation eu_us_dpf, ...' -> readable, rule last."""
    match = _RULE_PREFIX.match(reason)
    text, rule = (match.group("text"), match.group("rule")) if match else (reason, None)
    text = _ATTESTATION.sub(_attestations, text)
    return f"{text} [{rule}]" if rule else text


def _jurisdictions(explanation: Mapping[str, Any]) -> list[tuple[str, str]]:
    out = []
    for item in _list(explanation.get("jurisdictions")):
        if isinstance(item, Mapping) and item.get("country"):
            out.append((str(item["country"]), str(item.get("source") or "")))
        elif isinstance(item, str):
            out.append((item, ""))
    return out


def _subject(country: str, how: str) -> str:
    bloc = _bloc(country)
    if bloc == country:
        return f"data subject in {country} ({how})"
    return f"{bloc} data subject ({country}, {how})"


def _subject_phrase(record: Mapping[str, Any], found: Sequence[tuple[str, str]]) -> str:
    subject = record.get("subject_country")
    client = record.get("client_country")
    if subject:
        return _subject(str(subject), "declared")
    if client:
        return _subject(str(client), "located by client IP")
    homes = [c for c, source in found if source == "tenant_home"]
    if homes:
        return f"data subject of unknown location; tenant home jurisdiction {homes[0]}"
    return "data subject of unknown location"


def _regime_names(explanation: Mapping[str, Any]) -> list[str]:
    names = []
    for regime in _list(explanation.get("regimes")):
        regime = _dict(regime)
        if _list(regime.get("rules")):
            names.append(str(regime.get("name") or regime.get("id")))
    return names


def _outcome_phrase(record: Mapping[str, Any]) -> str:
    outcome = str(record.get("outcome") or "")
    status = record.get("status_code")
    chosen, served = record.get("chosen_region"), record.get("served_region")
    head = _OUTCOMES.get(outcome, outcome or "unknown outcome")
    if record.get("outcome_recorded") is False:
        return f"{head}: decided for {chosen}, made durable before forwarding"
    if outcome == "routed":
        if served and chosen and served != chosen:
            return f"Routed to {served} after {chosen} failed (HTTP {status})"
        return f"Routed to {served or chosen} (HTTP {status})"
    return f"{head} (HTTP {status})"


def _candidate_lines(explanation: Mapping[str, Any], chosen: Any) -> list[str]:
    lines = []
    for candidate in _list(explanation.get("candidates")):
        candidate = _dict(candidate)
        region = candidate.get("region")
        policy = "; ".join(humanise_reason(str(r)) for r in _list(candidate.get("policy")))
        if not candidate.get("allowed"):
            lines.append(f"{region} excluded: {policy or 'no reason recorded'}")
        elif candidate.get("skipped"):
            lines.append(f"{region} allowed but skipped: {candidate['skipped']}")
        else:
            mark = "chosen" if region == chosen else "allowed"
            lines.append(f"{region} {mark}: {policy}")
    return lines


def _attempt_line(attempts: Sequence[Any]) -> str | None:
    parts = []
    for attempt in attempts:
        attempt = _dict(attempt)
        status = f", HTTP {attempt['status']}" if attempt.get("status") is not None else ""
        ms = f", {float(attempt['ms']):.1f} ms" if attempt.get("ms") else ""
        if attempt.get("bytes") is not None:
            ms += f", first byte {attempt.get('ttfb_ms')} ms, {attempt['bytes']} bytes"
        parts.append(f"{attempt.get('region')} ({attempt.get('result')}{status}{ms})")
    return f"Tried in order: {', '.join(parts)}." if parts else None


def plain_words(record: Mapping[str, Any]) -> PlainWords:
    """Explain one routing record: who the data belongs to, which law applied, where it went."""
    explanation = _dict(record.get("explanation"))
    found = _jurisdictions(explanation)
    regimes = _regime_names(explanation)
    law = f"under {' and '.join(regimes)}" if regimes else "(no residency regime restricts it)"
    excluded = [line for line in _candidate_lines(explanation, None) if " excluded: " in line]
    summary = "; ".join(
        [
            _outcome_phrase(record),
            f"{record.get('data_class') or 'unknown'} data; {_subject_phrase(record, found)} {law}",
            *excluded,
        ]
    )
    lines = [
        f"Decision {record.get('decision_id')} at {_when(record)}: {_outcome_phrase(record)}, "
        f"policy version {record.get('policy_version')}.",
        f"Request: {record.get('data_class') or 'unknown'} data; model "
        f"{record.get('model') or '-'}; tenant {record.get('tenant_id') or '-'}.",
    ]
    lines.extend(f"Jurisdiction {c}: {_SOURCES.get(s, s or 'recorded')}." for c, s in found)
    lines.extend(_regime_lines(explanation))
    lines.extend(_candidate_lines(explanation, record.get("chosen_region")))
    fallbacks = _list(explanation.get("fallbacks"))
    if fallbacks:
        lines.append(f"Fallbacks in order: {', '.join(str(f) for f in fallbacks)}.")
    attempts = _attempt_line(_list(record.get("attempts")))
    if attempts:
        lines.append(attempts)
    lines.extend(f"Reason: {r}" for r in _list(record.get("reasons")))
    if record.get("write_ahead_seq") is not None:
        lines.append(
            f"Write-ahead: the decision was durable (chain entry #{record['write_ahead_seq']}) "
            "before the request left for a region."
        )
    if record.get("outcome_recorded") is False:
        lines.append(f"Outcome: {record.get('outcome_note')}.")
    lines.append(f"Trace id: {record.get('trace_id') or 'none recorded'}.")
    return PlainWords(summary, tuple(lines))


def _when(record: Mapping[str, Any]) -> str:
    at = record.get("decided_at")
    return at.isoformat() if isinstance(at, datetime) else str(at)


def _regime_lines(explanation: Mapping[str, Any]) -> list[str]:
    lines = []
    for regime in _list(explanation.get("regimes")):
        regime = _dict(regime)
        name = regime.get("name") or regime.get("id")
        via = ", ".join(str(c) for c in _list(regime.get("triggered_by")))
        rules = ", ".join(str(r) for r in _list(regime.get("rules")))
        line = f"{name} applies (because of {via}): " + (
            f"rule{'s' if ',' in rules else ''} {rules}" if rules else "no rule for this data class"
        )
        waived = _list(regime.get("waived_rules"))
        if waived:
            line += f"; waived by tenant opt-in: {', '.join(str(w) for w in waived)}"
        lines.append(line + ".")
    return lines


def decision_document(record: Mapping[str, Any]) -> dict[str, Any]:
    """A stored record as the API and CLI return it: every column plus the plain words."""
    words = plain_words(record)
    return {**record, "summary": words.summary, "explanation_text": list(words.lines)}
