"""`gateway envoy translate|bootstrap|ship-records`: the Envoy configuration, printed offline,
and the shipper of its access log into the routing log."""

from __future__ import annotations

import argparse
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import yaml

from compliance.snapshot import PolicySnapshot
from gateway.cli.database import migrated_database_url
from gateway.settings import Settings

if TYPE_CHECKING:
    from gateway.envoy.translate import EnvoyOptions


def envoy_options(settings: Settings, args: argparse.Namespace) -> EnvoyOptions:
    """The translation options: timeouts and health checks from settings, listener from flags."""
    from gateway.envoy.translate import EnvoyOptions

    return EnvoyOptions(
        listener_address=args.listen_host,
        listener_port=args.listen_port,
        connect_timeout=settings.upstream_connect_timeout,
        stream_idle_timeout=settings.upstream_read_timeout,
        health_check_path=settings.health_path,
        health_check_interval=settings.health_interval,
        trusted_hops=args.trusted_hops,
    )


def _policy(settings: Settings, catalog: Path | None) -> PolicySnapshot:
    if catalog is not None:
        from compliance.pack import load_pack
        from compliance.store.catalog_file import load_catalog

        label, regimes = load_pack()
        regions, tenants = load_catalog(catalog)
        return PolicySnapshot(0, regimes, regions, tenants, label=f"{label} + {catalog.name}")
    from compliance.store.policy_store import PolicyStore

    store = PolicyStore(migrated_database_url(settings))
    try:
        return store.load_snapshot()
    finally:
        store.close()


def _print(data: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode())
    else:
        print(yaml.safe_dump(data, sort_keys=False), end="")


def _translate(args: argparse.Namespace) -> int:
    from gateway.envoy.translate import translate

    settings = Settings()
    policy = _policy(settings, args.catalog)
    _print(translate(policy, envoy_options(settings, args)).to_dict(), args.json)
    return 0


def _bootstrap(args: argparse.Namespace) -> int:
    from gateway.envoy.bootstrap import BootstrapOptions, bootstrap_dict

    options = BootstrapOptions(
        node_id=args.node_id or socket.gethostname(),
        xds_host=args.xds_host,
        xds_port=args.xds_port,
        admin_port=args.admin_port,
    )
    _print(bootstrap_dict(options), args.json)
    return 0


def _ship_records(args: argparse.Namespace) -> int:
    import signal
    import threading

    from gateway.envoy.shipper_setup import build_records_shipper

    stop = threading.Event()
    if args.once:
        stop.set()
    else:  # first: a stop asked for while starting up still ships what is written
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop.set())
    settings = Settings()
    migrated_database_url(settings)  # refuses a missing database in one line
    shipper = build_records_shipper(settings, args.log)
    shipper.run(stop)
    counts = shipper.counts
    print(
        f"shipped {counts.lines} lines: {counts.stored} records stored, {counts.skipped} "
        f"without a decision, {counts.rejected} rejected"
    )
    return 0


def register(commands: Any) -> None:
    """Add `envoy translate|bootstrap|ship-records` to the top-level subcommands."""
    envoy = commands.add_parser("envoy", help="the Envoy data plane: translate, bootstrap")
    sub = envoy.add_subparsers(dest="envoy_command", required=True)
    translate = sub.add_parser(
        "translate", help="print the Envoy resources the policy compiles to (starts nothing)"
    )
    translate.add_argument(
        "--catalog", type=Path, help="catalog YAML to translate instead of the database's policy"
    )
    translate.add_argument("--listen-host", default="0.0.0.0", help="Envoy listener address")
    translate.add_argument("--listen-port", type=int, default=10000, help="Envoy listener port")
    translate.add_argument(
        "--trusted-hops",
        type=int,
        default=0,
        help="proxies in front of Envoy whose X-Forwarded-For entries are believed",
    )
    translate.add_argument("--json", action="store_true", help="JSON instead of YAML")
    translate.set_defaults(handler=_translate)
    bootstrap = sub.add_parser("bootstrap", help="print the bootstrap for an Envoy run elsewhere")
    bootstrap.add_argument("--node-id", help="this Envoy's node id (default: the host name)")
    bootstrap.add_argument("--xds-host", default="127.0.0.1", help="the control plane's address")
    bootstrap.add_argument("--xds-port", type=int, default=18000, help="the control plane's port")
    bootstrap.add_argument(
        "--admin-port", type=int, default=9901, help="Envoy admin port (on loopback)"
    )
    bootstrap.add_argument("--json", action="store_true", help="JSON instead of YAML")
    bootstrap.set_defaults(handler=_bootstrap)
    ship = sub.add_parser(
        "ship-records", help="ship Envoy's access log into the routing log (until stopped)"
    )
    ship.add_argument(
        "--log", type=Path, help="the access-log file (default: GATEWAY_ENVOY_ACCESS_LOG)"
    )
    ship.add_argument("--once", action="store_true", help="ship what is written, then exit")
    ship.set_defaults(handler=_ship_records)
