"""What `verify` reports: the problems found (first break first) and the chain's extent."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Break:
    """Where and how the chain is broken."""

    # altered | deleted | inserted | reordered | truncated | rewritten | forged | gap |
    # missing checkpoint | rolled back | receipt
    problem: str
    seq: int | None
    entry: str | None
    detail: str

    def text(self) -> str:
        """One line for people."""
        where = f" at #{self.seq}" if self.seq is not None else ""
        return f"{self.problem}{where}: {self.detail}"


@dataclass(frozen=True, slots=True)
class VerifyReport:
    """What `verify` found."""

    records: int
    first_seq: int | None
    last_seq: int | None
    head_seq: int
    checkpoints: int
    bridged_by: int | None
    problems: tuple[Break, ...] = field(default_factory=tuple)
    seconds: float = 0.0
    unsigned_tail: int = 0
    tail_since: int | None = None
    receipt: str | None = None  # present | pruned | missing | invalid (with --since-checkpoint)
    decisions: int = 0  # stored entries of each kind (they add up to `records` when intact)
    config_changes: int = 0
    intents: int = 0  # write-ahead decisions (kind `intent`)
    without_outcome: int = 0  # write-ahead decisions no outcome record joins (a crash between)

    @property
    def ok(self) -> bool:
        """True if nothing is wrong."""
        return not self.problems

    @property
    def first_break(self) -> Break | None:
        """The problem at the lowest chain position."""
        if not self.problems:
            return None
        return min(self.problems, key=lambda b: (b.seq is None, b.seq or 0))

    def breakdown(self) -> str:
        """`33 decisions, 5 configuration changes; 4 signed checkpoints`, with write-ahead
        decisions: `33 decisions, 30 write-ahead (1 without an outcome recorded), ...`."""
        ahead = ""
        if self.intents:
            ahead = f", {self.intents} write-ahead"
            if self.without_outcome:
                ahead += f" ({self.without_outcome} without an outcome recorded)"
        return (
            f"{self.decisions} decisions{ahead}, {self.config_changes} configuration changes; "
            f"{self.checkpoints} signed checkpoints"
        )

    def summary(self) -> str:
        """`chain intact: N records` or `chain broken: <first problem>`."""
        first = self.first_break
        if first is None:
            return f"chain intact: {self.records} records"
        return f"chain broken: {first.text()}"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form (the API and the console show it)."""
        first = self.first_break
        return {
            "ok": self.ok,
            "summary": self.summary(),
            "records": self.records,
            "first_seq": self.first_seq,
            "last_seq": self.last_seq,
            "head_seq": self.head_seq,
            "decisions": self.decisions,
            "config_changes": self.config_changes,
            "write_ahead_decisions": self.intents,
            "without_outcome": self.without_outcome,
            "breakdown": self.breakdown(),
            "checkpoints": self.checkpoints,
            "bridged_by_checkpoint_at": self.bridged_by,
            "unsigned_tail": self.unsigned_tail,
            "unsigned_tail_since": self.tail_since,
            "receipt": self.receipt,
            "first_break": None if first is None else _break_dict(first),
            "problems": [_break_dict(b) for b in self.problems],
            "seconds": round(self.seconds, 3),
        }


def _break_dict(b: Break) -> dict[str, Any]:
    return {"problem": b.problem, "seq": b.seq, "entry": b.entry, "detail": b.detail}
