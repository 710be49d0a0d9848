"""A region's legal facts (country, attestations) and who may change them.

Where personal data may go is decided from a region's `country` and `attestations` (an
`eu_us_dpf` attestation makes a US region lawful for EU data). Those are legal statements, so
only the `admin` role may make them: creating a region, changing its country or its
attestations. The `operator` role keeps the operational fields (status, weight, base URL,
models, name, coordinates) and may delete a region (that only narrows where data goes).
"""

from __future__ import annotations

from compliance.store.access_store import Principal, Role
from compliance.store.errors import StoreError
from regions.catalog import Region

LEGAL_FACTS_KEY = "legal_facts_changed"
"""Key added to a region change's `after` document in the configuration log."""


class LegalFactsForbidden(StoreError):
    """The caller's role may not change a region's legal facts; nothing was written."""


def legal_fact_changes(before: Region | None, after: Region | None) -> tuple[str, ...]:
    """What a change does to the legal facts, e.g. ("country DE→US", "attestations +eu_us_dpf")."""
    if after is None:
        return ()
    if before is None:
        attestations = ", ".join(sorted(after.attestations)) or "none"
        return (f"country {after.country} (new region)", f"attestations {attestations}")
    changes = []
    if before.country != after.country:
        changes.append(f"country {before.country}→{after.country}")
    added = [f"+{a}" for a in sorted(after.attestations - before.attestations)]
    removed = [f"-{a}" for a in sorted(before.attestations - after.attestations)]
    if added or removed:
        changes.append("attestations " + " ".join(added + removed))
    return tuple(changes)


def authorise_region_change(actor: Principal, before: Region | None, after: Region) -> None:
    """Raise LegalFactsForbidden unless `actor` may make this change."""
    if actor.role is Role.ADMIN:
        return
    if before is None:
        raise LegalFactsForbidden(
            f"role {actor.role.value} may not create a region: its country and attestations "
            "decide where data may go, so creating one needs the admin role"
        )
    changes = legal_fact_changes(before, after)
    if changes:
        raise LegalFactsForbidden(
            f"role {actor.role.value} may not change a region's legal facts "
            f"({'; '.join(changes)}): country and attestations decide where data may go, "
            "so changing them needs the admin role"
        )
