"""Audit views, pure parts: filters, cursors, plain-words explanations, re-evaluation."""

from __future__ import annotations

import dataclasses
from datetime import UTC, date, datetime, timedelta

import pytest

from compliance.audit_query.cursor import Position, decode_cursor, encode_cursor
from compliance.audit_query.explain import humanise_reason, plain_words
from compliance.audit_query.filters import (
    DEFAULT_LIMIT,
    MAX_LIMIT,
    OUTCOMES,
    FilterError,
    parse_filter,
    parse_limit,
)
from compliance.audit_query.reevaluate import (
    Group,
    bucket_date,
    reevaluate,
    rule_boundaries,
)
from compliance.model import Regime
from compliance.store.catalog_file import load_catalog
from gateway.routing.decision import Outcome
from gateway.routing.snapshot import RoutingSnapshot
from tests import factories
from tests.audit_support import DEMO_CATALOG, TRACE, make_record

AT = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def _demo(regimes: tuple[Regime, ...] | None = None) -> RoutingSnapshot:
    regions, tenants = load_catalog(DEMO_CATALOG)
    return factories.routing_snapshot(regions, tenants, regimes=regimes)


@pytest.fixture(scope="module")
def snapshot() -> RoutingSnapshot:
    return _demo()


# -- filters -----------------------------------------------------------------------------------


def test_filter_values_are_normalised() -> None:
    spec = parse_filter(
        since="2026-11-01",
        until="2026-11-02T10:30:00+02:00",
        tenant="acme-eu",
        client_country="de",
        jurisdiction=" fr ",
        data_class="Health",
        region="eu-frankfurt",
        outcome="REFUSED",
    )
    assert spec.since == datetime(2026, 11, 1, tzinfo=UTC)
    assert spec.until == datetime(2026, 11, 2, 8, 30, tzinfo=UTC)
    assert (spec.client_country, spec.jurisdiction, spec.data_class) == ("DE", "FR", "health")
    assert (spec.outcome, spec.region, spec.tenant) == ("refused", "eu-frankfurt", "acme-eu")
    assert parse_filter(since="2026-11-01T00:00:00Z").since == datetime(2026, 11, 1, tzinfo=UTC)
    assert parse_filter(tenant="", outcome="  ") == parse_filter()


@pytest.mark.parametrize(
    ("field", "value", "fragment"),
    [
        ("since", "yesterday", "not an ISO 8601 time"),
        ("until", "2026-13-01", "not an ISO 8601 time"),
        ("client_country", "DEU", "two-letter"),
        ("jurisdiction", "1x", "two-letter"),
        ("data_class", "secret", "unknown data class 'secret'"),
        ("outcome", "ok", "expected one of: routed, refused"),
        ("tenant", "a b", "not a valid id"),
        ("region", "eu/frankfurt", "not a valid id"),
    ],
)
def test_bad_filter_names_the_field(field: str, value: str, fragment: str) -> None:
    with pytest.raises(FilterError) as caught:
        parse_filter(**{field: value})
    assert caught.value.field == field
    assert str(caught.value).startswith(f"{field}: ")
    assert fragment in str(caught.value)


def test_period_must_not_be_empty() -> None:
    with pytest.raises(FilterError, match="until: must be later than since"):
        parse_filter(since="2026-11-02", until="2026-11-01")


def test_limit() -> None:
    assert parse_limit(None) == parse_limit("") == DEFAULT_LIMIT
    assert parse_limit("7") == 7
    assert parse_limit(MAX_LIMIT) == MAX_LIMIT
    for bad, fragment in (("0", "between 1"), (str(MAX_LIMIT + 1), "between 1"), ("x", "whole")):
        with pytest.raises(FilterError, match=fragment):
            parse_limit(bad)


def test_outcomes_are_the_routing_cores_and_unknown() -> None:
    # unknown: a write-ahead decision without an outcome record (compliance.audit.intents)
    assert set(OUTCOMES) == {o.value for o in Outcome} | {"unknown"}


def test_filter_as_query_round_trips() -> None:
    spec = parse_filter(since="2026-11-01", jurisdiction="FR", outcome="routed")
    assert parse_filter(**spec.as_query()) == spec


# -- cursors -----------------------------------------------------------------------------------


def test_cursor_round_trip_is_opaque() -> None:
    position = Position(datetime(2026, 11, 1, 9, 0, 0, 123456, tzinfo=UTC), 42)
    token = encode_cursor(position)
    assert "2026" not in token and "=" not in token
    assert decode_cursor(token) == position


@pytest.mark.parametrize("token", ["", "abc", "eyJ2IjoyfQ", encode_cursor(Position(AT, 1))[:-3]])
def test_bad_cursor_is_a_filter_error(token: str) -> None:
    with pytest.raises(FilterError) as caught:
        decode_cursor(token)
    assert caught.value.field == "cursor"


# -- plain words -------------------------------------------------------------------------------


