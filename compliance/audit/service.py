"""One object for the gateway, its API and CLI: the chain in a database, with its signing key."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy import Engine

from compliance.audit import export as exporting
from compliance.audit.checkpoints import (
    DEFAULT_CADENCE,
    Cadence,
    Checkpoint,
    Checkpointer,
    checkpoint_head,
    latest_chained,
)
from compliance.audit.keys import key_id, public_key_pem
from compliance.audit.retention import PruneResult, RetentionJob, prune
from compliance.audit.verify import VerifyReport, verify
from compliance.store.base import transaction


class AuditChain:
    """The audit chain in `engine`'s database, signed with `key`.

    `extra_keys` are public keys of other signers to accept (e.g. replicas with their own key).
    Without a key the chain can be verified but not signed (checkpoints, exports, prunes).
    `cadence` is what this signer promises in its checkpoints (and what verify applies while no
    checkpoint carries signed limits).
    """

    def __init__(
        self,
        engine: Engine,
        key: Ed25519PrivateKey | None,
        extra_keys: Iterable[Ed25519PublicKey] = (),
        cadence: Cadence = DEFAULT_CADENCE,
    ) -> None:
        self.engine = engine
        self.cadence = cadence
        self._key = key
        public = [] if key is None else [key.public_key()]
        self.keys = {key_id(k): k for k in (*extra_keys, *public)}
        self._status: VerifyReport | None = None
        self._status_at = float("-inf")
        self._status_lock = threading.Lock()

    @property
    def key(self) -> Ed25519PrivateKey:
        """The signing key (ValueError for a verify-only chain)."""
        if self._key is None:
            raise ValueError("this audit chain has no signing key")
        return self._key

    @property
    def public_key(self) -> Ed25519PublicKey:
        """The signing key's public half."""
        return self.key.public_key()

    @property
    def key_id(self) -> str:
        """The signing key's id."""
        return key_id(self.public_key)

    @property
    def public_pem(self) -> str:
        """The signing key's public half, PEM."""
        return public_key_pem(self.public_key)

    def verify(self, workers: int = 1, receipt: Checkpoint | None = None) -> VerifyReport:
        """Verify the whole chain now (blocking; `workers` > 1 only in single-threaded CLIs);
        with an auditor's `receipt`, also that its checkpoint is still there."""
        return verify(
            self.engine, self.keys, workers=workers, cadence=self.cadence, receipt=receipt
        )

    def status(self, max_age: float = 60.0) -> VerifyReport:
        """The last verify report if younger than `max_age` seconds, else a fresh one.

        Blocking (call it in a thread); concurrent callers share one run.
        """
        with self._status_lock:
            if self._status is None or time.monotonic() - self._status_at > max_age:
                self._status = self.verify()
                self._status_at = time.monotonic()
            return self._status

    def checkpoint(self) -> Checkpoint | None:
        """Sign the chain head now (None if empty or already signed)."""
        with transaction(self.engine, write=True) as conn:
            return checkpoint_head(conn, self.key, cadence=self.cadence)

    def latest_checkpoint(self) -> Checkpoint | None:
        """The chained checkpoint signing the highest position (what a receipt pins)."""
        with transaction(self.engine, write=False) as conn:
            return latest_chained(conn)

    def checkpointer(self, every_records: int, every_seconds: float) -> Checkpointer:
        """A periodic checkpoint job for the routing log writer."""
        return Checkpointer(self.engine, self.key, every_records, every_seconds, self.cadence)

    def retention(self, days: int, interval: float) -> RetentionJob:
        """A periodic retention job for the routing log writer."""
        return RetentionJob(self.engine, self.key, days, interval, self.cadence)

    def prune(self, days: int) -> PruneResult:
        """Remove entries older than `days` days now."""
        cutoff = datetime.now(UTC) - timedelta(days=days)
        return prune(self.engine, self.key, cutoff, self.cadence)

    def export(
        self, fmt: exporting.Format, since: datetime | None, until: datetime | None
    ) -> Iterator[bytes]:
        """A signed export of the period (see compliance.audit.export)."""
        return exporting.export(self.engine, self.key, fmt, since, until)
