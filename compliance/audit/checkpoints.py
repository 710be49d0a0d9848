"""Signed checkpoints: Ed25519 statements "chain entry `seq` has hash `record_hash`".

A periodic checkpoint lets `verify` detect a rewritten or truncated chain (the hashes alone
cannot: anyone may recompute them); a prune checkpoint bridges records removed by retention.

Checkpoints form a chain of their own: each signs the hash of the checkpoint written before it
(`prev_checkpoint_hash`, GENESIS_HASH for the first), so deleting or replacing one breaks the
link of the next, and the cadence limits verify enforces (`Cadence`), so the verifier need not
trust configuration. Rows from before migration 0006 have no link: they are legacy checkpoints,
checked by their signature alone.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy import Connection, Engine, func, insert, select

from compliance.audit.canonical import GENESIS_HASH, canonical_timestamp
from compliance.audit.keys import key_id, signature_ok
from compliance.audit.ledger import lock_head
from compliance.store.base import transaction
from compliance.store.schema import audit_checkpoints

PERIODIC = "periodic"
PRUNE = "prune"
CHAIN_NAME = "residency-gateway/audit-chain/v1"
RECEIPT_NAME = "residency-gateway/audit-checkpoint-receipt/v1"


@dataclass(frozen=True, slots=True)
class Cadence:
    """The longest unsigned stretch of the chain a signer promises (and verify enforces)."""

    max_records: int
    max_seconds: float

    @classmethod
    def for_signer(cls, every_records: int, every_seconds: float, batch_size: int) -> Cadence:
        """Limits for a gateway signing every `every_records` of its records or `every_seconds`.

        Each process counts only its own records and checks after each batch, so the margin is
        twice the count plus one batch (a second replica, a batch crossing the mark) and twice
        the interval plus 2 s (the job runs at most a second late, then writes).
        """
        return cls(2 * every_records + batch_size, 2 * every_seconds + 2.0)


DEFAULT_CADENCE = Cadence.for_signer(1000, 60.0, 512)
"""The limits of the default settings (audit_checkpoint_records/seconds, batch size)."""


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """One signed checkpoint (`id` is None until stored; `prev_hash` None: legacy)."""

    seq: int
    record_hash: str
    kind: str
    created_at: datetime
    key_id: str
    signature: str
    prev_hash: str | None = None
    max_records: int | None = None
    max_seconds: float | None = None
    id: int | None = None

    @property
    def chained(self) -> bool:
        """True for checkpoints that sign their predecessor (written since migration 0006)."""
        return self.prev_hash is not None

    @property
    def cadence(self) -> Cadence | None:
        """The signed cadence limits (None for a legacy checkpoint)."""
        if self.max_records is None or self.max_seconds is None:
            return None
        return Cadence(int(self.max_records), float(self.max_seconds))

    def payload(self) -> bytes:
        """The signed bytes: sorted-key JSON of everything but the signature and row id."""
        document: dict[str, Any] = {
            "chain": CHAIN_NAME,
            "seq": self.seq,
            "hash": self.record_hash,
            "kind": self.kind,
            "created_at": canonical_timestamp(self.created_at),
            "key_id": self.key_id,
        }
        if self.chained:
            document.update(
                version=2,
                prev_checkpoint=self.prev_hash,
                max_unsigned_records=self.max_records,
                max_unsigned_seconds=self.max_seconds,
            )
        return orjson.dumps(document, option=orjson.OPT_SORT_KEYS)

    def digest(self) -> str:
        """The checkpoint's hash (SHA-256 of its signed bytes): what the next one links to."""
        return hashlib.sha256(self.payload()).hexdigest()

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

    def receipt(self) -> dict[str, Any]:
        """A self-contained signed statement an auditor keeps outside the database."""
        return {
            "receipt": RECEIPT_NAME,
            "checkpoint_hash": self.digest(),
            "seq": self.seq,
            "record_hash": self.record_hash,
            "kind": self.kind,
            "created_at": canonical_timestamp(self.created_at),
            "key_id": self.key_id,
            "prev_checkpoint_hash": self.prev_hash,
            "max_records": self.max_records,
            "max_seconds": self.max_seconds,
            "signature": self.signature,
        }