def test_plain_words_for_a_routed_eu_request(snapshot: RoutingSnapshot) -> None:
    record = make_record(snapshot, "d-1", AT, client="DE")
    words = plain_words(record)
    assert words.summary.startswith("Routed to eu-frankfurt (HTTP 200); personal data; ")
    assert "EU data subject (DE, located by client IP) under EU GDPR" in words.summary
    assert (
        "us-virginia excluded: US allowed only with attestation EU-US Data Privacy Framework "
        "(eu_us_dpf), which us-virginia lacks [gdpr.chapter_v]" in words.summary
    )
    assert "eu-frankfurt chosen: EEA: no transfer [gdpr.chapter_v]" in words.lines
    assert "Jurisdiction DE: client located there by IP address." in words.lines
    assert f"Trace id: {TRACE}." in words.lines
    assert any(
        line.startswith("Tried in order: eu-frankfurt (ok, HTTP 200") for line in words.lines
    )
    assert words.text == "\n".join(words.lines)


def test_plain_words_for_a_refusal_and_a_failover(snapshot: RoutingSnapshot) -> None:
    refused = plain_words(make_record(snapshot, "d-2", AT, client="DE", subject="CN"))
    assert refused.summary.startswith("Refused (HTTP 451); personal data; data subject in CN")
    assert "under EU GDPR and China PIPL" in refused.summary
    assert any(line.startswith("Reason: no region may process") for line in refused.lines)
    moved = plain_words(make_record(snapshot, "d-3", AT, client="DE", fail_first=True))
    assert moved.summary.startswith("Routed to uk-london after eu-frankfurt failed")


def test_plain_words_survive_a_sparse_record() -> None:
    words = plain_words({"decision_id": "x", "outcome": "refused", "status_code": 451})
    assert words.summary.startswith("Refused (HTTP 451)")
    assert "Trace id: none recorded." in words.lines


def test_humanise_reason() -> None:
    assert humanise_reason("r.1: US allowed only with attestation pipeda or eu_us_dpf, x") == (
        "US allowed only with attestation Canadian PIPEDA (pipeda) or EU-US Data Privacy "
        "Framework (eu_us_dpf), x [r.1]"
    )
    assert humanise_reason("no rule restricts") == "no rule restricts"


# -- re-evaluation -----------------------------------------------------------------------------


def _group(**changes: object) -> Group:
    base = Group(
        policy_version=1,
        tenant_id=None,
        client_country="DE",
        subject_country=None,
        data_class="personal",
        regions=("eu-frankfurt",),
        bucket=0,
        count=3,
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def test_reevaluation_flags_only_regions_the_version_forbade(snapshot: RoutingSnapshot) -> None:
    history = {1: snapshot.policy}
    result = reevaluate(
        [
            _group(),
            _group(regions=("us-oregon",), count=2),
            _group(regions=("us-virginia",), count=5),
            _group(regions=("eu-frankfurt", "us-virginia"), count=1),
            _group(regions=(), count=4),
        ],
        history,
        (),
    )
    assert (result.checked, result.not_routed, result.groups) == (11, 4, 4)
    assert result.flagged == 6
    assert [(v.region, v.group.count) for v in result.violations] == [
        ("us-virginia", 5),
        ("us-virginia", 1),
    ]
    assert "eu_us_dpf, which us-virginia lacks" in result.violations[0].why


def test_reevaluation_uses_jurisdictions_from_the_facts(snapshot: RoutingSnapshot) -> None:
    # A declared subject in China brings China PIPL in, whatever the record says elsewhere.
    result = reevaluate([_group(subject_country="CN")], {1: snapshot.policy}, ())
    assert result.flagged == 3 and "cn_pipl" in result.violations[0].why
    assert result.violations[0].jurisdictions == ("CN", "DE")
    # The tenant's home jurisdiction in that policy version counts too (acme-eu: DE).
    home = reevaluate(
        [_group(client_country="IN", tenant_id="acme-eu", regions=("in-mumbai",))],
        {1: snapshot.policy},
        (),
    )
    assert home.flagged == 3 and home.violations[0].jurisdictions == ("DE", "IN")
    nowhere = reevaluate([_group(client_country=None)], {1: snapshot.policy}, ())
    assert nowhere.flagged == 3 and "no jurisdiction" in nowhere.violations[0].why


def test_reevaluation_reports_what_it_cannot_check(snapshot: RoutingSnapshot) -> None:
    result = reevaluate(
        [_group(policy_version=7), _group(policy_version=None), _group(tenant_id="ghost")],
        {1: snapshot.policy},
        (),
    )
    assert result.flagged == 0 and result.checked == 9
    assert result.unverifiable == {
        "policy version 7 not in the policy history": 3,
        "policy version None not in the policy history": 3,
        "tenant ghost absent from policy version 1": 3,
    }


def test_rule_date_buckets() -> None:
    regimes = factories.replace_rule(
        factories.default_regimes(), "gdpr.chapter_v", effective_to=date(2031, 12, 31)
    )
    snapshot = _demo(regimes).policy
    bounds = rule_boundaries([snapshot])
    assert date(2031, 12, 31) in bounds and bounds == tuple(sorted(set(bounds)))
    index = bounds.index(date(2031, 12, 31))
    assert bucket_date(bounds, index + 1) == date(2031, 12, 31)
    assert bucket_date(bounds, 0) == bounds[0] - timedelta(days=1)
    assert bucket_date((), 0) < date(2026, 1, 1)
