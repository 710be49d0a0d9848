"""The locate stage: which jurisdictions govern a request and where it comes from. Pure."""

from __future__ import annotations

from dataclasses import dataclass

from compliance.model import Tenant
from gateway.routing.decision import Jurisdiction, JurisdictionSource
from gateway.routing.facts import RequestFacts
from regions.geo import country_centroid

UNKNOWN_ORIGIN = (
    "the client's country is unknown (private, loopback or unlisted address) and no "
    "jurisdiction was declared: send the header 'X-Data-Subject-Country: <ISO 3166-1 alpha-2 "
    "code>' or set a home jurisdiction on the tenant"
)


@dataclass(frozen=True, slots=True)
class Location:
    """The located request: its jurisdictions and the point distances are measured from."""

    jurisdictions: tuple[Jurisdiction, ...]
    origin: tuple[float, float] | None
    countries: frozenset[str]


def locate(facts: RequestFacts, tenant: Tenant | None) -> Location:
    """Collect client country, declared subject country and tenant home, in that order.

    Every one of them adds law that may apply (headers can only narrow the allowed set).
    The origin is the client's coordinates, else the first known country's centroid.
    """
    found: list[Jurisdiction] = []
    if facts.client_country:
        found.append(Jurisdiction(facts.client_country, JurisdictionSource.CLIENT_IP))
    if facts.subject_country:
        found.append(Jurisdiction(facts.subject_country, JurisdictionSource.DECLARED_SUBJECT))
    if tenant is not None and tenant.home_jurisdiction:
        found.append(Jurisdiction(tenant.home_jurisdiction, JurisdictionSource.TENANT_HOME))
    origin = facts.client_coordinates
    for jurisdiction in found:
        if origin is not None:
            break
        origin = country_centroid(jurisdiction.country)
    return Location(tuple(found), origin, frozenset(j.country for j in found))
