"""Configuration changes (policy, region, tenant) as entries of the audit chain.

The admin API calls `record_change` inside the same transaction as the change itself, so a
change and its audit entry commit (or roll back) together.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection

from compliance.audit.canonical import Kind
from compliance.audit.ledger import append_entries

_LIMITS = {"actor": 128, "role": 16, "object_type": 16, "object_id": 128, "action": 16}


def _check(name: str, value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"config change {name}: must be a non-empty string")
    if len(value) > _LIMITS[name]:
        raise ValueError(f"config change {name}: longer than {_LIMITS[name]} characters")
    return value


def record_change(
    conn: Connection,
    *,
    actor: str,
    role: str,
    object_type: str,
    object_id: str,
    action: str,
    before: Any,
    after: Any,
    policy_version: int,
    changed_at: datetime | None = None,
) -> int:
    """Append one configuration change to `config_changes` and the audit chain.

    Call it inside the write transaction that makes the change (PolicyStore.transaction(
    write=True): BEGIN IMMEDIATE on SQLite; on PostgreSQL it locks the chain head until commit).
    `before`/`after` are JSON-ready values (dicts, lists; sets become sorted lists, dates ISO
    strings) or None for a create/delete. Returns the entry's chain sequence number.
    Raises ValueError naming the field for bad input.
    """
    row = {
        name: _check(name, value)
        for name, value in (
            ("actor", actor),
            ("role", role),
            ("object_type", object_type),
            ("object_id", object_id),
            ("action", action),
        )
    }
    if isinstance(policy_version, bool) or not isinstance(policy_version, int):
        raise ValueError("config change policy_version: must be an integer")
    stamp = changed_at or datetime.now(UTC)
    if stamp.tzinfo is None:
        raise ValueError("config change changed_at: must be timezone-aware")
    written = append_entries(
        conn,
        Kind.CONFIG_CHANGE,
        [
            {
                **row,
                "changed_at": stamp,
                "before": before,
                "after": after,
                "policy_version": policy_version,
            }
        ],
    )
    return int(written[0]["chain_seq"])
