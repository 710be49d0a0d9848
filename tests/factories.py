"""Small builders for routing-core tests and the benchmark: in-memory values only."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from functools import cache

from compliance.jurisdictions import DataClass
from compliance.model import Regime, Tenant, TransferOptIn
from compliance.pack import load_pack
from compliance.snapshot import PolicySnapshot
from gateway.routing.facts import RequestFacts
from gateway.routing.snapshot import RoutingSnapshot
from regions.catalog import Region, RegionStatus
from regions.geo import country_centroid
from regions.health import RegionHealth

DEFAULT_MODELS: tuple[str, ...] = ("gpt-4o-mini", "gpt-4o")
AT = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
"""Default request time: late 2026, after every rule of the default pack but the SDF one."""


def region(
    id: str,
    country: str,
    *,
    lat: float | None = None,
    lon: float | None = None,
    attestations: Iterable[str] = (),
    models: Iterable[str] = DEFAULT_MODELS,
    status: RegionStatus | str = RegionStatus.ACTIVE,
    weight: int = 100,
) -> Region:
    """A region; coordinates default to the country's centroid."""
    centroid = country_centroid(country) or (0.0, 0.0)
    return Region(
        id=id,
        name=id,
        country=country,
        latitude=centroid[0] if lat is None else lat,
        longitude=centroid[1] if lon is None else lon,
        base_url=f"http://{id}.invalid",
        models=frozenset(models),
        attestations=frozenset(attestations),
        status=RegionStatus(status),
        weight=weight,
    )


def tenant(
    id: str = "t1",
    *,
    home: str | None = None,
    flags: Iterable[str] = (),
    opt_ins: Iterable[str] = (),
    transfers: Iterable[tuple[str, str]] = (),
    allowed_regions: Iterable[str] | None = None,
    allowed_countries: Iterable[str] | None = None,
    denied_regions: Iterable[str] = (),
) -> Tenant:
    """A tenant; `transfers` are (regime id, country) SCC opt-ins."""
    return Tenant(
        id=id,
        name=id,
        home_jurisdiction=home,
        flags=frozenset(flags),
        opt_ins=frozenset(opt_ins),
        transfer_opt_ins=tuple(TransferOptIn(r, c, "scc") for r, c in transfers),
        allowed_regions=None if allowed_regions is None else frozenset(allowed_regions),
        allowed_countries=None if allowed_countries is None else frozenset(allowed_countries),
        denied_regions=frozenset(denied_regions),
    )


@cache
def default_regimes() -> tuple[Regime, ...]:
    """The regimes of the default policy pack (parsed once)."""
    return load_pack()[1]


def enable_regimes(regimes: Iterable[Regime], *ids: str) -> tuple[Regime, ...]:
    """Copies of `regimes` with the named ones switched on."""
    return tuple(dataclasses.replace(r, enabled=True) if r.id in ids else r for r in regimes)


def replace_rule(regimes: Iterable[Regime], rule_id: str, **changes: object) -> tuple[Regime, ...]:
    """Copies of `regimes` with one rule's fields replaced (e.g. notified countries)."""
    out = []
    for r in regimes:
        rules = tuple(
            dataclasses.replace(rule, **changes) if rule.id == rule_id else rule  # type: ignore[arg-type]
            for rule in r.rules
        )
        out.append(dataclasses.replace(r, rules=rules))
    return tuple(out)


def routing_snapshot(
    regions: Iterable[Region],
    tenants: Iterable[Tenant] = (),
    regimes: Iterable[Regime] | None = None,
    health: Mapping[str, bool | RegionHealth] | None = None,
    version: int = 1,
) -> RoutingSnapshot:
    """A routing snapshot; `health` maps region id to a RegionHealth or a plain bool."""
    policy = PolicySnapshot(
        version=version,
        regimes=default_regimes() if regimes is None else regimes,
        regions=regions,
        tenants=tenants,
        label="test",
    )
    view = {
        rid: h if isinstance(h, RegionHealth) else RegionHealth(h, "" if h else "probe failed")
        for rid, h in (health or {}).items()
    }
    return RoutingSnapshot(policy).with_health(view)


def facts(
    *,
    client: str | None = None,
    subject: str | None = None,
    tenant_id: str | None = None,
    data_class: DataClass | str = DataClass.PERSONAL,
    model: str | None = None,
    at: datetime = AT,
    coords: tuple[float, float] | None = None,
    request_id: str = "req-1",
) -> RequestFacts:
    """Request facts; the client IP is left out (the core never reads it)."""
    return RequestFacts(
        request_id=request_id,
        at=at,
        tenant_id=tenant_id,
        client_country=client,
        client_coordinates=coords,
        subject_country=subject,
        data_class=DataClass(data_class),
        model=model,
    )


_ALL_DPF = ("eu_us_dpf", "uk_extension_dpf", "swiss_us_dpf")
_CHAT = ("gpt-4o-mini", "gpt-4o")
_FULL = (*_CHAT, "llama-3.1-70b", "text-embedding-3-small")


def twenty_regions() -> tuple[Region, ...]:
    """A realistic 20-region catalog spanning the regimes of the default pack."""
    return (
        region("eu-frankfurt", "DE", lat=50.11, lon=8.68, models=_FULL),
        region("eu-paris", "FR", lat=48.86, lon=2.35, models=_FULL),
        region("eu-dublin", "IE", lat=53.35, lon=-6.26, models=_CHAT),
        region("eea-oslo", "NO", lat=59.91, lon=10.75, models=_CHAT),
        region("uk-london", "GB", lat=51.51, lon=-0.13, models=_FULL),
        region("ch-zurich", "CH", lat=47.37, lon=8.54, models=_CHAT),
        region("us-virginia", "US", lat=38.95, lon=-77.45, models=_FULL),
        region("us-oregon", "US", lat=45.60, lon=-121.18, attestations=_ALL_DPF, models=_FULL),
        region("us-ohio", "US", lat=39.96, lon=-83.00, attestations=("eu_us_dpf",), models=_CHAT),
        region("ca-montreal", "CA", lat=45.50, lon=-73.57, attestations=("pipeda",), models=_CHAT),
        region("jp-tokyo", "JP", lat=35.68, lon=139.69, attestations=("appi_private_sector",)),
        region("kr-seoul", "KR", lat=37.57, lon=126.98, attestations=("pipa",)),
        region("in-mumbai", "IN", lat=19.08, lon=72.88, models=_FULL),
        region("cn-beijing", "CN", lat=39.90, lon=116.40, models=("qwen-2.5-72b", "gpt-4o-mini")),
        region("ru-moscow", "RU", lat=55.76, lon=37.62, models=("gpt-4o-mini",)),
        region("au-sydney", "AU", lat=-33.87, lon=151.21, models=_CHAT),
        region("br-saopaulo", "BR", lat=-23.55, lon=-46.63, models=_CHAT),
        region("sg-singapore", "SG", lat=1.29, lon=103.85, models=_FULL),
        region("il-telaviv", "IL", lat=32.08, lon=34.78, models=("gpt-4o-mini",)),
        region("ar-buenosaires", "AR", lat=-34.60, lon=-58.38, models=("gpt-4o-mini",)),
    )
