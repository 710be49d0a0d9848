"""Search filters for the routing log, parsed from untrusted text with precise errors. Pure."""

from __future__ import annotations

import re
from dataclasses import dataclass, fields
from datetime import UTC, datetime

from compliance.jurisdictions import parse_data_class

OUTCOMES: tuple[str, ...] = (
    "routed",
    "refused",
    "unavailable",
    "model_not_found",
    "upstream_error",
    "unknown",
)
"""Values of `routing_decisions.outcome` (the routing core's Outcome enum), and `unknown`: a
write-ahead decision without an outcome record (compliance.audit_query.open_intents)."""

DEFAULT_LIMIT = 50
MAX_LIMIT = 1000
_COUNTRY = re.compile(r"[A-Za-z]{2}")
_IDENTIFIER = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")


class FilterError(ValueError):
    """A filter value is malformed; `field` names the filter, the message says what is wrong."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


@dataclass(frozen=True, slots=True)
class DecisionFilter:
    """Which routing records to return. Every set field must match (AND).

    `since` is inclusive and `until` exclusive. `jurisdiction` is the subject jurisdiction: the
    declared subject country, or the client's country when none was declared. `region` matches
    the chosen or the served region.
    """

    since: datetime | None = None
    until: datetime | None = None
    tenant: str | None = None
    client_country: str | None = None
    jurisdiction: str | None = None
    data_class: str | None = None
    region: str | None = None
    outcome: str | None = None

    def as_query(self) -> dict[str, str]:
        """The filter as query parameters (only the fields that are set)."""
        out: dict[str, str] = {}
        for item in fields(self):
            value = getattr(self, item.name)
            if value is not None:
                out[item.name] = value.isoformat() if isinstance(value, datetime) else str(value)
        return out


def parse_time(field: str, text: str) -> datetime:
    """An ISO 8601 date or date-time; without an offset it is taken as UTC."""
    value = text.strip()
    if value.endswith(("Z", "z")):
        value = value[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise FilterError(
            field, f"{text!r} is not an ISO 8601 time (e.g. 2026-11-26 or 2026-11-26T10:00:00Z)"
        ) from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _country(field: str, text: str) -> str:
    value = text.strip()
    if not _COUNTRY.fullmatch(value):
        raise FilterError(field, f"{text!r} is not a two-letter ISO 3166-1 country code")
    return value.upper()


def _identifier(field: str, text: str) -> str:
    value = text.strip()
    if not _IDENTIFIER.fullmatch(value):
        raise FilterError(field, f"{text!r} is not a valid id (letters, digits, . _ : -)")
    return value


def _outcome(text: str) -> str:
    value = text.strip().lower()
    if value not in OUTCOMES:
        raise FilterError(
            "outcome", f"unknown outcome {text!r}; expected one of: {', '.join(OUTCOMES)}"
        )
    return value


def _data_class(text: str) -> str:
    try:
        return parse_data_class(text).value
    except ValueError as exc:
        raise FilterError("data_class", str(exc)) from None


def _blank(value: str | None) -> str | None:
    return None if value is None or not value.strip() else value


def parse_filter(
    *,
    since: str | None = None,
    until: str | None = None,
    tenant: str | None = None,
    client_country: str | None = None,
    jurisdiction: str | None = None,
    data_class: str | None = None,
    region: str | None = None,
    outcome: str | None = None,
) -> DecisionFilter:
    """Validate raw filter text (empty strings mean "not set"); FilterError names the field."""
    since, until = _blank(since), _blank(until)
    tenant, client_country, jurisdiction = (
        _blank(tenant),
        _blank(client_country),
        _blank(jurisdiction),
    )
    data_class, region, outcome = _blank(data_class), _blank(region), _blank(outcome)
    result = DecisionFilter(
        since=parse_time("since", since) if since else None,
        until=parse_time("until", until) if until else None,
        tenant=_identifier("tenant", tenant) if tenant else None,
        client_country=_country("client_country", client_country) if client_country else None,
        jurisdiction=_country("jurisdiction", jurisdiction) if jurisdiction else None,
        data_class=_data_class(data_class) if data_class else None,
        region=_identifier("region", region) if region else None,
        outcome=_outcome(outcome) if outcome else None,
    )
    if result.since and result.until and result.since >= result.until:
        raise FilterError("until", "must be later than since")
    return result


def parse_limit(text: str | int | None) -> int:
    """A page size between 1 and MAX_LIMIT (default DEFAULT_LIMIT)."""
    if text is None or (isinstance(text, str) and not text.strip()):
        return DEFAULT_LIMIT
    try:
        value = int(text)
    except ValueError:
        raise FilterError("limit", f"{text!r} is not a whole number") from None
    if not 1 <= value <= MAX_LIMIT:
        raise FilterError("limit", f"must be between 1 and {MAX_LIMIT}, got {value}")
    return value
