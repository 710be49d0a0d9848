"""decide(): locate -> policy -> select, the outcomes, the explanation and health hysteresis."""

from __future__ import annotations

import json
from collections import Counter
from datetime import date

import pytest

from gateway.routing.decide import decide
from gateway.routing.decision import JurisdictionSource, Outcome
from gateway.routing.facts import RequestFacts
from gateway.routing.locate import locate
from gateway.routing.snapshot import RoutingSnapshot
from regions.catalog import Region, RegionStatus
from regions.geo import country_centroid, haversine_km
from regions.health import HealthTracker, ProbeStatus, RegionHealth
from tests.factories import facts, region, routing_snapshot, tenant, twenty_regions

FRANKFURT = (50.11, 8.68)
PARIS = (48.86, 2.35)
CLIENT = JurisdictionSource.CLIENT_IP
SUBJECT = JurisdictionSource.DECLARED_SUBJECT
HOME = JurisdictionSource.TENANT_HOME


# -- locate --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("client", "subject", "home", "expected"),
    [
        pytest.param("DE", None, None, [("DE", CLIENT)], id="client-only"),
        pytest.param(None, "IN", None, [("IN", SUBJECT)], id="subject-only"),
        pytest.param(None, None, "FR", [("FR", HOME)], id="home-only"),
        pytest.param(
            "US", "IN", "DE", [("US", CLIENT), ("IN", SUBJECT), ("DE", HOME)], id="all-three"
        ),
        pytest.param(None, None, None, [], id="nothing"),
    ],
)
def test_locate_collects_jurisdictions_in_order(
    client: str | None, subject: str | None, home: str | None, expected: list[tuple[str, str]]
) -> None:
    t = tenant(home=home)
    location = locate(facts(client=client, subject=subject, tenant_id="t1"), t)
    assert [(j.country, j.source) for j in location.jurisdictions] == expected


def test_locate_origin_prefers_client_coordinates_then_first_centroid() -> None:
    assert locate(facts(client="DE", coords=PARIS), None).origin == PARIS
    assert locate(facts(client="DE", subject="IN"), None).origin == country_centroid("DE")
    assert locate(facts(subject="IN"), tenant(home="DE")).origin == country_centroid("IN")
    assert locate(facts(), None).origin is None


def test_unknown_origin_without_declaration_is_refused_with_a_hint() -> None:
    snap = routing_snapshot(twenty_regions())
    decision = decide(facts(), snap)
    assert decision.outcome is Outcome.REFUSED
    assert decision.http_status == 451
    assert decision.allowed_regions == ()
    assert decision.chosen is None
    assert any("X-Data-Subject-Country" in r for r in decision.reasons)


def test_unknown_origin_with_tenant_home_is_routed_near_home() -> None:
    snap = routing_snapshot(twenty_regions(), tenants=[tenant("acme", home="DE")])
    decision = decide(facts(tenant_id="acme"), snap)
    assert decision.outcome is Outcome.ROUTED
    assert decision.chosen == "eu-frankfurt"
    assert [(j.country, j.source) for j in decision.jurisdictions] == [("DE", HOME)]


def test_unknown_origin_with_declared_subject_is_routed() -> None:
    decision = decide(facts(subject="IN", data_class="payment"), routing_snapshot(twenty_regions()))
    assert decision.outcome is Outcome.ROUTED
    assert decision.chosen == "in-mumbai"


# -- select --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("client", "coords", "expected"),
    [
        pytest.param("DE", FRANKFURT, "eu-frankfurt", id="frankfurt"),
        pytest.param("FR", PARIS, "eu-paris", id="paris"),
        pytest.param("IE", None, "eu-dublin", id="ireland-centroid"),
        pytest.param("GB", (52.49, -1.89), "uk-london", id="birmingham"),
        pytest.param("IN", None, "in-mumbai", id="india"),
        pytest.param("JP", None, "jp-tokyo", id="japan"),
        pytest.param("AU", None, "au-sydney", id="australia"),
        pytest.param("US", (40.7, -74.0), "us-virginia", id="new-york-no-regime"),
    ],
)
def test_nearest_allowed_region_wins(
    client: str, coords: tuple[float, float] | None, expected: str
) -> None:
    decision = decide(facts(client=client, coords=coords), routing_snapshot(twenty_regions()))
    assert decision.outcome is Outcome.ROUTED
    assert decision.chosen == expected


def test_fallbacks_are_ordered_by_distance() -> None:
    regions = {r.id: r for r in twenty_regions()}
    decision = decide(facts(client="DE", coords=FRANKFURT), routing_snapshot(regions.values()))
    assert decision.fallbacks
    assert set(decision.route()) == set(decision.allowed_regions)
    distances = [
        haversine_km(*FRANKFURT, regions[rid].latitude, regions[rid].longitude)
        for rid in decision.route()
    ]
    assert distances == sorted(distances)


