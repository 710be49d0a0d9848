"""`gateway audit verify | export | verify-export | public-key | prune | checkpoint [export]`.

Run on a host holding the gateway's settings (database URL, data_dir with the signing key);
`verify-export` needs only the export file and the public key, so auditors can run it offline.
Exit status: 0 intact, 1 tampering found, 2 usage or setup error.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy import Engine

from compliance.audit.cadence import ReceiptError, from_receipt
from compliance.audit.checkpoints import Checkpoint
from compliance.audit.export import FORMATS, parse_instant
from compliance.audit.keys import (
    AuditKeyError,
    key_id,
    load_signing_key,
    public_key_pem,
    read_public_key,
)
from compliance.audit.service import AuditChain
from compliance.audit.verify_export import ExportFormatError, verify_export
from compliance.store.engine import create_store_engine
from gateway.audit_setup import cadence, signing_key
from gateway.cli.common import CliError
from gateway.cli.database import migrated_database_url, where_from
from gateway.settings import Settings


def _engine(settings: Settings) -> Engine:
    return create_store_engine(migrated_database_url(settings))


def _trusted(settings: Settings, files: list[Path] | None) -> list[tuple[Ed25519PublicKey, str]]:
    """Keys to trust, each with where it came from: given files, else the configured ones plus
    the local signing key's."""
    try:
        if files:
            return [(read_public_key(path), f"--public-key {path}") for path in files]
        keys = [
            (read_public_key(path), f"GATEWAY_AUDIT_TRUSTED_KEYS {path}")
            for path in settings.audit_trusted_keys
        ]
        path = settings.resolved_audit_signing_key
        if path.exists():
            keys.append((load_signing_key(path).public_key(), f"this gateway's signing key {path}"))
        return keys
    except AuditKeyError as exc:
        raise CliError(str(exc)) from None


def _public_keys(settings: Settings, files: list[Path] | None) -> list[Ed25519PublicKey]:
    """Keys to trust: given files, else the configured ones plus the local signing key's."""
    return [key for key, _ in _trusted(settings, files)]


def existing_signing_key(settings: Settings) -> Ed25519PrivateKey:
    """The gateway's signing key; never generated here (a new key would sign nothing real)."""
    path = settings.resolved_audit_signing_key
    if settings.audit_signing_key is None and not path.exists():
        raise CliError(
            f"no audit signing key at {path} ({where_from(settings)}): point --data-dir, "
            "GATEWAY_DATA_DIR or GATEWAY_AUDIT_SIGNING_KEY at the gateway's"
        )
    return signing_key(settings)


def _chain(settings: Settings, *, signing: bool, key_files: list[Path] | None = None) -> AuditChain:
    """The chain; `signing` loads (or creates) the signing key, else it only verifies."""
    engine = _engine(settings)
    try:
        key = existing_signing_key(settings) if signing else None
    except AuditKeyError as exc:
        engine.dispose()
        raise CliError(str(exc)) from None
    return AuditChain(engine, key, _public_keys(settings, key_files), cadence(settings))


def _receipt(path: Path) -> Checkpoint:
    try:
        return from_receipt(orjson.loads(path.read_bytes()))
    except OSError as exc:
        raise CliError(f"{path}: {exc.strerror or exc}") from None
    except (orjson.JSONDecodeError, ReceiptError) as exc:
        raise CliError(f"{path}: {exc}") from None


def _verify(args: argparse.Namespace) -> int:
    receipt = _receipt(args.since_checkpoint) if args.since_checkpoint else None
    chain = _chain(Settings(), signing=False, key_files=args.public_key)
    try:
        report = chain.verify(workers=args.workers, receipt=receipt)
    finally:
        chain.engine.dispose()
    if args.json:
        print(orjson.dumps(report.to_dict(), option=orjson.OPT_INDENT_2).decode())
    else:
        print(report.summary())
        for problem in report.problems[1:]:
            print(f"  also: {problem.text()}")
        if report.ok:
            bridged = f"; starts after pruned #{report.bridged_by}" if report.bridged_by else ""
            print(
                f"  entries #{report.first_seq or 0}..#{report.last_seq or 0}: "
                f"{report.breakdown()}{bridged}, "
                f"{report.records / max(report.seconds, 1e-9):,.0f} records/s"
            )
            if report.unsigned_tail:
                print(
                    f"  unsigned tail: {report.unsigned_tail} entries (since #{report.tail_since}),"
                    " within the signed cadence"
                )
            if report.receipt == "pruned":
                print(
                    "  receipt: its checkpoint is in the chain; the entries it signs were pruned "
                    "by retention"
                )
            elif report.receipt == "present":
                print("  receipt: its checkpoint is in the chain and the log extends from it")
    return 0 if report.ok else 1


def _export(args: argparse.Namespace) -> int:
    try:
        since = parse_instant(args.since, "--since")
        until = parse_instant(args.until, "--until")
    except ValueError as exc:
        raise CliError(str(exc)) from None
    chain = _chain(Settings(), signing=True)
    try:
        chunks = chain.export(args.format, since, until)
        if args.output == "-":
            for chunk in chunks:
                sys.stdout.buffer.write(chunk)
            sys.stdout.buffer.flush()
            return 0
        output = Path(args.output)
        temporary = output.with_name(f".{output.name}.partial")
        with temporary.open("wb") as handle:
            for chunk in chunks:
                handle.write(chunk)
        temporary.replace(output)
    finally:
        chain.engine.dispose()
    print(f"exported to {output}", file=sys.stderr)
    return 0


