"""What the in-Envoy decision needs to explain itself as `decide()` does: the applied regimes.

A refusal's message names the regimes that brought rules ("governed by EU GDPR, ..."), and its
`residency.regimes` lists every applied regime with what triggered it. Both decompose over the
jurisdictions like the allowed set does (`gateway.envoy.tables`): a regime applies when it
governs one of them or a tenant flag brings it in, and the rules it brings depend only on the
data class, the date and the tenant's policy class. So the control plane pushes, per regime,
the countries it governs and, per policy class and data class, the rules, waived rules and flag
triggers `compliance.evaluate()` found; the filter only picks and joins.

Per-region verdicts (`residency.candidates`) are not pushed: they would multiply the tables by
the regions and rules, and are left to `gateway explain`.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from compliance.jurisdictions import DataClass
from compliance.model import Tenant
from compliance.snapshot import PolicySnapshot
from gateway.envoy.tables import DecisionTables

Entries = dict[str, dict[str, list[str]]]
"""Regime position (1-based, as text: a Lua table key) -> rules, waived rules, flag triggers."""


def _class_tenants(policy: PolicySnapshot, tables: DecisionTables) -> list[Tenant | None]:
    """One tenant per policy class (any member: they share everything the policy reads)."""
    found: list[Tenant | None] = [None] * len(tables.allow)
    for entry in tables.keys.values():
        if found[entry.policy_class] is None:
            found[entry.policy_class] = policy.tenants.get(entry.tenant_id)
    return found


def _countries_to_probe(policy: PolicySnapshot) -> list[frozenset[str]]:
    """One country per enabled regime (every regime it governs applies to it), and none."""
    probes = [frozenset({""})]
    for regime in policy.regimes:
        if regime.enabled and regime.countries:
            probes.append(frozenset({min(regime.countries)}))
    return probes


def explanation_tables(policy: PolicySnapshot, tables: DecisionTables, on: date) -> dict[str, Any]:
    """JSON-ready regime facts for the filter's explanations (see the module docstring). Pure.

    `regimes[i]`: id, name, governed countries (enabled regimes, in the policy's order, which is
    the order `evaluate()` reports them in). `applied[k][data_class][i]`: rules, waived rules and
    tenant-flag triggers of regime i for policy class k, absent when all three are empty.
    """
    regimes = [r for r in policy.regimes if r.enabled]
    position = {r.id: i for i, r in enumerate(regimes)}
    applied: list[dict[str, Entries]] = []
    for tenant in _class_tenants(policy, tables):
        by_data_class: dict[str, Entries] = {}
        for data_class in DataClass:
            entries: Entries = {}
            for countries in _countries_to_probe(policy):
                evaluation = policy.evaluate(countries, data_class.value, tenant, on)
                for application in evaluation.regimes:
                    governed = regimes[position[application.regime_id]].countries
                    entry = {
                        "rules": list(application.rules),
                        "waived": list(application.waived),
                        "flags": [t for t in application.triggered_by if t not in governed],
                    }
                    if any(entry.values()):
                        entries[str(position[application.regime_id] + 1)] = entry
            by_data_class[data_class.value] = dict(sorted(entries.items()))
        applied.append(by_data_class)
    return {
        "regimes": [
            {"id": r.id, "name": r.name, "countries": dict.fromkeys(sorted(r.countries), True)}
            for r in regimes
        ],
        "applied": applied,
        "statuses": [r.status.value for r in policy.regions],
    }
