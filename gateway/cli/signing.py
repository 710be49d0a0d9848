"""Sign the chain head after a CLI command appended to it (token and tenant-key changes).

Why: verify flags an unsigned tail once the last checkpoint is older than the signed cadence
(compliance.audit.cadence), and no gateway may be running to sign it. A CLI host that holds
the signing key signs at once, as `gateway audit checkpoint` does; one that does not leaves
the entry to the gateway (which signs the head on its next periodic checkpoint or start).
Checkpoints of several signers are serialised by the chain head's lock, so signing while a
gateway runs is safe.
"""

from __future__ import annotations

import sys

from compliance.audit.keys import AuditKeyError, load_signing_key
from compliance.audit.service import AuditChain
from compliance.store.engine import create_store_engine
from compliance.store.errors import StoreError, StoreUnavailable
from gateway.audit_setup import cadence
from gateway.settings import Settings


def sign_head(settings: Settings, database_url: str) -> str:
    """Sign the chain head with the configured key if this host has it (never creates one);
    returns one line saying what happened (for stderr)."""
    path = settings.resolved_audit_signing_key
    if not path.exists():
        return (
            f"audit chain: not signed here (no signing key at {path}); the gateway signs it, "
            "or run 'gateway audit checkpoint' where the key is"
        )
    try:
        key = load_signing_key(path)
    except AuditKeyError as exc:
        return f"audit chain: not signed here ({exc}); the gateway signs it"
    engine = create_store_engine(database_url)
    try:
        written = AuditChain(engine, key, cadence=cadence(settings)).checkpoint()
    except (StoreUnavailable, StoreError) as exc:
        return f"audit chain: not signed here ({exc}); the gateway signs it"
    finally:
        engine.dispose()
    return f"audit chain: signed {written.describe()}" if written else "audit chain: head signed"


def report_signing(settings: Settings, database_url: str) -> None:
    """`sign_head`, its line on stderr (stdout stays for the command's own output)."""
    print(sign_head(settings, database_url), file=sys.stderr)
