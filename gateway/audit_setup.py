"""Wiring of the audit chain from settings: signing key, trusted keys, routing log writer."""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy import Engine

from compliance.audit.checkpoints import Cadence
from compliance.audit.keys import load_or_create_signing_key, load_signing_key, read_public_key
from compliance.audit.service import AuditChain
from compliance.audit.spool import Spool
from compliance.routing_batches import PoisonHandler, RoutingLogSink
from compliance.routing_log import PeriodicJob, RoutingLogWriter
from gateway.settings import Settings


def signing_key(settings: Settings) -> Ed25519PrivateKey:
    """The configured key (must exist), else data_dir's key, generated (0600) if absent."""
    if settings.audit_signing_key is not None:
        return load_signing_key(settings.audit_signing_key)
    return load_or_create_signing_key(settings.resolved_audit_signing_key)


def trusted_keys(settings: Settings) -> list[Ed25519PublicKey]:
    """Public keys of other signers listed in `audit_trusted_keys`."""
    return [read_public_key(path) for path in settings.audit_trusted_keys]


def cadence(settings: Settings) -> Cadence:
    """The unsigned-stretch limits these settings' checkpoints promise (and verify enforces)."""
    return Cadence.for_signer(
        settings.audit_checkpoint_records,
        settings.audit_checkpoint_seconds,
        settings.routing_log_batch_size,
    )


def audit_chain(settings: Settings, engine: Engine) -> AuditChain:
    """The audit chain of the gateway's database."""
    return AuditChain(engine, signing_key(settings), trusted_keys(settings), cadence(settings))


def routing_log_writer(
    settings: Settings, chain: AuditChain, sink: RoutingLogSink, on_poison: PoisonHandler
) -> RoutingLogWriter:
    """Spool-first routing log writer with periodic checkpoints (and retention if set)."""
    jobs: list[PeriodicJob] = [
        chain.checkpointer(settings.audit_checkpoint_records, settings.audit_checkpoint_seconds)
    ]
    if settings.audit_retention_days is not None:
        jobs.append(
            chain.retention(settings.audit_retention_days, settings.audit_retention_interval)
        )
    return RoutingLogWriter(
        sink,
        Spool(
            settings.resolved_audit_spool_dir,
            inline_limit=settings.audit_spool_inline_flush_ms / 1000,
        ),
        durability=settings.audit_durability,
        batch_size=settings.routing_log_batch_size,
        linger=settings.routing_log_linger_ms / 1000,
        idle_backlog=settings.routing_log_idle_backlog,
        on_poison=on_poison,
        jobs=jobs,
        job_interval=min(1.0, settings.audit_checkpoint_seconds),
    )
