"""still_allowed(): a fallback hop is re-checked against the newest snapshot before it is tried."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest

from compliance.model import Tenant
from gateway.routing.decide import decide
from gateway.routing.decision import Decision, Outcome
from gateway.routing.failover import still_allowed
from regions.catalog import Region, RegionStatus
from tests.factories import facts, routing_snapshot, tenant, twenty_regions

Change = Callable[[tuple[Region, ...], Tenant], tuple[tuple[Region, ...], Tenant]]


def _decision() -> tuple[Decision, str]:
    snapshot = routing_snapshot(twenty_regions(), [tenant("t1")])
    decision = decide(facts(client="DE", tenant_id="t1", model="gpt-4o-mini"), snapshot)
    assert decision.outcome is Outcome.ROUTED and decision.fallbacks
    return decision, decision.fallbacks[0]


def _with_status(hop: str, status: RegionStatus) -> Change:
    def change(regions: tuple[Region, ...], t: Tenant) -> tuple[tuple[Region, ...], Tenant]:
        return tuple(
            dataclasses.replace(r, status=status) if r.id == hop else r for r in regions
        ), t

    return change


def _removed(hop: str) -> Change:
    return lambda regions, t: (tuple(r for r in regions if r.id != hop), t)


def _tenant_change(**changes: object) -> Change:
    return lambda regions, t: (regions, dataclasses.replace(t, **changes))  # type: ignore[arg-type]


DECISION, HOP = _decision()
UNCHANGED: Change = lambda regions, t: (regions, t)  # noqa: E731


@pytest.mark.parametrize(
    ("change", "allowed"),
    [
        pytest.param(UNCHANGED, True, id="unchanged"),
        pytest.param(_tenant_change(flags=frozenset({"x"})), True, id="unrelated-change"),
        pytest.param(_with_status(HOP, RegionStatus.DRAINING), False, id="drained"),
        pytest.param(_with_status(HOP, RegionStatus.DISABLED), False, id="disabled"),
        pytest.param(_removed(HOP), False, id="removed"),
        pytest.param(_tenant_change(denied_regions=frozenset({HOP})), False, id="tenant-denies"),
        pytest.param(
            _tenant_change(allowed_regions=frozenset({DECISION.chosen})),
            False,
            id="tenant-narrowed",
        ),
        pytest.param(
            _tenant_change(allowed_countries=frozenset({"JP"})), False, id="countries-narrowed"
        ),
    ],
)
def test_a_fallback_is_tried_only_if_the_latest_policy_still_allows_it(
    change: Change, allowed: bool
) -> None:
    regions, t = change(twenty_regions(), tenant("t1"))
    latest = routing_snapshot(regions, [t], version=2)
    assert still_allowed(DECISION, HOP, latest) is allowed


def test_the_jurisdictions_found_at_decision_time_are_re_evaluated() -> None:
    # An active region that the decision's jurisdiction (a German client) never allowed: a US
    # region without an adequacy attestation.
    latest = routing_snapshot(twenty_regions(), [tenant("t1")], version=2)
    assert "us-virginia" not in DECISION.allowed_regions
    assert not still_allowed(DECISION, "us-virginia", latest)


def test_health_is_not_re_checked() -> None:
    latest = routing_snapshot(twenty_regions(), [tenant("t1")], health={HOP: False})
    assert still_allowed(DECISION, HOP, latest)