@pytest.mark.parametrize(
    ("status", "healthy", "reason"),
    [
        pytest.param(RegionStatus.DRAINING, True, "region is draining", id="draining"),
        pytest.param(RegionStatus.DISABLED, True, "region is disabled", id="disabled"),
        pytest.param(RegionStatus.ACTIVE, False, "unhealthy: probe failed", id="unhealthy"),
    ],
)
def test_unusable_regions_are_skipped_with_reason(
    status: RegionStatus, healthy: bool, reason: str
) -> None:
    regions = [
        region("near", "DE", lat=50.1, lon=8.7, status=status),
        region("far", "FR", lat=48.86, lon=2.35),
    ]
    snap = routing_snapshot(regions, health={"near": healthy})
    decision = decide(facts(client="DE", coords=FRANKFURT), snap)
    assert decision.outcome is Outcome.ROUTED
    assert decision.chosen == "far"
    assert decision.fallbacks == ()
    assert dict(decision.skipped) == {"near": reason}
    assert "near" in decision.allowed_regions


def test_region_missing_from_health_view_counts_as_healthy() -> None:
    snap = routing_snapshot([region("a", "DE")], health={"other": False})
    assert decide(facts(client="DE"), snap).chosen == "a"


def _tier(weight_a: int, weight_b: int) -> list[Region]:
    # two regions ~25 km apart: the same distance tier
    return [
        region("fra-a", "DE", lat=50.11, lon=8.68, weight=weight_a),
        region("fra-b", "DE", lat=50.03, lon=8.57, weight=weight_b),
    ]


def test_weight_zero_is_never_primary_while_the_tier_has_weight() -> None:
    snap = routing_snapshot(_tier(0, 1))
    chosen = {
        decide(facts(client="DE", coords=FRANKFURT, request_id=f"r{i}"), snap).chosen
        for i in range(500)
    }
    assert chosen == {"fra-b"}
    decision = decide(facts(client="DE", coords=FRANKFURT), snap)
    assert decision.fallbacks == ("fra-a",)


def test_distribution_follows_weights() -> None:
    snap = routing_snapshot(_tier(75, 25))
    n = 8000
    counts = Counter(
        decide(facts(client="DE", coords=FRANKFURT, request_id=f"req-{i}"), snap).chosen
        for i in range(n)
    )
    assert set(counts) == {"fra-a", "fra-b"}
    assert counts["fra-a"] / n == pytest.approx(0.75, abs=0.04)


def test_same_request_id_picks_the_same_region() -> None:
    snap = routing_snapshot(_tier(50, 50))
    picks = {decide(facts(client="DE", request_id="sticky"), snap).chosen for _ in range(20)}
    assert len(picks) == 1


def test_a_weighted_choice_says_so_with_the_weights() -> None:
    """Two equally near regions 50:100: whichever is picked, the reason names the weighting,
    not 'nearest' (explain used to call each in turn the nearest)."""
    snap = routing_snapshot(_tier(50, 100))
    reasons = {
        decision.chosen: decision.reasons[0]
        for decision in (
            decide(facts(client="DE", coords=FRANKFURT, request_id=f"r{i}"), snap)
            for i in range(50)
        )
    }
    assert set(reasons) == {"fra-a", "fra-b"}
    for chosen, reason in reasons.items():
        assert reason.endswith(
            f"{chosen} is a weighted choice among equally near allowed healthy regions "
            "(weights: fra-a 50, fra-b 100)"
        ), reason


def test_a_single_nearest_region_is_called_nearest() -> None:
    snap = routing_snapshot(_tier(50, 0))
    decision = decide(facts(client="DE", coords=FRANKFURT), snap)
    assert decision.reasons[0].endswith("fra-a is the nearest allowed healthy region")


def test_without_health_the_reason_says_health_is_unknown() -> None:
    snap = RoutingSnapshot(routing_snapshot([region("a", "DE")]).policy, health_known=False)
    decision = decide(facts(client="DE"), snap)
    assert decision.reasons[0].endswith(
        "a is the nearest allowed active (health unknown offline) region"
    )


def test_weights_do_not_pull_traffic_out_of_the_nearest_tier() -> None:
    regions = [
        region("near", "DE", lat=50.11, lon=8.68, weight=1),
        region("far", "FR", lat=48.86, lon=2.35, weight=1000),
    ]
    snap = routing_snapshot(regions)
    chosen = {
        decide(facts(client="DE", coords=FRANKFURT, request_id=f"r{i}"), snap).chosen
        for i in range(200)
    }
    assert chosen == {"near"}


