"""Wiring of the records shipper from settings: database, policy history, HMAC key, checkpoints.

`start_records_shipper` is what `gateway serve --data-plane envoy` starts next to Envoy (with
`gateway.envoy.access_log.flush_args(settings.envoy_access_log_flush_ms)` on Envoy's command
line); `gateway envoy ship-records` runs the same shipper in the foreground.
"""

from __future__ import annotations

from pathlib import Path

from compliance.privacy import IpPseudonymiser
from compliance.store.routing_log_store import RoutingLogStore
from gateway.audit_setup import audit_chain
from gateway.bootstrap import hmac_key
from gateway.envoy.log_tail import LogTail
from gateway.envoy.records_shipper import (
    REJECTED_RECORDS_FILE,
    RecordsShipper,
    RejectedFile,
    ShipperThread,
    StoredPolicyHistory,
)
from gateway.settings import Settings

POSITION_SUFFIX = ".shipped"
"""The shipper's saved position lives next to the log: `<log>.shipped`."""


def position_path(log: Path) -> Path:
    """Where the shipper of `log` saves how far it got."""
    return log.with_name(log.name + POSITION_SUFFIX)


def build_records_shipper(settings: Settings, log: Path | None = None) -> RecordsShipper:
    """A shipper of `log` (default: the configured Envoy access log) into the database."""
    log = log or settings.resolved_envoy_access_log
    store = RoutingLogStore(settings.resolved_database_url)
    chain = audit_chain(settings, store.engine)
    return RecordsShipper(
        LogTail(log, position_path(log)),
        store,
        StoredPolicyHistory(store.engine),
        IpPseudonymiser(hmac_key(settings)),
        RejectedFile(settings.data_dir / REJECTED_RECORDS_FILE),
        jobs=[
            chain.checkpointer(settings.audit_checkpoint_records, settings.audit_checkpoint_seconds)
        ],
    )


def start_records_shipper(settings: Settings, log: Path | None = None) -> ShipperThread:
    """Ship the Envoy access log in a background thread; `.stop()` ships the rest and ends."""
    return ShipperThread(build_records_shipper(settings, log)).start()
