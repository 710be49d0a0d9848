"""The default policy pack against compliance/packs/RULES.md, one table row per legal rule.

Each row puts a single region in a destination country and checks that the request is routed
there (allowed) or refused with HTTP 451 and the rule id (and missing attestation) in the
region's verdict reasons.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest

from compliance.model import Regime, Tenant
from gateway.routing.decide import decide
from gateway.routing.decision import Decision, Outcome
from tests.factories import (
    AT,
    default_regimes,
    enable_regimes,
    facts,
    region,
    replace_rule,
    routing_snapshot,
    tenant,
    twenty_regions,
)

SDF_FROM = datetime(2027, 5, 13, 0, 0, tzinfo=UTC)
SDF_EVE = datetime(2027, 5, 12, 23, 59, tzinfo=UTC)


@dataclass(frozen=True)
class Case:
    dest: str
    allowed: bool
    client: str | None = None
    subject: str | None = None
    attestations: tuple[str, ...] = ()
    data_class: str = "personal"
    tenant: Tenant | None = None
    at: datetime = AT
    regimes: tuple[Regime, ...] | None = None
    reasons: tuple[str, ...] = field(default=())


def allow(case_id: str, dest: str, *attestations: str, **kw: Any) -> Any:
    return pytest.param(Case(dest, True, attestations=attestations, **kw), id=case_id)


def refuse(case_id: str, dest: str, *attestations: str, why: tuple[str, ...], **kw: Any) -> Any:
    return pytest.param(Case(dest, False, attestations=attestations, reasons=why, **kw), id=case_id)


def scc(regime: str, country: str, **kw: Any) -> Tenant:
    return tenant("scc", transfers=[(regime, country)], **kw)


GDPR = "gdpr.chapter_v"
UK = "uk_gdpr.transfers"
CH = "ch_fadp.art16"
FULL_ADEQUACY = ("CH", "AR", "GG", "IM", "JE", "FO", "AD", "UY", "NZ", "GB", "BR", "IL")
UK_ADEQUATE: tuple[str, ...] = (
    "GB",
    "DE",
    "NO",
    "IS",
    "GI",
    "CH",
    "AR",
    "GG",
    "IM",
    "JE",
    "AD",
    "IL",
    "UY",
)
UK_ADEQUATE += ("NZ", "FO")
SWISS_ADEQUATE = ("CH", "DE", "FR", "NO", "LI", "IS", "GB", "AR", "GI", "IL", "NZ", "UY")
ENABLED = {rid: enable_regimes(default_regimes(), rid) for rid in ("sa_pdpl", "id_pdp", "vn_pdpd")}
DPDP_NOTIFIED_CN = replace_rule(default_regimes(), "in_dpdp.s16", excluded_countries={"CN"})

EEA_CASES = [
    allow(f"gdpr-{src}-subject-to-{dst}", dst, subject=src)
    for src, dst in [("DE", "IE"), ("FR", "DE"), ("IS", "DE"), ("LI", "NO"), ("NO", "LI")]
] + [
    allow("gdpr-DE-client-to-IS", "IS", client="DE"),
    allow("gdpr-IS-client-to-FR", "FR", client="IS"),
]
FULL_ADEQUACY_CASES = [allow(f"gdpr-full-adequacy-{c}", c, client="DE") for c in FULL_ADEQUACY]
FULL_ADEQUACY_CASES += [
    allow("gdpr-NO-client-to-BR-unverified", "BR", client="NO"),
    refuse("gdpr-DE-to-GI-not-adequate", "GI", client="DE", why=(GDPR, "not a permitted")),
]
PARTIAL_CASES = []
for dest, att in [("CA", "pipeda"), ("JP", "appi_private_sector"), ("KR", "pipa")]:
    PARTIAL_CASES += [
        allow(f"gdpr-{dest}-with-{att}", dest, att, client="FR"),
        refuse(f"gdpr-{dest}-without-{att}", dest, client="FR", why=(GDPR, att)),
    ]
PARTIAL_CASES += [
    allow("gdpr-US-with-eu_us_dpf", "US", "eu_us_dpf", client="DE"),
    refuse("gdpr-US-without-dpf", "US", client="DE", why=(GDPR, "eu_us_dpf")),
    refuse(
        "gdpr-US-uk-and-swiss-dpf-only",
        "US",
        "uk_extension_dpf",
        "swiss_us_dpf",
        client="DE",
        why=(GDPR, "eu_us_dpf"),
    ),
]
THIRD_COUNTRY_CASES = [
    refuse(f"gdpr-third-country-{c}", c, client="DE", why=(GDPR, "not a permitted"))
    for c in ("IN", "SG", "AU", "CN", "RU")
] + [
    allow("gdpr-scc-opt-in-IN", "IN", client="DE", tenant=scc("gdpr", "IN")),
    allow("gdpr-scc-opt-in-US-without-dpf", "US", client="DE", tenant=scc("gdpr", "US")),
    allow(
        "gdpr-scc-opt-in-SG-special",
        "SG",
        client="DE",
        data_class="special",
        tenant=scc("gdpr", "SG"),
    ),
    refuse("gdpr-scc-for-other-country", "IN", client="DE", tenant=scc("gdpr", "SG"), why=(GDPR,)),
    refuse("gdpr-scc-of-other-regime", "IN", client="DE", tenant=scc("uk_gdpr", "IN"), why=(GDPR,)),
]
UK_CASES = [allow(f"uk-adequate-{c}", c, client="GB") for c in UK_ADEQUATE] + [
    allow("uk-JP-with-appi", "JP", "appi_private_sector", client="GB"),
    allow("uk-CA-with-pipeda", "CA", "pipeda", client="GB"),
    allow("uk-KR-with-pipa", "KR", "pipa", client="GB"),
    allow("uk-US-with-uk_extension_dpf", "US", "uk_extension_dpf", client="GB"),
    refuse("uk-US-eu_us_dpf-alone", "US", "eu_us_dpf", client="GB", why=(UK, "uk_extension_dpf")),
    refuse("uk-US-without-dpf", "US", client="GB", why=(UK, "uk_extension_dpf")),
    refuse("uk-JP-without-appi", "JP", client="GB", why=(UK, "appi_private_sector")),
    refuse("uk-CA-without-pipeda", "CA", client="GB", why=(UK, "pipeda")),
    refuse("uk-KR-without-pipa", "KR", client="GB", why=(UK, "pipa")),
    *[refuse(f"uk-third-{c}", c, client="GB", why=(UK,)) for c in ("IN", "CN", "SG", "RU")],
    allow("uk-idta-opt-in-IN", "IN", client="GB", tenant=scc("uk_gdpr", "IN")),
]
SWISS_CASES = [allow(f"ch-adequate-{c}", c, client="CH") for c in SWISS_ADEQUATE] + [
    allow("ch-US-with-swiss_us_dpf", "US", "swiss_us_dpf", client="CH"),
    refuse(
        "ch-US-eu_us_dpf-alone",
        "US",
        "eu_us_dpf",
        "uk_extension_dpf",
        client="CH",
        why=(CH, "swiss_us_dpf"),
    ),
    refuse("ch-US-without-dpf", "US", client="CH", why=(CH, "swiss_us_dpf")),
    refuse("ch-third-IN", "IN", client="CH", why=(CH,)),
    refuse("ch-third-CN", "CN", client="CH", why=(CH,)),
    allow("ch-scc-opt-in-US", "US", client="CH", tenant=scc("ch_fadp", "US")),
]
SDF = tenant("sdf", flags=["significant_data_fiduciary"])
INDIA_CASES = [
    *[allow(f"dpdp-personal-anywhere-{c}", c, subject="IN") for c in ("IN", "US", "CN", "SG")],
    allow("dpdp-client-IN-special-to-US", "US", client="IN", data_class="special"),
    allow("dpdp-notified-list-spares-US", "US", subject="IN", regimes=DPDP_NOTIFIED_CN),
    refuse(
        "dpdp-notified-country-blocked",
        "CN",
        subject="IN",
        regimes=DPDP_NOTIFIED_CN,
        why=("in_dpdp.s16", "notified"),
    ),
    allow("rbi-payment-in-IN", "IN", subject="IN", data_class="payment"),
    refuse(
        "rbi-payment-to-US",
        "US",
        subject="IN",
        data_class="payment",
        why=("in_rbi.payment_storage",),
    ),
    refuse(
        "rbi-payment-to-SG",
        "SG",
        client="IN",
        data_class="payment",
        why=("in_rbi.payment_storage",),
    ),
    allow(
        "rbi-opt-in-purge-to-US",
        "US",
        subject="IN",
        data_class="payment",
        tenant=tenant("rbi", opt_ins=["rbi_offshore_processing_with_purge"]),
    ),
    allow("sebi-securities-in-IN", "IN", subject="IN", data_class="financial_securities"),
    refuse(
        "sebi-securities-to-SG",
        "SG",
        subject="IN",
        data_class="financial_securities",
        why=("in_sebi.securities_data",),
    ),
    allow(
        "sebi-regulated-personal-in-IN",
        "IN",
        subject="IN",
        tenant=tenant("sebi", flags=["sebi_regulated"]),
    ),
    refuse(
        "sebi-regulated-personal-to-SG",
        "SG",
        subject="IN",
        tenant=tenant("sebi", flags=["sebi_regulated"]),
        why=("in_sebi.regulated_entity",),
    ),
    allow("sebi-unregulated-personal-to-SG", "SG", subject="IN", tenant=tenant("plain")),
    allow("irdai-insurance-in-IN", "IN", subject="IN", data_class="insurance"),
    refuse(
        "irdai-insurance-to-US",
        "US",
        subject="IN",
        data_class="insurance",
        why=("in_irdai.insurance_records",),
    ),
    allow(
        "irdai-regulated-personal-in-IN",
        "IN",
        subject="IN",
        tenant=tenant("irdai", flags=["irdai_regulated"]),
    ),
    refuse(
        "irdai-regulated-personal-to-US",
        "US",
        subject="IN",
        tenant=tenant("irdai", flags=["irdai_regulated"]),
        why=("in_irdai.regulated_insurer",),
    ),
    allow("sdf-before-2027-05-13-abroad", "US", subject="IN", tenant=SDF, at=SDF_EVE),
    refuse(
        "sdf-from-2027-05-13-abroad",
        "US",
        subject="IN",
        tenant=SDF,
        at=SDF_FROM,
        why=("in_dpdp.rule13_4_sdf",),
    ),
    allow("sdf-from-2027-05-13-in-IN", "IN", subject="IN", tenant=SDF, at=SDF_FROM),
    allow("sdf-rule-needs-the-flag", "US", subject="IN", tenant=tenant("plain"), at=SDF_FROM),
    # a regulator's flag binds the tenant wherever its clients are
    refuse(
        "sebi-regulated-binds-for-US-client",
        "US",
        client="US",
        tenant=tenant("sebi", flags=["sebi_regulated"]),
        why=("in_sebi.regulated_entity",),
    ),
    allow(
        "sebi-regulated-US-client-in-IN",
        "IN",
        client="US",
        tenant=tenant("sebi", flags=["sebi_regulated"]),
    ),
    refuse(
        "irdai-regulated-binds-for-SG-client",
        "SG",
        client="SG",
        tenant=tenant("irdai", flags=["irdai_regulated"]),
        why=("in_irdai.regulated_insurer",),
    ),
    allow("sdf-SG-client-before-2027-05-13", "SG", client="SG", tenant=SDF, at=SDF_EVE),
    refuse(
        "sdf-SG-client-from-2027-05-13",
        "SG",
        client="SG",
        tenant=SDF,
        at=SDF_FROM,
        why=("in_dpdp.rule13_4_sdf",),
    ),
    allow(
        "sebi-regulated-public-data-free",
        "SG",
        client="SG",
        data_class="public",
        tenant=tenant("sebi", flags=["sebi_regulated"]),
    ),
]
OTHER_REGIME_CASES = [
    allow("pipl-CN-in-CN", "CN", client="CN"),
    refuse("pipl-CN-to-SG", "SG", client="CN", why=("cn_pipl.localisation",)),
    allow(
        "pipl-cac-opt-in-to-SG",
        "SG",
        client="CN",
        tenant=tenant("cac", opt_ins=["pipl_cac_mechanism"]),
    ),
    refuse(
        "pipl-scc-is-no-basis",
        "SG",
        client="CN",
        tenant=scc("cn_pipl", "SG"),
        why=("cn_pipl.localisation",),
    ),
    allow("152fz-RU-in-RU", "RU", subject="RU"),
    refuse("152fz-RU-to-DE", "DE", subject="RU", why=("ru_152fz.art18_5",)),
    refuse(
        "152fz-scc-is-no-basis",
        "DE",
        subject="RU",
        tenant=scc("ru_152fz", "DE"),
        why=("ru_152fz.art18_5",),
    ),
    allow("au-personal-anywhere-US", "US", client="AU"),
    allow("au-personal-anywhere-IN", "IN", client="AU"),
    allow("au-health-in-AU", "AU", client="AU", data_class="health"),
    refuse("au-health-to-US", "US", client="AU", data_class="health", why=("au_mhr.s77",)),
    allow("lgpd-BR-in-BR", "BR", client="BR"),
    allow("lgpd-BR-to-DE", "DE", client="BR"),
    allow("lgpd-BR-to-IE", "IE", client="BR"),
    refuse("lgpd-BR-to-US", "US", "eu_us_dpf", client="BR", why=("br_lgpd.art33",)),
    refuse("lgpd-BR-to-IN", "IN", client="BR", why=("br_lgpd.art33",)),
    allow("lgpd-scc-opt-in-US", "US", client="BR", tenant=scc("br_lgpd", "US")),
]
CONFIGURABLE_CASES = []
for rid, home in [("sa_pdpl", "SA"), ("id_pdp", "ID"), ("vn_pdpd", "VN")]:
    CONFIGURABLE_CASES += [
        allow(f"{rid}-off-by-default-to-US", "US", client=home),
        allow(f"{rid}-enabled-in-{home}", home, client=home, regimes=ENABLED[rid]),
        refuse(
            f"{rid}-enabled-to-US",
            "US",
            client=home,
            regimes=ENABLED[rid],
            why=(f"{rid}.transfer",),
        ),
        allow(
            f"{rid}-enabled-scc-to-US",
            "US",
            client=home,
            regimes=ENABLED[rid],
            tenant=scc(rid, "US"),
        ),
    ]
PUBLIC_CASES = [
    *[
        allow(f"public-{src}-to-{dst}", dst, client=src, data_class="public")
        for src, dst in [("DE", "IN"), ("GB", "CN"), ("CN", "US"), ("RU", "US"), ("IN", "SG")]
    ],
    allow("public-payment-IN-subject-to-US", "US", subject="IN", data_class="public"),
    refuse(
        "public-still-narrowed-by-tenant",
        "IN",
        client="DE",
        data_class="public",
        tenant=tenant("narrow", allowed_countries=["DE"]),
        why=("tenant narrow",),
    ),
]


def _run(case: Case) -> tuple[Decision, str]:
    dest = region("dest", case.dest, attestations=case.attestations)
    tenants = [case.tenant] if case.tenant else []
    snap = routing_snapshot([dest], tenants=tenants, regimes=case.regimes)
    f = facts(
        client=case.client,
        subject=case.subject,
        tenant_id=case.tenant.id if case.tenant else None,
        data_class=case.data_class,
        at=case.at,
    )
    return decide(f, snap), dest.id


@pytest.mark.parametrize(
    "case",
    EEA_CASES
    + FULL_ADEQUACY_CASES
    + PARTIAL_CASES
    + THIRD_COUNTRY_CASES
    + UK_CASES
    + SWISS_CASES
    + INDIA_CASES
    + OTHER_REGIME_CASES
    + CONFIGURABLE_CASES
    + PUBLIC_CASES,
)
def test_rule(case: Case) -> None:
    decision, dest = _run(case)
    if case.allowed:
        assert decision.allowed_regions == (dest,), decision.verdicts
        assert decision.outcome is Outcome.ROUTED
        assert decision.chosen == dest
    else:
        assert decision.allowed_regions == ()
        assert decision.outcome is Outcome.REFUSED
        assert decision.http_status == 451
        (verdict,) = decision.verdicts
        text = " | ".join(verdict.reasons)
        for needle in case.reasons:
            assert needle in text, text


# -- several regimes at once, over the 20-region catalog ---------------------------------

EEA_REGIONS = {"eu-frankfurt", "eu-paris", "eu-dublin", "eea-oslo"}
GDPR_SET = EEA_REGIONS | {
    "uk-london",
    "ch-zurich",
    "us-oregon",
    "us-ohio",
    "ca-montreal",
    "jp-tokyo",
    "kr-seoul",
    "br-saopaulo",
    "il-telaviv",
    "ar-buenosaires",
}


@pytest.mark.parametrize(
    ("client", "subject", "data_class", "expected"),
    [
        pytest.param("DE", "IN", "payment", set(), id="DE-client+IN-payment-refused"),
        pytest.param("DE", "IN", "personal", GDPR_SET, id="DE-client+IN-personal=gdpr"),
        pytest.param("IN", "DE", "personal", GDPR_SET, id="IN-client+DE-personal=gdpr"),
        pytest.param(
            "GB",
            "DE",
            "personal",
            GDPR_SET - {"us-ohio", "br-saopaulo"},
            id="GB-client+DE-subject=uk-and-gdpr",
        ),
        pytest.param(
            "BR",
            "DE",
            "personal",
            {"eu-frankfurt", "eu-paris", "eu-dublin", "br-saopaulo"},
            id="BR-client+DE-subject=lgpd-and-gdpr",
        ),
        pytest.param("AU", "CN", "health", set(), id="AU-health+CN-refused"),
        pytest.param("RU", "CN", "personal", set(), id="RU+CN-refused"),
        pytest.param("CN", "RU", "public", {r.id for r in twenty_regions()}, id="public-free"),
    ],
)
def test_regimes_intersect(client: str, subject: str, data_class: str, expected: set[str]) -> None:
    snap = routing_snapshot(twenty_regions())
    decision = decide(facts(client=client, subject=subject, data_class=data_class), snap)
    assert set(decision.allowed_regions) == expected
    assert decision.outcome is (Outcome.ROUTED if expected else Outcome.REFUSED)
    if not expected:
        assert decision.http_status == 451


def test_home_jurisdiction_adds_its_regime() -> None:
    acme = tenant("acme", home="DE")
    snap = routing_snapshot(twenty_regions(), tenants=[acme])
    decision = decide(facts(client="US", tenant_id="acme"), snap)
    assert set(decision.allowed_regions) == GDPR_SET


# -- tenant narrowing ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("narrowing", "client", "data_class", "expected"),
    [
        pytest.param(
            {"allowed_regions": ["eu-frankfurt", "in-mumbai"]},
            "DE",
            "personal",
            {"eu-frankfurt"},
            id="allowed-regions-cannot-add-in-mumbai",
        ),
        pytest.param(
            {"allowed_countries": ["US"]},
            "DE",
            "personal",
            {"us-oregon", "us-ohio"},
            id="allowed-countries-US-keeps-dpf-only",
        ),
        pytest.param(
            {"allowed_countries": ["US", "CN"]},
            "GB",
            "personal",
            {"us-oregon"},
            id="allowed-countries-under-uk",
        ),
        pytest.param(
            {"denied_regions": ["eu-frankfurt", "us-ohio"]},
            "DE",
            "personal",
            GDPR_SET - {"eu-frankfurt", "us-ohio"},
            id="denied-regions",
        ),
        pytest.param(
            {"allowed_countries": ["IN", "CN"]},
            "DE",
            "public",
            {"in-mumbai", "cn-beijing"},
            id="public-narrowed-by-tenant",
        ),
        pytest.param(
            {"allowed_regions": ["ru-moscow"]},
            "DE",
            "personal",
            set(),
            id="allowed-region-outside-law-refused",
        ),
    ],
)
def test_tenant_narrowing_never_widens(
    narrowing: dict[str, Any], client: str, data_class: str, expected: set[str]
) -> None:
    narrow = tenant("narrow", **narrowing)
    snap = routing_snapshot(twenty_regions(), tenants=[narrow])
    base = decide(facts(client=client, data_class=data_class), snap)
    narrowed = decide(facts(client=client, data_class=data_class, tenant_id="narrow"), snap)
    assert set(narrowed.allowed_regions) == expected
    assert set(narrowed.allowed_regions) <= set(base.allowed_regions)
    for verdict in narrowed.verdicts:
        if verdict.region_id in set(base.allowed_regions) - expected:
            assert any(r.startswith("tenant narrow") for r in verdict.reasons)


# -- a declared subject country can only narrow --------------------------------------------

GRID_COUNTRIES = ("DE", "NO", "GB", "CH", "US", "IN", "CN", "RU", "AU", "BR", "SG", "JP", "SA")
GRID_CLASSES = ("public", "personal", "health", "payment", "financial_securities", "insurance")


@pytest.mark.parametrize("data_class", GRID_CLASSES)
def test_declared_subject_only_narrows(data_class: str) -> None:
    tenants = [
        tenant("plain"),
        tenant("scc", transfers=[("gdpr", "IN"), ("uk_gdpr", "US"), ("br_lgpd", "US")]),
        tenant("sdf", flags=["significant_data_fiduciary", "sebi_regulated"]),
    ]
    snap = routing_snapshot(twenty_regions(), tenants=tenants)
    for client, subject, t in itertools.product(GRID_COUNTRIES, GRID_COUNTRIES, tenants):
        for at in (AT, SDF_FROM):
            kw: dict[str, Any] = {"client": client, "data_class": data_class, "at": at}
            without = decide(facts(tenant_id=t.id, **kw), snap)
            with_header = decide(facts(tenant_id=t.id, subject=subject, **kw), snap)
            assert set(with_header.allowed_regions) <= set(without.allowed_regions), (
                client,
                subject,
                t.id,
                at,
            )
