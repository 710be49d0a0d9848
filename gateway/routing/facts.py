"""Request facts: everything the routing core needs to know about one request."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from compliance.jurisdictions import DataClass


@dataclass(frozen=True, slots=True)
class RequestFacts:
    """What the edge learned about a request before routing it.

    `client_country` and `client_coordinates` come from the GeoIP adapter; `subject_country`
    and `data_class` from the caller's headers; `tenant_id` from the API key.
    """

    request_id: str
    at: datetime
    tenant_id: str | None = None
    client_ip: str | None = None
    client_country: str | None = None
    client_coordinates: tuple[float, float] | None = None
    subject_country: str | None = None
    data_class: DataClass = DataClass.PERSONAL
    model: str | None = None
