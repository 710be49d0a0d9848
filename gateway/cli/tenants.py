"""`gateway tenants keys create`: a new tenant API key, printed once and stored as a hash.

The key has 256 random bits behind a recognisable `rg_` prefix (compliance.api_keys). The
change goes through the same audited write as the admin API: one transaction that adds the
key's hash, bumps the policy version (replicas pick it up) and joins the configuration log.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import Any

from compliance.api_keys import generate_api_key
from compliance.model import Tenant
from compliance.snapshot import hash_api_key
from compliance.store.access_store import Principal, Role
from compliance.store.admin_ops import TENANTS, AdminOps
from compliance.store.policy_store import PolicyStore
from gateway.cli.database import migrated_database_url
from gateway.cli.signing import report_signing
from gateway.settings import Settings

CLI_ACTOR = Principal("cli:tenants-keys-create", Role.ADMIN)
"""Who the configuration log names: someone with the database credentials, on the CLI."""


def _create_key(args: argparse.Namespace) -> int:
    settings = Settings()
    url = migrated_database_url(settings)
    key = generate_api_key()
    digest = hash_api_key(key)

    def build(current: Tenant | None) -> Tenant:
        assert current is not None  # create=False: the store answers NotFoundError first
        return dataclasses.replace(current, api_key_hashes=current.api_key_hashes | {digest})

    store = PolicyStore(url)
    try:
        change = AdminOps(store).put(
            TENANTS, args.tenant, build, actor=CLI_ACTOR, create=False, patch=True
        )
    finally:
        store.close()
    count = len(change.value.api_key_hashes) if change.value else 0
    print(key, flush=True)
    print(
        f"created an API key for tenant {args.tenant!r} (it has {count} now; policy version "
        f"{change.policy_version}). It is shown only this once: the gateway stores its hash.",
        file=sys.stderr,
    )
    report_signing(settings, url)
    return 0


def register(commands: Any) -> None:
    """Add `tenants keys create` to the top-level subcommands."""
    tenants = commands.add_parser("tenants", help="tenant API keys")
    sub = tenants.add_subparsers(dest="tenants_command", required=True)
    keys = sub.add_parser("keys", help="tenant API keys")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    create = keys_sub.add_parser(
        "create", help="create an API key for a tenant and print it once (256 random bits)"
    )
    create.add_argument("--tenant", required=True, help="tenant id")
    create.set_defaults(handler=_create_key)