def _verify_export(args: argparse.Namespace) -> int:
    settings = Settings()
    trusted = _trusted(settings, [args.public_key] if args.public_key else None)
    if not trusted:
        raise CliError("no public key: pass --public-key FILE (from 'gateway audit public-key')")
    keys = [key for key, _ in trusted]
    try:
        data = args.file.read_bytes()
    except OSError as exc:
        raise CliError(f"{args.file}: {exc.strerror or exc}") from None
    try:
        known = {key_id(k): k for k in keys}
        reports = [verify_export(data, key, known) for key in keys]
    except ExportFormatError as exc:
        raise CliError(f"{args.file}: {exc}") from None
    report = next((r for r in reports if r.ok), reports[-1])
    print(report.summary())
    for problem in report.problems[1:]:
        print(f"  also: {problem}")
    if report.ok:
        key, source = trusted[reports.index(report)]
        print(f"trusted key {key_id(key)}: {source}")
    else:
        print("keys tried: " + "; ".join(f"{key_id(k)} ({source})" for k, source in trusted))
    return 0 if report.ok else 1


def _public_key(args: argparse.Namespace) -> int:
    try:
        public = existing_signing_key(Settings()).public_key()
    except AuditKeyError as exc:
        raise CliError(str(exc)) from None
    pem = public_key_pem(public)
    if args.output:
        Path(args.output).write_text(pem, "ascii")
        print(f"public key {key_id(public)} written to {args.output}", file=sys.stderr)
    else:
        print(pem, end="")
    return 0


def _prune(args: argparse.Namespace) -> int:
    settings = Settings()
    days = args.days or settings.audit_retention_days
    if days is None:
        raise CliError("--days: required unless GATEWAY_AUDIT_RETENTION_DAYS is set")
    chain = _chain(settings, signing=True)
    try:
        result = chain.prune(days)
    finally:
        chain.engine.dispose()
    if result.removed:
        print(f"removed {result.removed} entries up to #{result.through} (older than {days} days)")
    else:
        print(f"nothing older than {days} days")
    return 0


def _checkpoint(args: argparse.Namespace) -> int:
    if args.action == "export":
        return _checkpoint_export(args)
    chain = _chain(Settings(), signing=True)
    try:
        written = chain.checkpoint()
    finally:
        chain.engine.dispose()
    print(f"signed {written.describe()}" if written else "chain head already signed (or empty)")
    return 0


def _checkpoint_export(args: argparse.Namespace) -> int:
    """Print (or write) the receipt of the newest chained checkpoint; read-only, no key."""
    chain = _chain(Settings(), signing=False)
    try:
        latest = chain.latest_checkpoint()
    finally:
        chain.engine.dispose()
    if latest is None:
        raise CliError("no chained checkpoint yet: run 'gateway audit checkpoint' first")
    text = orjson.dumps(latest.receipt(), option=orjson.OPT_INDENT_2).decode() + "\n"
    if args.output:
        Path(args.output).write_text(text, "utf-8")
        print(f"receipt of {latest.describe()} written to {args.output}", file=sys.stderr)
    else:
        print(text, end="")
    return 0


def register(audit_commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the chain subcommands under `gateway audit`."""
    verify = audit_commands.add_parser("verify", help="verify the whole audit chain")
    verify.add_argument(
        "--public-key",
        type=Path,
        action="append",
        metavar="FILE",
        help="trust this public key for checkpoints (repeatable; default: the local key)",
    )
    verify.add_argument(
        "--since-checkpoint",
        type=Path,
        metavar="RECEIPT",
        help="a receipt from 'gateway audit checkpoint export': fail if the database no longer "
        "holds that checkpoint (rolled back)",
    )
    verify.add_argument("--json", action="store_true", help="print the report as JSON")
    verify.add_argument(
        "--workers",
        type=int,
        default=os.cpu_count() or 1,
        help="processes hashing a large SQLite chain in parallel (default: one per CPU)",
    )
    verify.set_defaults(handler=_verify)

    export = audit_commands.add_parser("export", help="signed CSV / JSON Lines export")
    export.add_argument("--format", required=True, choices=FORMATS)
    export.add_argument("--since", help="from this time (ISO 8601, inclusive)")
    export.add_argument("--until", help="up to this time (exclusive)")
    export.add_argument("-o", "--output", required=True, help="file to write ('-': stdout)")
    export.set_defaults(handler=_export)

    check = audit_commands.add_parser("verify-export", help="verify an export file offline")
    check.add_argument("file", type=Path)
    check.add_argument("--public-key", type=Path, metavar="FILE", help="the gateway's public key")
    check.set_defaults(handler=_verify_export)

    public = audit_commands.add_parser("public-key", help="print the audit public key (PEM)")
    public.add_argument("-o", "--output", help="write it to this file")
    public.set_defaults(handler=_public_key)

    prune = audit_commands.add_parser("prune", help="apply the retention period now")
    prune.add_argument("--days", type=int, help="default: GATEWAY_AUDIT_RETENTION_DAYS")
    prune.set_defaults(handler=_prune)

    checkpoint = audit_commands.add_parser(
        "checkpoint", help="sign the chain head now, or export the newest checkpoint's receipt"
    )
    checkpoint.add_argument(
        "action",
        nargs="?",
        choices=("sign", "export"),
        default="sign",
        help="sign (default): sign the head; export: print the receipt of the newest signed "
        "checkpoint, to keep outside the database",
    )
    checkpoint.add_argument("-o", "--output", help="export: write the receipt to this file")
    checkpoint.set_defaults(handler=_checkpoint)
