"""Signed checkpoints: Ed25519 statements "chain entry `seq` has hash `record_hash`".

A periodic checkpoint lets `verify` detect a rewritten or truncated chain (the hashes alone
cannot: anyone may recompute them); a prune checkpoint bridges records removed by retention.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy import Connection, Engine, insert, select

from compliance.audit.canonical import canonical_timestamp
from compliance.audit.keys import key_id, signature_ok
from compliance.audit.ledger import lock_head
from compliance.store.base import transaction
from compliance.store.schema import audit_checkpoints

PERIODIC = "periodic"
PRUNE = "prune"
CHAIN_NAME = "residency-gateway/audit-chain/v1"


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """One signed checkpoint (`id` is None until stored)."""

    seq: int
    record_hash: str
    kind: str
    created_at: datetime
    key_id: str
    signature: str
    id: int | None = None

    def payload(self) -> bytes:
        """The signed bytes: sorted-key JSON of everything but the signature and row id."""
        return checkpoint_payload(
            self.seq, self.record_hash, self.kind, self.created_at, self.key_id
        )

    def check(self, keys: Mapping[str, Ed25519PublicKey]) -> str | None:
        """None if the signature is valid under a known key, else what is wrong."""
        public = keys.get(self.key_id)
        if public is None:
            return f"signed by unknown key {self.key_id}"
        if not signature_ok(public, self.signature, self.payload()):
            return "signature invalid (forged or altered)"
        return None

    def describe(self) -> str:
        """`checkpoint 7 (periodic, #1000)`."""
        return f"checkpoint {self.id} ({self.kind}, #{self.seq})"


def checkpoint_payload(
    seq: int, record_hash: str, kind: str, created_at: datetime, signer: str
) -> bytes:
    """Canonical bytes of a checkpoint statement."""
    document = {
        "chain": CHAIN_NAME,
        "seq": seq,
        "hash": record_hash,
        "kind": kind,
        "created_at": canonical_timestamp(created_at),
        "key_id": signer,
    }
    return orjson.dumps(document, option=orjson.OPT_SORT_KEYS)


def sign(key: Ed25519PrivateKey, seq: int, record_hash: str, kind: str) -> Checkpoint:
    """A new checkpoint of (seq, record_hash) signed by `key`."""
    signer = key_id(key.public_key())
    now = datetime.now(UTC)
    signature = key.sign(checkpoint_payload(seq, record_hash, kind, now, signer)).hex()
    return Checkpoint(seq, record_hash, kind, now, signer, signature)


def store(conn: Connection, checkpoint: Checkpoint) -> Checkpoint:
    """Insert a checkpoint; returns it with its id."""
    result = conn.execute(
        insert(audit_checkpoints).values(
            seq=checkpoint.seq,
            record_hash=checkpoint.record_hash,
            kind=checkpoint.kind,
            created_at=checkpoint.created_at,
            key_id=checkpoint.key_id,
            signature=checkpoint.signature,
        )
    )
    new_id = result.inserted_primary_key[0] if result.inserted_primary_key else None
    return dataclasses.replace(checkpoint, id=None if new_id is None else int(new_id))


def _from_row(row: Mapping[Any, Any]) -> Checkpoint:
    return Checkpoint(
        seq=int(row["seq"]),
        record_hash=row["record_hash"],
        kind=row["kind"],
        created_at=row["created_at"],
        key_id=row["key_id"],
        signature=row["signature"],
        id=int(row["id"]),
    )


def load_all(conn: Connection) -> list[Checkpoint]:
    """Every checkpoint, in seq then id order."""
    query = select(audit_checkpoints).order_by(audit_checkpoints.c.seq, audit_checkpoints.c.id)
    return [_from_row(r) for r in conn.execute(query).mappings()]


def latest(conn: Connection) -> Checkpoint | None:
    """The checkpoint with the highest seq (newest among equals)."""
    query = (
        select(audit_checkpoints)
        .order_by(audit_checkpoints.c.seq.desc(), audit_checkpoints.c.id.desc())
        .limit(1)
    )
    row = conn.execute(query).mappings().first()
    return None if row is None else _from_row(row)


def checkpoint_head(
    conn: Connection, key: Ed25519PrivateKey, kind: str = PERIODIC
) -> Checkpoint | None:
    """Sign the current chain head (locks it) unless it is empty or already checkpointed."""
    head = lock_head(conn)
    if head.seq == 0:
        return None
    last = latest(conn)
    if kind == PERIODIC and last is not None and last.seq >= head.seq:
        return None
    return store(conn, sign(key, head.seq, head.record_hash, kind))


class Checkpointer:
    """Decides when a periodic checkpoint is due: every `every_records` appends or `every_seconds`.

    Counting is local (no database read per batch); the checkpoint itself re-reads the head
    and skips when another replica already covered it.
    """

    run_at_close = True

    def __init__(
        self, engine: Engine, key: Ed25519PrivateKey, every_records: int, every_seconds: float
    ) -> None:
        self._engine = engine
        self._key = key
        self.every_records = every_records
        self.every_seconds = every_seconds
        self._since = 0
        self._last = time.monotonic()

    def note(self, appended: int) -> None:
        """Count entries appended by this process."""
        self._since += appended

    def due(self) -> bool:
        """True when a checkpoint should be written now."""
        if self._since >= self.every_records:
            return True
        return time.monotonic() - self._last >= self.every_seconds

    def run(self) -> Checkpoint | None:
        """Write a checkpoint of the head (blocking; StoreUnavailable if the database is down)."""
        with transaction(self._engine, write=True) as conn:
            written = checkpoint_head(conn, self._key)
        self._since = 0
        self._last = time.monotonic()
        return written

    def maybe(self) -> Checkpoint | None:
        """`run()` if due."""
        return self.run() if self.due() else None
