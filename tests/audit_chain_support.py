"""Builders for audit-chain tests and benchmarks: real databases, real records, real keys."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import Engine

from compliance.audit.canonical import Kind
from compliance.audit.checkpoints import DEFAULT_CADENCE, Cadence, checkpoint_head
from compliance.audit.config_log import record_change
from compliance.audit.keys import key_id
from compliance.audit.record_codec import Encoded, encode_record
from compliance.store.base import transaction
from compliance.store.routing_log_store import RoutingLogStore

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def decision(n: int, at: datetime | None = None, **overrides: Any) -> dict[str, Any]:
    """A routing record as the gateway writes it (no prompt or completion content)."""
    record: dict[str, Any] = {
        "decision_id": f"dec-{n:06d}",
        "decided_at": at or T0 + timedelta(seconds=n),
        "tenant_id": "demo",
        "client_ip_hmac": "ab" * 32,
        "client_country": "DE",
        "subject_country": None,
        "data_class": "personal",
        "model": "gpt-4o-mini",
        "outcome": "routed",
        "status_code": 200,
        "chosen_region": "eu-frankfurt",
        "served_region": "eu-frankfurt",
        "policy_version": 1,
        "trace_id": f"{n:032x}",
        "latency_ms": 12.5 + n / 1000,
        "attempts": [{"region": "eu-frankfurt", "result": "ok", "status": 200, "ms": 3.25}],
        "jurisdictions": [{"country": "DE", "source": "client_ip"}],
        "regimes": [{"id": "gdpr", "name": "GDPR", "rules": ["gdpr-eea"], "waived_rules": []}],
        "reasons": ["EU data subject under GDPR"],
        "explanation": {
            "decision_id": f"dec-{n:06d}",
            "candidates": [
                {"region": "eu-frankfurt", "allowed": True, "policy": [], "skipped": None},
                {"region": "us-virginia", "allowed": False, "policy": ["no DPF"], "skipped": None},
            ],
            "facts": {"tenant": "demo", "client_country": "DE", "data_class": "personal"},
        },
    }
    record.update(overrides)
    return record


def change(conn: Any, n: int, at: datetime | None = None) -> int:
    """Record one configuration change inside `conn`'s transaction."""
    return record_change(
        conn,
        actor="alice",
        role="admin",
        object_type="region",
        object_id=f"region-{n}",
        action="update",
        before={"weight": n, "models": {"m1", "m2"}},
        after={"weight": n + 1, "models": ["m1"]},
        policy_version=n + 1,
        changed_at=at or T0 + timedelta(seconds=n, microseconds=500),
    )


def build_chain(
    engine: Engine,
    key: Ed25519PrivateKey | None,
    decisions: int,
    *,
    change_every: int = 10,
    checkpoint_every: int = 0,
    batch: int = 500,
    start: datetime = T0,
    cadence: Cadence = DEFAULT_CADENCE,
) -> None:
    """`decisions` routing records (one a second from `start`), a config change after every
    `change_every`-th one, a signed checkpoint after every `checkpoint_every`-th (0: none)."""
    log = RoutingLogStore(engine)
    pending: list[dict[str, Any]] = []
    for n in range(1, decisions + 1):
        pending.append(decision(n, start + timedelta(seconds=n)))
        boundary = change_every and n % change_every == 0
        checkpoint = key is not None and checkpoint_every and n % checkpoint_every == 0
        if boundary or checkpoint or len(pending) >= batch or n == decisions:
            log.append_batch(pending)
            pending = []
            with transaction(engine, write=True) as conn:
                if boundary:
                    change(conn, n, start + timedelta(seconds=n, microseconds=500))
                if checkpoint and key is not None:
                    checkpoint_head(conn, key, cadence=cadence)


def keys_of(*keys: Ed25519PrivateKey) -> dict[str, Any]:
    """A verify key map for these signing keys."""
    return {key_id(k.public_key()): k.public_key() for k in keys}


def intent_entry(n: int) -> Encoded:
    """Decision n written ahead (as gateway.http.records.intent_record makes it), encoded."""
    record = decision(n, status_code=0, served_region=None, attempts=[])
    return Encoded(encode_record(record, Kind.INTENT))


def outcome_entry(n: int, **overrides: Any) -> Encoded:
    """Decision n's routing record (its outcome), encoded."""
    return Encoded(encode_record(decision(n, **overrides)))
