"""What `verify` checks of the checkpoints themselves: the checkpoint chain's links, the signed
cadence (no stretch of the log left unsigned for longer than the signer promised) and an
auditor's receipt (the database still holds the checkpoint pinned outside it; `from_receipt`
reads one).

Hashes alone prove nothing against someone with write access (they can be recomputed), and a
signed checkpoint proves only the entries up to it: these checks make deleting checkpoints, a
truncated or rewritten suffix, and a rollback to an older signed state visible.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import pairwise
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from compliance.audit.canonical import GENESIS_HASH, canonical_timestamp
from compliance.audit.checkpoints import RECEIPT_NAME, Cadence, Checkpoint
from compliance.audit.report import Break


def check_links(checkpoints: Sequence[Checkpoint]) -> list[Break]:
    """Each chained checkpoint (in the order written) must sign the hash of the one before."""
    problems: list[Break] = []
    expected, previous = GENESIS_HASH, None
    for cp in sorted((c for c in checkpoints if c.chained), key=lambda c: c.id or 0):
        if cp.prev_hash != expected:
            where = f"after {previous.describe()}" if previous else "at its start"
            problems.append(
                Break(
                    "missing checkpoint",
                    cp.seq,
                    cp.describe(),
                    f"checkpoint chain broken {where}: {cp.describe()} follows a checkpoint "
                    f"{(cp.prev_hash or '')[:16]}... that is not in the database (a checkpoint "
                    "was deleted or replaced)",
                )
            )
        expected, previous = cp.digest(), cp
    return problems


@dataclass(frozen=True, slots=True)
class Tail:
    """The entries after the last signed checkpoint: `count` of them, from `since`."""

    count: int
    since: int


def check_cadence(
    valid: Sequence[Checkpoint],
    start: int,
    end: int,
    fallback: Cadence | None,
    now: datetime | None = None,
) -> tuple[list[Break], Tail]:
    """Gaps in the signed cadence among the entries after `start` (0, or the prune bridge) up
    to `end` (the last stored entry).

    Between two chained checkpoints at most their signed `max_records` entries may lie; after
    the last one (the unsigned tail) at most `max_records` entries, and none once that
    checkpoint is older than `max_seconds`. The stretch before the first chained checkpoint
    (legacy, or written before the chain existed) is not held to a cadence. `fallback` applies
    when no chained checkpoint exists (None: no tail limit).
    """
    now = now or datetime.now(UTC)
    problems: list[Break] = []
    chained = sorted((c for c in valid if c.chained and c.seq >= start), key=lambda c: c.seq)
    for before, after in pairwise(chained):
        cadence = after.cadence
        span = after.seq - before.seq
        if cadence is not None and span > cadence.max_records:
            problems.append(
                Break(
                    "gap",
                    before.seq + 1,
                    None,
                    f"gap between #{before.seq} and #{after.seq}: {span} entries without a "
                    f"signed checkpoint ({before.describe()}, then {after.describe()}); the "
                    f"signed cadence allows at most {cadence.max_records}",
                )
            )
    legacy = [c for c in valid if not c.chained and start <= c.seq <= end]
    anchor: Checkpoint | None = chained[-1] if chained else None
    if anchor is None and legacy:
        anchor = max(legacy, key=lambda c: c.seq)
    last = anchor.seq if anchor is not None else start
    tail = Tail(max(0, end - last), last + 1)
    cadence = chained[-1].cadence if chained else fallback
    if tail.count and cadence is not None:
        what = f"unsigned tail: {tail.count} entries (#{tail.since}..#{end})"
        where = f"after {anchor.describe()}" if anchor else "and no checkpoint signs any entry"
        age = None if anchor is None else (now - anchor.created_at).total_seconds()
        if tail.count > cadence.max_records:
            problems.append(
                Break(
                    "gap",
                    tail.since,
                    None,
                    f"{what} {where}; the signed cadence allows at most "
                    f"{cadence.max_records}: newer checkpoints were deleted, or entries added "
                    "without signing",
                )
            )
        elif age is not None and age > cadence.max_seconds:
            problems.append(
                Break(
                    "gap",
                    tail.since,
                    None,
                    f"{what} {where}, signed {age:.0f} s ago; the signed cadence allows "
                    f"{cadence.max_seconds:g} s: newer checkpoints were deleted, or the gateway "
                    "stopped without signing (a restarted gateway signs the head)",
                )
            )
    return problems, tail


def check_receipt(
    receipt: Checkpoint,
    checkpoints: Sequence[Checkpoint],
    keys: Mapping[str, Ed25519PublicKey],
    first_kept: int | None,
) -> tuple[list[Break], str]:
    """Problems with an auditor's receipt and how it stands: `present`, `pruned` or `missing`.

    The checkpoint chain is never pruned, so a genuine receipt's checkpoint is always in the
    database; its entries may be gone (retention), which is reported as `pruned`, not tampering.
    That the chain extends from it follows from check_links (every later checkpoint links back).
    """
    error = receipt.check(keys)
    if error is not None:
        detail = f"the receipt's checkpoint (#{receipt.seq}) is {error}"
        return [Break("receipt", receipt.seq, None, detail)], "invalid"
    digest = receipt.digest()
    if not any(cp.digest() == digest for cp in checkpoints):
        stamp = canonical_timestamp(receipt.created_at)
        return [
            Break(
                "rolled back",
                receipt.seq,
                None,
                f"the receipt's checkpoint (#{receipt.seq}, signed {stamp}, hash "
                f"{digest[:16]}...) is not in the database: the log was rolled back to an "
                "older state, or that checkpoint was deleted",
            )
        ], "missing"
    if first_kept is not None and receipt.seq < first_kept:
        return [], "pruned"
    return [], "present"


class ReceiptError(ValueError):
    """A receipt file that is not a checkpoint receipt."""


def from_receipt(document: Any) -> Checkpoint:
    """The checkpoint a receipt describes (its signature is not checked here)."""
    if not isinstance(document, dict) or document.get("receipt") != RECEIPT_NAME:
        raise ReceiptError("not a checkpoint receipt (from 'gateway audit checkpoint export')")
    try:
        stamp = document["created_at"]
        created = datetime.fromisoformat(stamp[:-1] + "+00:00" if stamp.endswith("Z") else stamp)
        max_records, max_seconds = document.get("max_records"), document.get("max_seconds")
        return Checkpoint(
            seq=int(document["seq"]),
            record_hash=str(document["record_hash"]),
            kind=str(document["kind"]),
            created_at=created,
            key_id=str(document["key_id"]),
            signature=str(document["signature"]),
            prev_hash=document.get("prev_checkpoint_hash"),
            max_records=None if max_records is None else int(max_records),
            max_seconds=None if max_seconds is None else float(max_seconds),
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ReceiptError(f"not a checkpoint receipt ({type(exc).__name__}: {exc})") from None
