"""`gateway tokens`: create, list and revoke operator tokens (admin, operator, auditor).

Creating and revoking are configuration changes: each joins the audit chain in the token's own
transaction (actor `cli:tokens:<OS user>`), and the chain head is then signed if this host
holds the signing key (gateway.cli.signing).
"""

from __future__ import annotations

import argparse
import getpass
from typing import Any

from compliance.store.access_store import DIRECT, AccessStore, Principal, Role
from gateway.cli.common import CliError
from gateway.cli.database import migrated_database_url
from gateway.cli.signing import report_signing
from gateway.settings import Settings


def _store() -> AccessStore:
    return AccessStore(migrated_database_url(Settings()))


def _actor() -> Principal:
    """`cli:tokens:<login name>` (as the OS reports it: informative, not authenticated)."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no login name (e.g. a container's numeric user)
        return DIRECT
    return Principal(f"{DIRECT.name}:{user}"[:128], DIRECT.role)


def _signed() -> None:
    settings = Settings()
    report_signing(settings, migrated_database_url(settings))


def _create(args: argparse.Namespace) -> int:
    store = _store()
    try:
        token = store.create(args.name, Role(args.role), actor=_actor())
    finally:
        store.close()
    print(token, flush=True)
    _signed()
    return 0


def _list(args: argparse.Namespace) -> int:
    store = _store()
    try:
        for name, role, created, revoked in store.list():
            state = f"revoked {revoked.isoformat()}" if revoked else "active"
            print(f"{name}\t{role.value}\t{created.isoformat()}\t{state}")
    finally:
        store.close()
    return 0


def _revoke(args: argparse.Namespace) -> int:
    store = _store()
    try:
        if not store.revoke(args.name, actor=_actor()):
            raise CliError(f"no active token named {args.name!r}")
    finally:
        store.close()
    print(f"revoked {args.name}", flush=True)
    _signed()
    return 0


def register(commands: Any) -> None:
    """Add `tokens create|list|revoke` to the top-level subcommands."""
    tokens = commands.add_parser("tokens", help="operator tokens for admin and audit APIs")
    sub = tokens.add_subparsers(dest="tokens_command", required=True)
    create = sub.add_parser("create", help="create a token and print it once")
    create.add_argument("--name", required=True)
    create.add_argument("--role", required=True, choices=[r.value for r in Role])
    create.set_defaults(handler=_create)
    sub.add_parser("list", help="list tokens").set_defaults(handler=_list)
    revoke = sub.add_parser("revoke", help="revoke a token by name")
    revoke.add_argument("name")
    revoke.set_defaults(handler=_revoke)
