"""`gateway audit verify`: re-hash every entry, walk the links, check every signed checkpoint.

Reports the first entry that was altered, deleted, inserted or reordered (CloudTrail-style
integrity validation), or that the chain is intact with its record count.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from hashlib import sha256

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import Connection, Engine, func, select

from compliance.audit import checkpoints as cps
from compliance.audit.cadence import Tail, check_cadence, check_links, check_receipt
from compliance.audit.canonical import GENESIS_HASH, Kind
from compliance.audit.entries import (
    Entry,
    iter_canonical,
    iter_entries,
    rows_at,
    seq_bounds,
    seqs_with_hash,
    sqlite_can_hash,
    unchained,
)
from compliance.audit.intents import unanswered
from compliance.audit.ledger import TABLES, ChainHead, read_head
from compliance.audit.report import Break, VerifyReport
from compliance.audit.verify_parallel import precheck
from compliance.store.base import transaction
from compliance.store.engine import sqlite_file

__all__ = ["Break", "VerifyReport", "verify"]

REORDER_WINDOW = 10_000
"""How far from its position a displaced entry is searched for (only after a break)."""


class _Walk:
    """One pass over the chain inside one read transaction."""

    def __init__(
        self, conn: Connection, keys: Mapping[str, Ed25519PublicKey], head: ChainHead
    ) -> None:
        self.conn = conn
        self.head = head
        self.problems: list[Break] = []
        self.valid: dict[int, list[cps.Checkpoint]] = {}
        self.checkpoints = cps.load_all(conn)
        for cp in self.checkpoints:
            error = cp.check(keys)
            if error is None:
                self.valid.setdefault(cp.seq, []).append(cp)
            else:
                self.problems.append(
                    Break("forged", cp.seq, cp.describe(), f"{cp.describe()} {error}")
                )
        self.problems.extend(check_links(self.checkpoints))
        self.records = 0
        self.bridged_by: int | None = None
        self.tail = Tail(0, 0)
        self.receipt: str | None = None

    def start(self, first: int) -> tuple[int, str] | None:
        """The position and `prev` the walk starts from, or None after reporting a break."""
        if first == 1:
            return 1, GENESIS_HASH
        prunes = [cp for s, group in self.valid.items() for cp in group if cp.kind == cps.PRUNE]
        bridge = [cp for cp in prunes if cp.seq == first - 1]
        if bridge:
            self.bridged_by = first - 1
            return first, bridge[-1].record_hash
        covered = max((cp.seq for cp in prunes if cp.seq < first), default=0)
        self.problems.append(
            Break(
                "deleted",
                covered + 1,
                None,
                f"entries #{covered + 1}..#{first - 1} are missing: the log starts at #{first} "
                "and no signed prune checkpoint accounts for them",
            )
        )
        return None

    def walk(self, first: int, last_seq: int) -> int | None:
        """Walk from `first`; returns the last position reached intact (None if none)."""
        begin = self.start(first)
        if begin is None:
            return None
        if self.conn.dialect.name == "sqlite" and sqlite_can_hash(self.conn):
            return self._walk_canonical(first, last_seq, *begin)
        return self._walk_entries(iter_entries(self.conn, first, last_seq), *begin)

    def walk_parallel(self, first: int, last_seq: int, engine: Engine, workers: int) -> int | None:
        """The parallel pass (verify_parallel.py) if it applies and finds the chain intact."""
        path = sqlite_file(engine.url)
        if workers < 2 or path is None or not sqlite_can_hash(self.conn):
            return None
        problems = len(self.problems)
        begin = self.start(first)
        del self.problems[problems:]  # walk() reports it again if needed
        if begin is None:
            return None
        wanted = sorted(s for s in self.valid if first <= s <= last_seq)
        result = precheck(str(path), first, last_seq, begin[1], workers, wanted)
        if result is None:
            self.bridged_by = None
            return None
        self.records, hashes = result
        for seq in wanted:
            for cp in self.valid[seq]:
                if cp.record_hash != hashes.get(seq):
                    self._check_signed(self._entry_at(seq), [cp])
        return last_seq

    def _walk_canonical(self, first: int, last_seq: int, expected: int, prev: str) -> int:
        """The SQLite fast path: SQLite builds each row's canonical bytes, Python hashes them;
        a row that does not match at once is re-read and checked as an Entry."""
        valid = self.valid
        last_at: int | None = None
        for seq, stored_prev, record_hash, text, _ in iter_canonical(self.conn, first, last_seq):
            if not (
                seq == expected
                and stored_prev == prev
                and text is not None
                and sha256(text.encode("utf-8")).hexdigest() == record_hash
            ):
                if not self._check_stored(seq, expected, prev, last_at):
                    return expected - 1
            elif seq in valid:
                self._check_signed(self._entry_at(seq), valid[seq])
            prev = record_hash
            last_at = seq
            expected += 1
            self.records += 1
        return expected - 1

    def _entry_at(self, seq: int, index: int = 0) -> Entry:
        return Entry.from_row(rows_at(self.conn, seq)[index])

    def _check_stored(self, seq: int, expected: int, prev: str, last_at: int | None) -> bool:
        """Check the row(s) at `seq` in full; False after noting a break."""
        rows = rows_at(self.conn, seq)
        if last_at is None:
            last = None
        elif last_at == seq:  # the first of two rows claiming this position
            last = Entry.from_row(rows[0])
        else:
            last = self._entry_at(last_at, -1)
        if len(rows) > 1 or seq != expected:  # two entries claim one position, or a gap
            return self._check(Entry.from_row(rows[-1]), expected, prev, last) is not None
        return self._check(Entry.from_row(rows[0]), expected, prev, last) is not None

    def _walk_entries(self, entries: Iterator[Entry], expected: int, prev: str) -> int:
        """Check entries one by one (PostgreSQL; SQLite without its JSON functions)."""
        last: Entry | None = None
        for entry in entries:
            digest = self._check(entry, expected, prev, last)
            if digest is None:
                return expected - 1
            prev, last = digest, entry
            expected += 1
            self.records += 1
        return expected - 1

    def _check(self, entry: Entry, expected: int, prev: str, last: Entry | None) -> str | None:
        """The entry's hash if it belongs at `expected` after `prev`; else None, break noted."""
        if entry.seq != expected:
            self.problems.append(self._position_break(entry, expected, last))
            return None
        digest = entry.digest()
        if digest is None or digest != entry.record_hash or entry.prev_hash != prev:
            self.problems.append(self._classify(entry, digest, prev, last))
            return None
        signed = self.valid.get(expected)
        if signed is not None:
            self._check_signed(entry, signed)
        return digest

    def _check_signed(self, entry: Entry, signed: list[cps.Checkpoint]) -> None:
        for cp in signed:
            if cp.record_hash != entry.record_hash:
                self.problems.append(
                    Break(
                        "rewritten",
                        entry.seq,
                        entry.describe(),
                        f"{entry.describe()} does not match the hash signed by {cp.describe()}: "
                        f"the chain up to #{entry.seq} was rewritten after it was signed",
                    )
                )

    def _position_break(self, entry: Entry, expected: int, last: Entry | None) -> Break:
        if entry.seq > expected:
            span = f"#{expected}" if entry.seq == expected + 1 else f"#{expected}..#{entry.seq - 1}"
            return Break(
                "deleted",
                expected,
                None,
                f"entry {span} is missing: {entry.describe()} at #{entry.seq} follows "
                f"#{expected - 1}",
            )
        other = last.describe() if last is not None else "another entry"
        return Break(
            "inserted",
            entry.seq,
            entry.describe(),
            f"two entries claim #{entry.seq}: {other} and {entry.describe()}",
        )

    def _original_seq(self, entry: Entry) -> int | None:
        """The position an entry was hashed for, if it is near or after a known predecessor."""
        candidates = [q + 1 for q in seqs_with_hash(self.conn, entry.prev_hash or "")]
        if entry.prev_hash == GENESIS_HASH:
            candidates.append(1)
        low = max(1, entry.seq - REORDER_WINDOW)
        candidates.extend(range(low, entry.seq + REORDER_WINDOW))
        for seq in candidates:
            if seq != entry.seq and entry.digest(seq) == entry.record_hash:
                return seq
        return None

    def _classify(self, entry: Entry, digest: str | None, prev: str, last: Entry | None) -> Break:
        name = entry.describe()
        if last is not None and entry.prev_hash != prev and entry.prev_hash == last.prev_hash:
            return Break(
                "inserted",
                last.seq,
                last.describe(),
                f"{last.describe()} was inserted: it and the next entry both follow "
                f"#{last.seq - 1}",
            )
        if digest != entry.record_hash:
            original = None if entry.prev_hash == prev else self._original_seq(entry)
            if original is not None:
                return Break(
                    "reordered",
                    entry.seq,
                    name,
                    f"{name} was written as #{original} but is stored at #{entry.seq}",
                )
            return Break("altered", entry.seq, name, f"{name} does not match its hash")
        if last is None:
            anchor = "the genesis" if entry.seq == 1 else "the prune checkpoint"
            return Break(
                "deleted",
                entry.seq,
                name,
                f"{name} does not link to {anchor}: entries before it were removed",
            )
        origin = seqs_with_hash(self.conn, entry.prev_hash or "")
        if origin and origin[0] != last.seq:
            return Break(
                "reordered",
                entry.seq,
                name,
                f"{name} follows #{origin[0]} in the chain but is stored after #{last.seq}",
            )
        return Break(
            "altered",
            last.seq,
            last.describe(),
            f"{last.describe()} was altered and re-hashed: #{entry.seq} links to a different "
            "version of it",
        )

    def finish(self, first: int | None, reached: int | None, last_stored: int | None) -> None:
        """Compare the end of the log with the chain head and the signed checkpoints."""
        end = last_stored or (self.head.seq if self._bridged_empty() else 0)
        if reached is not None and reached == end:
            if end < self.head.seq:
                self.problems.append(
                    Break(
                        "truncated",
                        end + 1,
                        None,
                        f"entries #{end + 1}..#{self.head.seq} are missing: the log ends at "
                        f"#{end} but the chain head is #{self.head.seq}",
                    )
                )
            elif end > self.head.seq:
                self.problems.append(
                    Break(
                        "inserted",
                        self.head.seq + 1,
                        None,
                        f"entries after the chain head #{self.head.seq} (up to #{end}) were "
                        "added outside the chain",
                    )
                )
        beyond = [cp for group in self.valid.values() for cp in group if cp.seq > end]
        if beyond:
            cp = min(beyond, key=lambda c: c.seq)
            self.problems.append(
                Break(
                    "truncated",
                    end + 1,
                    None,
                    f"{cp.describe()} signed entry #{cp.seq} but the log ends at #{end}",
                )
            )
        count, example = unchained(self.conn)
        if count:
            self.problems.append(
                Break(
                    "inserted",
                    None,
                    example,
                    f"{count} row(s) have no chain position (first: {example}): added outside "
                    "the chain",
                )
            )
        if first is None and self.head.seq > 0 and not self._bridged_empty():
            self.problems.append(
                Break(
                    "truncated",
                    1,
                    None,
                    f"the log is empty but the chain head is #{self.head.seq}",
                )
            )

    def signed(
        self,
        first: int | None,
        last_stored: int | None,
        cadence: cps.Cadence | None,
        receipt: cps.Checkpoint | None,
        keys: Mapping[str, Ed25519PublicKey],
    ) -> None:
        """The signed cadence up to the end of the log, and the auditor's receipt if given."""
        start = 0 if first is None or first == 1 else first - 1
        if first is None and self._bridged_empty():
            start = self.head.seq
        end = last_stored if last_stored is not None else start
        valid = [cp for group in self.valid.values() for cp in group]
        problems, self.tail = check_cadence(valid, start, end, cadence)
        self.problems.extend(problems)
        if receipt is not None:
            problems, self.receipt = check_receipt(receipt, self.checkpoints, keys, start + 1)
            self.problems.extend(problems)

    def _bridged_empty(self) -> bool:
        return any(
            cp.kind == cps.PRUNE and cp.seq == self.head.seq
            for cp in self.valid.get(self.head.seq, [])
        )


