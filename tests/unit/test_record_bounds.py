"""Routing records are bounded before they are spooled: over-long strings are cut with a marker
(length and SHA-256) and flagged, over-large lists replaced by their length and hash; the record
always exists and is never over MAX_RECORD_BYTES."""

from __future__ import annotations

from hashlib import sha256
from pathlib import Path

from compliance.audit.record_bounds import MAX_MODEL_CHARS, MAX_RECORD_BYTES, MAX_STRING_CHARS
from compliance.audit.spool import Spool
from compliance.routing_batches import decode, encode
from compliance.routing_log import RoutingLogWriter
from compliance.store.migrate import upgrade
from compliance.store.routing_log_store import RoutingLogStore
from compliance.store.schema import routing_decisions
from tests.audit_chain_support import decision

HUGE = 5 * 1024 * 1024  # over the spool reader's old 4 MiB chunk


def huge_model_record(n: int, length: int = HUGE) -> dict[str, object]:
    """A record as the gateway makes it for an unknown model: the name four times over."""
    model = "m" * length
    record = decision(n, model=model, reasons=[f"no region serves model {model!r}"])
    record["explanation"] = {
        **record["explanation"],
        "facts": {"model": model, "tenant": "demo"},
        "reasons": list(record["reasons"]),
    }
    return record


def test_a_huge_model_name_is_cut_marked_and_flagged_not_dropped() -> None:
    assert routing_decisions.c.model.type.length == MAX_MODEL_CHARS  # it fits the column
    within = decision(2, model="x" * MAX_MODEL_CHARS)
    assert decode(encode(within)) == within  # a record within bounds is unchanged
    payload = encode(huge_model_record(1))
    assert len(payload) <= MAX_RECORD_BYTES
    record = decode(payload)
    digest = sha256(b"m" * HUGE).hexdigest()
    assert len(record["model"]) == MAX_MODEL_CHARS
    assert record["model"].startswith("mmm")
    assert record["model"].endswith(f"[truncated: {HUGE} chars, sha256 {digest}]")
    assert record["explanation"]["facts"]["model"] == record["model"]
    assert len(record["reasons"][0]) == MAX_STRING_CHARS
    assert record["explanation"]["truncated"] == {
        "fields": ["model", "reasons[0]", "explanation.facts.model", "explanation.reasons[0]"],
        "count": 4,
    }
    assert record["decision_id"] == "dec-000001" and record["status_code"] == 200


def test_over_large_lists_become_their_length_and_hash() -> None:
    attempts = [
        {"region": f"r{i}", "result": "error", "status": 502, "ms": 1.0} for i in range(30000)
    ]
    payload = encode(decision(3, attempts=attempts))
    assert len(payload) <= MAX_RECORD_BYTES
    record = decode(payload)
    assert record["attempts"] == []
    oversized = record["explanation"]["oversized"]["attempts"]
    assert oversized["bytes"] > MAX_RECORD_BYTES and len(oversized["sha256"]) == 64
    assert record["reasons"] == ["EU data subject under GDPR"]  # the rest is kept


async def test_a_huge_record_through_the_routing_log_reaches_the_database(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/log.db"
    upgrade(url)
    log = RoutingLogStore(url)
    writer = RoutingLogWriter(log, Spool(tmp_path / "spool"), batch_size=4)
    writer.start()
    await writer.record(decision(1))
    await writer.record(huge_model_record(2))
    for n in range(3, 10):
        await writer.record(decision(n))
    await writer.close()
    assert log.count() == 9 and writer.pending == 0
    stored = log.get("dec-000002")
    assert stored is not None and len(stored["model"]) == MAX_MODEL_CHARS
    assert log.get("dec-000009") is not None
    log.close()