def test_model_filter_skips_regions_without_the_model() -> None:
    snap = routing_snapshot(twenty_regions())
    decision = decide(facts(client="DE", coords=FRANKFURT, model="llama-3.1-70b"), snap)
    assert decision.outcome is Outcome.ROUTED
    assert decision.chosen == "eu-frankfurt"
    assert decision.fallbacks[0] == "eu-paris"
    assert dict(decision.skipped)["eu-dublin"] == "does not serve model llama-3.1-70b"
    regions = {r.id: r for r in twenty_regions()}
    assert all("llama-3.1-70b" in regions[rid].models for rid in decision.route())


# -- outcomes ------------------------------------------------------------------------------


def _two_regions() -> list[Region]:
    return [
        region("eu", "DE", models=["m-eu", "shared"]),
        region("in", "IN", models=["m-in", "shared"]),
    ]


@pytest.mark.parametrize(
    ("client", "model", "health", "outcome", "status"),
    [
        pytest.param("DE", "shared", {}, Outcome.ROUTED, 200, id="routed"),
        pytest.param("DE", None, {}, Outcome.ROUTED, 200, id="routed-no-model"),
        pytest.param("RU", "shared", {}, Outcome.REFUSED, 451, id="refused-no-allowed-region"),
        pytest.param("DE", "shared", {"eu": False}, Outcome.UNAVAILABLE, 503, id="unavailable"),
        pytest.param("DE", "m-eu", {"eu": False}, Outcome.UNAVAILABLE, 503, id="model-down"),
        pytest.param("DE", "gpt-9", {}, Outcome.MODEL_NOT_FOUND, 404, id="model-not-found"),
        pytest.param("DE", "m-in", {}, Outcome.REFUSED, 451, id="model-only-outside-allowed"),
        pytest.param("IN", "m-in", {}, Outcome.ROUTED, 200, id="model-inside-allowed"),
    ],
)
def test_outcomes(
    client: str, model: str | None, health: dict[str, bool], outcome: Outcome, status: int
) -> None:
    snap = routing_snapshot(_two_regions(), health=health)
    decision = decide(facts(client=client, model=model), snap)
    assert decision.outcome is outcome
    assert decision.http_status == status
    assert (decision.chosen is not None) == (outcome is Outcome.ROUTED)
    assert decision.reasons


def test_unavailable_names_every_skipped_region() -> None:
    regions = [region("a", "DE"), region("b", "FR", status="draining")]
    decision = decide(facts(client="DE"), routing_snapshot(regions, health={"a": False}))
    assert decision.outcome is Outcome.UNAVAILABLE
    assert "a: unhealthy" in decision.reasons[0]
    assert "b: region is draining" in decision.reasons[0]


def test_model_outside_allowed_set_says_so() -> None:
    decision = decide(facts(client="DE", model="m-in"), routing_snapshot(_two_regions()))
    assert "served only in regions that may not process" in decision.reasons[0]


def test_with_health_swaps_the_view() -> None:
    snap = routing_snapshot(_two_regions())
    f = facts(client="DE")
    assert decide(f, snap).outcome is Outcome.ROUTED
    down = snap.with_health({"eu": RegionHealth(False, "timeout")})
    decision = decide(f, down)
    assert decision.outcome is Outcome.UNAVAILABLE
    assert dict(decision.skipped) == {"eu": "unhealthy: timeout"}


# -- the decision as a value ---------------------------------------------------------------

EXPECTED_KEYS = {
    "decision_id",
    "outcome",
    "status",
    "chosen_region",
    "fallbacks",
    "policy_version",
    "reasons",
    "facts",
    "jurisdictions",
    "regimes",
    "candidates",
}


@pytest.mark.parametrize(
    "f",
    [
        pytest.param(facts(client="GB", subject="DE", model="gpt-4o"), id="routed"),
        pytest.param(facts(client="DE", subject="IN", data_class="payment"), id="refused"),
        pytest.param(facts(), id="unknown-origin"),
        pytest.param(facts(client="DE", model="nope"), id="model-not-found"),
    ],
)
def test_to_dict_is_json_ready(f: RequestFacts) -> None:
    snap = routing_snapshot(twenty_regions(), version=42)
    decision = decide(f, snap)
    d = json.loads(json.dumps(decision.to_dict()))
    assert set(d) == EXPECTED_KEYS
    assert d["policy_version"] == 42
    assert d["outcome"] == decision.outcome.value
    assert d["status"] == decision.http_status
    assert d["chosen_region"] == decision.chosen
    assert d["facts"]["data_class"] == f.data_class.value
    assert {c["region"] for c in d["candidates"] if c["allowed"]} == set(decision.allowed_regions)