def sign(
    key: Ed25519PrivateKey,
    seq: int,
    record_hash: str,
    kind: str,
    prev_hash: str | None = GENESIS_HASH,
    cadence: Cadence = DEFAULT_CADENCE,
) -> Checkpoint:
    """A new checkpoint of (seq, record_hash) after `prev_hash`, signed by `key`.

    `prev_hash=None` makes a legacy (unchained) checkpoint, as written before migration 0006.
    """
    unsigned = Checkpoint(
        seq=seq,
        record_hash=record_hash,
        kind=kind,
        created_at=datetime.now(UTC),
        key_id=key_id(key.public_key()),
        signature="",
        prev_hash=prev_hash,
        # stored as BIGINT and DOUBLE: sign exactly what reading the row gives back
        max_records=None if prev_hash is None else int(cadence.max_records),
        max_seconds=None if prev_hash is None else float(cadence.max_seconds),
    )
    return dataclasses.replace(unsigned, signature=key.sign(unsigned.payload()).hex())


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
            prev_checkpoint_hash=checkpoint.prev_hash,
            max_records=checkpoint.max_records,
            max_seconds=checkpoint.max_seconds,
        )
    )
    new_id = result.inserted_primary_key[0] if result.inserted_primary_key else None
    return dataclasses.replace(checkpoint, id=None if new_id is None else int(new_id))


def _from_row(row: Mapping[Any, Any]) -> Checkpoint:
    max_records, max_seconds = row["max_records"], row["max_seconds"]
    return Checkpoint(
        seq=int(row["seq"]),
        record_hash=row["record_hash"],
        kind=row["kind"],
        created_at=row["created_at"],
        key_id=row["key_id"],
        signature=row["signature"],
        prev_hash=row["prev_checkpoint_hash"],
        max_records=None if max_records is None else int(max_records),
        max_seconds=None if max_seconds is None else float(max_seconds),
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


def last_link(conn: Connection) -> str:
    """The hash the next checkpoint signs as its predecessor (the newest chained one's)."""
    query = (
        select(audit_checkpoints)
        .where(audit_checkpoints.c.prev_checkpoint_hash.is_not(None))
        .order_by(audit_checkpoints.c.id.desc())
        .limit(1)
    )
    row = conn.execute(query).mappings().first()
    return GENESIS_HASH if row is None else _from_row(row).digest()


def latest_chained(conn: Connection) -> Checkpoint | None:
    """The chained checkpoint with the highest seq (what a receipt pins)."""
    query = (
        select(audit_checkpoints)
        .where(audit_checkpoints.c.prev_checkpoint_hash.is_not(None))
        .order_by(audit_checkpoints.c.seq.desc(), audit_checkpoints.c.id.desc())
        .limit(1)
    )
    row = conn.execute(query).mappings().first()
    return None if row is None else _from_row(row)


def signed_through(conn: Connection) -> int:
    """The highest seq a chained checkpoint signs (0: none)."""
    query = select(func.max(audit_checkpoints.c.seq)).where(
        audit_checkpoints.c.prev_checkpoint_hash.is_not(None)
    )
    return int(conn.execute(query).scalar() or 0)


def append(
    conn: Connection,
    key: Ed25519PrivateKey,
    seq: int,
    record_hash: str,
    kind: str,
    cadence: Cadence = DEFAULT_CADENCE,
) -> Checkpoint:
    """Sign and store the next checkpoint of the checkpoint chain (the caller holds the head
    lock, so checkpoints of several processes are linked one after another)."""
    return store(conn, sign(key, seq, record_hash, kind, last_link(conn), cadence))


def checkpoint_head(
    conn: Connection,
    key: Ed25519PrivateKey,
    kind: str = PERIODIC,
    cadence: Cadence = DEFAULT_CADENCE,
) -> Checkpoint | None:
    """Sign the current chain head (locks it) unless it is empty or already checkpointed."""
    head = lock_head(conn)
    if head.seq == 0:
        return None
    if kind == PERIODIC and signed_through(conn) >= head.seq:
        return None
    return append(conn, key, head.seq, head.record_hash, kind, cadence)


class Checkpointer:
    """Decides when a periodic checkpoint is due: every `every_records` appends or `every_seconds`.

    Counting is local (no database read per batch); the checkpoint itself re-reads the head
    and skips when another replica already covered it.
    """

    run_at_close = True

    def __init__(
        self,
        engine: Engine,
        key: Ed25519PrivateKey,
        every_records: int,
        every_seconds: float,
        cadence: Cadence = DEFAULT_CADENCE,
    ) -> None:
        self._engine = engine
        self._key = key
        self._cadence = cadence
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
            written = checkpoint_head(conn, self._key, cadence=self._cadence)
        self._since = 0
        self._last = time.monotonic()
        return written

    def maybe(self) -> Checkpoint | None:
        """`run()` if due."""
        return self.run() if self.due() else None
