"""The `gateway` command: serve, demo, explain, db."""

from __future__ import annotations

import argparse
import ipaddress
import sys
from collections.abc import Callable, Sequence

import orjson
from pydantic import ValidationError

from compliance.pack import PolicyPackError
from compliance.store.catalog_file import CatalogError
from compliance.store.errors import StoreError
from compliance.store.migrate import upgrade
from compliance.store.policy_store import PolicyStore, StoreUnavailable
from gateway import cli_audit, cli_audit_read, cli_regions, cli_tokens
from gateway.cli_common import CliError
from gateway.explain_text import explain_text
from gateway.intake import (
    RequestRejected,
    new_request_id,
    parse_data_class_header,
    parse_subject_country,
)
from gateway.routing.decide import decide
from gateway.routing.facts import RequestFacts
from gateway.routing.snapshot import RoutingSnapshot
from gateway.settings import LOOPBACK_NETWORKS, Settings
from regions.geoip import GeoIpError, GeoIpLocator, bundled_database_path


def _serve(args: argparse.Namespace, demo: bool) -> int:
    from gateway.server import serve, settings_to_environment

    overrides: dict[str, str] = {}
    for name in ("host", "port", "workers", "database_url"):
        value = getattr(args, name, None)
        if value is not None:
            overrides[name] = str(value)
    trusted = list(args.trust_proxy or [])
    if demo:
        overrides["simulate_regions"] = "true"
        trusted = trusted or list(LOOPBACK_NETWORKS)
    elif args.simulate_regions:
        overrides["simulate_regions"] = "true"
    if trusted:
        overrides["trusted_proxies"] = ",".join(trusted)
    settings_to_environment(overrides)
    settings = Settings()
    if demo:
        print(
            f"Residency Gateway demo on http://{settings.host}:{settings.port} "
            "(API key: rg-demo-key; X-Forwarded-For trusted from loopback)",
            flush=True,
        )
    serve(settings)
    return 0


def _serve_plain(args: argparse.Namespace) -> int:
    return _serve(args, demo=False)


def _serve_demo(args: argparse.Namespace) -> int:
    return _serve(args, demo=True)


def _explain(args: argparse.Namespace) -> int:
    settings = Settings()
    try:
        subject = parse_subject_country(args.subject_country)
        data_class = parse_data_class_header(args.data_class)
    except RequestRejected as exc:
        raise CliError(exc.message) from None
    if args.ip is not None:
        try:
            ipaddress.ip_address(args.ip)
        except ValueError:
            raise CliError(f"--ip: {args.ip!r} is not an IP address") from None
    store = PolicyStore(settings.resolved_database_url)
    try:
        policy = store.load_snapshot()
    finally:
        store.close()
    if args.tenant is not None and args.tenant not in policy.tenants:
        known = ", ".join(sorted(policy.tenants)) or "none"
        raise CliError(f"--tenant: no tenant {args.tenant!r} (known: {known})")
    with GeoIpLocator(settings.geoip_database or bundled_database_path()) as locator:
        location = locator.locate(args.ip) if args.ip else None
    from datetime import UTC, datetime

    coordinates = None
    if location and location.latitude is not None and location.longitude is not None:
        coordinates = (location.latitude, location.longitude)
    facts = RequestFacts(
        request_id=new_request_id(),
        at=datetime.now(UTC),
        tenant_id=args.tenant,
        client_ip=args.ip,
        client_country=location.country if location else None,
        client_coordinates=coordinates,
        subject_country=subject,
        data_class=data_class,
        model=args.model,
    )
    decision = decide(facts, RoutingSnapshot(policy))
    if args.json:
        print(orjson.dumps(decision.to_dict(), option=orjson.OPT_INDENT_2).decode())
    else:
        print(explain_text(decision))
    return 0


def _db(args: argparse.Namespace) -> int:
    settings = Settings()
    if args.db_command == "upgrade":
        upgrade(settings.resolved_database_url)
        print(f"database at head: {settings.resolved_database_url}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for tests and docs)."""
    parser = argparse.ArgumentParser(prog="gateway", description="Residency Gateway")
    commands = parser.add_subparsers(dest="command", required=True)
    for name, helptext in (
        ("serve", "run the gateway"),
        ("demo", "run the gateway with simulated regions, loopback trusted as proxy"),
    ):
        sub = commands.add_parser(name, help=helptext)
        sub.add_argument("--host")
        sub.add_argument("--port", type=int)
        sub.add_argument("--workers", type=int, help="worker processes (one per core)")
        sub.add_argument("--database-url", dest="database_url")
        sub.add_argument(
            "--trust-proxy",
            action="append",
            metavar="CIDR",
            help="network whose X-Forwarded-For is believed (repeatable)",
        )
        sub.add_argument(
            "--simulate-regions",
            action="store_true",
            help="start a simulator for every loopback region",
        )
        sub.set_defaults(handler=_serve_demo if name == "demo" else _serve_plain)
    explain = commands.add_parser("explain", help="explain a routing decision, forwarding nothing")
    explain.add_argument("--ip", help="client address")
    explain.add_argument("--subject-country", help="declared data-subject country (ISO code)")
    explain.add_argument("--data-class", help="public, personal (default), special, health, ...")
    explain.add_argument("--tenant", help="tenant id")
    explain.add_argument("--model", help="model name")
    explain.add_argument("--json", action="store_true", help="print the decision as JSON")
    explain.set_defaults(handler=_explain)
    db = commands.add_parser("db", help="database maintenance")
    db.add_argument("db_command", choices=["upgrade"])
    db.set_defaults(handler=_db)
    cli_tokens.register(commands)
    audit = commands.add_parser("audit", help="the tamper-evident routing log")
    audit_commands = audit.add_subparsers(dest="audit_command", required=True)
    cli_audit.register(audit_commands)
    cli_audit_read.register(audit_commands)
    cli_regions.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `gateway` console script."""
    args = build_parser().parse_args(argv)
    try:
        handler: Callable[[argparse.Namespace], int] = args.handler
        return handler(args)
    except (
        CliError,
        CatalogError,
        GeoIpError,
        PolicyPackError,
        StoreError,
        StoreUnavailable,
    ) as exc:
        print(f"gateway: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into `head` and the like
        sys.stderr.close()
        return 0
    except ValidationError as exc:
        first = exc.errors()[0]
        print(f"gateway: error: setting {first['loc'][0]}: {first['msg']}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