def test_to_dict_explains_regimes_and_candidates() -> None:
    snap = routing_snapshot(twenty_regions())
    d = decide(facts(client="GB", subject="DE", model="gpt-4o"), snap).to_dict()
    assert [j["source"] for j in d["jurisdictions"]] == ["client_ip", "declared_subject"]
    regimes = {r["id"]: r for r in d["regimes"]}
    assert set(regimes) == {"gdpr", "uk_gdpr"}
    assert regimes["uk_gdpr"]["triggered_by"] == ["GB"]
    candidates = {c["region"]: c for c in d["candidates"]}
    ohio = candidates["us-ohio"]
    assert not ohio["allowed"]
    assert any("uk_extension_dpf" in p for p in ohio["policy"])
    assert candidates["il-telaviv"]["skipped"] == "does not serve model gpt-4o"


def test_policy_version_is_carried() -> None:
    for version in (1, 7, 123):
        snap = routing_snapshot([region("a", "DE")], version=version)
        assert decide(facts(client="DE"), snap).policy_version == version
        assert decide(facts(), snap).policy_version == version


def test_stage_timings_are_recorded() -> None:
    decision = decide(facts(client="DE"), routing_snapshot(twenty_regions()))
    assert len(decision.stage_ns) == 3
    assert all(ns >= 0 for ns in decision.stage_ns)


def test_evaluation_is_memoised_for_equal_keys() -> None:
    snap = routing_snapshot(twenty_regions(), tenants=[tenant("acme")])
    policy, acme = snap.policy, snap.policy.tenants["acme"]
    first = policy.evaluate(frozenset({"DE", "IN"}), "personal", acme, date(2026, 12, 1))
    again = policy.evaluate(frozenset(["IN", "DE"]), "personal", acme, date(2026, 12, 1))
    assert again is first
    other = policy.evaluate(frozenset({"DE", "IN"}), "payment", acme, date(2026, 12, 1))
    assert other is not first
    d1 = decide(facts(client="DE", request_id="a"), snap)
    d2 = decide(facts(client="DE", request_id="b"), snap)
    assert d1.verdicts is d2.verdicts


# -- health hysteresis ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fall", "rise", "probes", "healthy_after", "changed"),
    [
        pytest.param(2, 2, "F", "H", "-", id="one-failure-keeps-healthy"),
        pytest.param(2, 2, "FF", "HD", "-+", id="two-failures-go-down"),
        pytest.param(2, 2, "FOF", "HHH", "---", id="flapping-never-goes-down"),
        pytest.param(2, 2, "FFO", "HDD", "-+-", id="one-success-keeps-down"),
        pytest.param(2, 2, "FFOO", "HDDH", "-+-+", id="two-successes-come-back"),
        pytest.param(2, 2, "FFOFOO", "HDDDDH", "-+---+", id="flapping-stays-down"),
        pytest.param(3, 1, "FFFO", "HHDH", "--++", id="fall3-rise1"),
        pytest.param(1, 3, "FOOFOOO", "DDDDDDH", "+-----+", id="fall1-rise3"),
        pytest.param(2, 2, "OOOO", "HHHH", "----", id="all-ok"),
    ],
)
def test_health_hysteresis(
    fall: int, rise: int, probes: str, healthy_after: str, changed: str
) -> None:
    tracker = HealthTracker(fall=fall, rise=rise)
    for probe, state, change in zip(probes, healthy_after, changed, strict=True):
        assert tracker.observe("r1", probe == "O", "timeout") == (change == "+")
        health = tracker.view()["r1"]
        assert health.healthy == (state == "H")
        if not health.healthy:
            assert health.detail


def test_health_tracker_forgets_removed_regions() -> None:
    tracker = HealthTracker(fall=1)
    tracker.observe("gone", False, "x")
    tracker.observe("kept", False, "y")
    tracker.forget({"kept"})
    assert set(tracker.view()) == {"kept"}
    assert tracker.view()["kept"] == RegionHealth(False, "y")


def test_health_status_for_operators() -> None:
    tracker = HealthTracker(fall=2, rise=2)
    assert tracker.status("r1") is None  # never probed: unknown
    tracker.observe("r1", True, at=100.0)
    assert tracker.status("r1") == ProbeStatus(True, "", 100.0, 100.0)
    tracker.observe("r1", False, "health check answered HTTP 503", at=101.0)
    assert tracker.status("r1") == ProbeStatus(
        True, "1 of 2 failed probes to go down: health check answered HTTP 503", 100.0, 101.0
    )
    tracker.observe("r1", False, "health check timed out", at=102.0)
    assert tracker.status("r1") == ProbeStatus(False, "health check timed out", 102.0, 102.0)
    tracker.observe("r1", True, at=103.0)  # a passing probe keeps the reason it went down
    assert tracker.status("r1") == ProbeStatus(
        False, "health check timed out; 1 of 2 passed probes to come back", 102.0, 103.0
    )
    tracker.observe("r1", True, at=104.0)
    assert tracker.status("r1") == ProbeStatus(True, "", 104.0, 104.0)