def _count(conn: Connection, kind: Kind, first: int | None, last: int | None) -> int:
    """Stored entries of one kind in the chain's extent (one index range scan)."""
    if first is None or last is None:
        return 0
    seq = TABLES[kind].c.chain_seq
    return int(conn.execute(select(func.count()).where(seq >= first, seq <= last)).scalar_one())


def verify(
    engine: Engine,
    keys: Mapping[str, Ed25519PublicKey],
    *,
    workers: int = 1,
    cadence: cps.Cadence | None = None,
    receipt: cps.Checkpoint | None = None,
) -> VerifyReport:
    """Verify the whole chain (keys: key_id -> public key).

    `workers` > 1 lets worker processes (fork) hash a large SQLite file chain in parallel
    first; only for single-threaded callers such as the CLI. `cadence` limits the unsigned
    tail while no chained checkpoint carries signed limits; `receipt` is a checkpoint an
    auditor kept (it must still be in the database: else the log was rolled back).
    """
    started = time.perf_counter()
    with transaction(engine, write=False) as conn:
        head = read_head(conn)
        walk = _Walk(conn, keys, head)
        first, last = seq_bounds(conn)
        reached = None
        if first is not None and last is not None:
            reached = walk.walk_parallel(first, last, engine, workers)
            if reached is None:
                reached = walk.walk(first, last)
        walk.finish(first, reached, last)
        walk.signed(first, last, cadence, receipt, keys)
        decisions = _count(conn, Kind.DECISION, first, last)
        changes = _count(conn, Kind.CONFIG_CHANGE, first, last)
        intents = _count(conn, Kind.INTENT, first, last)
        without_outcome = unanswered(conn, first, last) if intents else 0
    return VerifyReport(
        records=walk.records,
        first_seq=first,
        last_seq=last,
        head_seq=head.seq,
        checkpoints=len(walk.checkpoints),
        bridged_by=walk.bridged_by,
        problems=tuple(walk.problems),
        seconds=time.perf_counter() - started,
        unsigned_tail=walk.tail.count,
        tail_since=walk.tail.since if walk.tail.count else None,
        receipt=walk.receipt,
        decisions=decisions,
        config_changes=changes,
        intents=intents,
        without_outcome=without_outcome,
    )
