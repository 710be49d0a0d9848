"""The records shipper on a real SQLite database: a database outage loses and repeats nothing."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from compliance.privacy import IpPseudonymiser
from compliance.store.errors import StoreUnavailable
from compliance.store.migrate import upgrade
from compliance.store.routing_log_store import RoutingLogStore
from gateway.envoy.log_tail import LogTail
from gateway.envoy.records_shipper import RecordsShipper, RejectedFile
from tests.unit.test_envoy_access_records import POLICY, _line


class OutageStore(RoutingLogStore):
    """The real store, unavailable while `down` is set (a fake outage, not a mock)."""

    down = False

    def append_batch(self, records: Sequence[Any], *, skip_existing: bool = False) -> int:
        if self.down:
            raise StoreUnavailable("database is down")
        return super().append_batch(records, skip_existing=skip_existing)


def _shipper(tmp_path: Path, store: RoutingLogStore) -> RecordsShipper:
    log = tmp_path / "access.log"
    return RecordsShipper(
        LogTail(log, tmp_path / "access.log.shipped"),
        store,
        lambda version: POLICY if version == POLICY.version else None,
        IpPseudonymiser(b"k" * 32),
        RejectedFile(tmp_path / "rejected.jsonl"),
    )


def _append(path: Path, *ids: str) -> None:
    with path.open("ab") as log:
        for decision_id in ids:
            log.write(_line(decision_id=decision_id) + b"\n")


def test_lines_read_while_the_database_is_down_are_shipped_once_it_is_back(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'gateway.db'}"
    upgrade(url)
    store = OutageStore(url)
    shipper = _shipper(tmp_path, store)
    _append(tmp_path / "access.log", "a-1", "a-2")
    assert shipper.ship_once() == 2
    _append(tmp_path / "access.log", "b-1", "b-2")
    store.down = True
    try:
        shipper.ship_once()
    except StoreUnavailable:
        pass
    else:
        raise AssertionError("the outage was not reported")
    store.down = False
    assert shipper.ship_once() == 2  # the same two lines again
    # A second shipper from the saved position (a restart) finds nothing new.
    assert _shipper(tmp_path, store).ship_once() == 0
    assert [r["decision_id"] for r in reversed(store.recent())] == ["a-1", "a-2", "b-1", "b-2"]
    assert not (tmp_path / "rejected.jsonl").exists()
