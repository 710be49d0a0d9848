"""The `gateway` command. Subcommand modules are imported only when their command runs."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from gateway.cli.common import CliError

_MODULE_COMMANDS = {
    "tokens": ("gateway.cli.tokens", "operator tokens for admin and audit APIs"),
    "regions": ("gateway.cli.regions", "manage regions through the admin API"),
    "tenants": ("gateway.cli.tenants", "tenant API keys"),
    "envoy": ("gateway.cli.envoy", "the Envoy data plane: translate, bootstrap"),
}
_AUDIT_MODULES = ("gateway.cli.audit", "gateway.cli.audit_read", "gateway.cli.audit_changes")
_USER_ERRORS = (
    "compliance.store.catalog_file:CatalogError",
    "regions.geoip:GeoIpError",
    "compliance.pack:PolicyPackError",
    "compliance.store.errors:StoreError",
    "compliance.store.errors:StoreUnavailable",
    "gateway.simulator_ports:SimulatedRegionsError",
    "gateway.envoy.serve:EnvoyDataPlaneError",
)


_SERVE_DESCRIPTION = (
    "Run the gateway. Settings come from GATEWAY_* environment variables (see the README's "
    "Configuration table); the options below override them."
)
_DEMO_DESCRIPTION = (
    "Run the gateway on embedded defaults for trying it out: an empty database is seeded with "
    "the default policy pack and the demo catalog (five regions, API key rg-demo-key), a region "
    "simulator runs for every loopback region, and X-Forwarded-For is believed from loopback so "
    "you can pose as clients anywhere. Not for production: use 'gateway serve'."
)


def _serve(args: argparse.Namespace, demo: bool) -> int:
    from gateway.server import serve, settings_to_environment
    from gateway.settings import LOOPBACK_NETWORKS, Settings

    overrides: dict[str, str] = {}
    for name in ("host", "port", "workers", "database_url", "data_plane"):
        value = getattr(args, name, None)
        if value is not None:
            overrides[name] = str(value)
    trusted = list(args.trust_proxy or [])
    if demo:
        overrides["simulate_regions"] = "true"
        trusted = trusted or list(LOOPBACK_NETWORKS)
    elif getattr(args, "simulate_regions", False):
        overrides["simulate_regions"] = "true"
    if trusted:
        overrides["trusted_proxies"] = ",".join(trusted)
    settings_to_environment(overrides)
    settings = Settings()
    if demo:
        print(
            f"Residency Gateway demo on http://{settings.host}:{settings.port} "
            "(API key: rg-demo-key; X-Forwarded-For trusted from loopback)\n"
            "  admin token:   ./dev gateway tokens create --name you --role admin\n"
            "  auditor token: ./dev gateway tokens create --name you --role auditor "
            f"(console: http://{settings.host}:{settings.port}/console)",
            flush=True,
        )
    serve(settings, getattr(args, "simulator_ports", None))
    return 0


def _simulator_ports(text: str) -> Any:
    from gateway.simulator_ports import parse_simulator_ports

    return parse_simulator_ports(text)


def _add_simulator_ports(sub: argparse.ArgumentParser) -> None:
    sub.add_argument(
        "--simulator-ports",
        dest="simulator_ports",
        type=_simulator_ports,
        metavar="BASE|auto",
        help="ports of the simulated regions when the demo seeds a new database: consecutive "
        "from BASE, or 'auto' for free ones (default: the catalog's, 9101-9105). An existing "
        "database keeps its catalog's ports; a different BASE is then an error",
    )


def _serve_plain(args: argparse.Namespace) -> int:
    return _serve(args, demo=False)


def _serve_demo(args: argparse.Namespace) -> int:
    return _serve(args, demo=True)


def _explain(args: argparse.Namespace) -> int:
    from gateway.cli import explain as cli_explain

    return cli_explain.run(args)


def _db(args: argparse.Namespace) -> int:
    from compliance.store.migrate import upgrade
    from gateway.settings import Settings

    settings = Settings()
    if args.db_command == "upgrade":
        upgrade(settings.resolved_database_url)
        print(f"database at head: {settings.resolved_database_url}")
    return 0


def _register(module: str, commands: Any) -> None:
    importlib.import_module(module).register(commands)


_LOCATION_HELP = """\
Every command finds the gateway's database and data directory the same way, wherever it runs:
the options below, else GATEWAY_DATABASE_URL / GATEWAY_DATA_DIR in the environment, else the
config file (GATEWAY_CONFIG, default ~/.config/residency-gateway/gateway.env), else the default
data directory ~/.local/share/residency-gateway. Only serve, demo and db upgrade create a
database; every other command refuses to run without one."""


def _location_options() -> argparse.ArgumentParser:
    """The options that say where the gateway's database is (before the command)."""
    options = argparse.ArgumentParser(add_help=False)
    options.add_argument("--config", metavar="FILE", help="settings file (GATEWAY_CONFIG)")
    options.add_argument(
        "--data-dir", metavar="DIR", help="the gateway's data directory (GATEWAY_DATA_DIR)"
    )
    options.add_argument(
        "--database-url",
        dest="global_database_url",
        metavar="URL",
        help="the gateway's database (GATEWAY_DATABASE_URL)",
    )
    return options


_LOCATION_VARIABLES = {
    "config": "GATEWAY_CONFIG",
    "data_dir": "GATEWAY_DATA_DIR",
    "global_database_url": "GATEWAY_DATABASE_URL",
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The argument parser; with `only`, just that command's module is imported in full."""
    parser = argparse.ArgumentParser(
        prog="gateway",
        description="Residency Gateway",
        epilog=_LOCATION_HELP,
        parents=[_location_options()],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    for name, helptext, description in (
        ("serve", "run the gateway", _SERVE_DESCRIPTION),
        (
            "demo",
            "run the gateway with simulated regions, loopback trusted as proxy",
            _DEMO_DESCRIPTION,
        ),
    ):
        sub = commands.add_parser(name, help=helptext, description=description)
        sub.add_argument("--host", help="listen address (GATEWAY_HOST; default 127.0.0.1)")
        sub.add_argument("--port", type=int, help="listen port (GATEWAY_PORT; default 8080)")
        sub.add_argument("--workers", type=int, help="worker processes (one per core)")
        sub.add_argument(
            "--data-plane",
            dest="data_plane",
            choices=("python", "envoy"),
            help="who carries inference requests (GATEWAY_DATA_PLANE; default python): envoy "
            "runs a supervised Envoy on the listen address, deciding inside it",
        )
        sub.add_argument(
            "--database-url",
            dest="database_url",
            help="SQLAlchemy URL (GATEWAY_DATABASE_URL; default: SQLite in the data dir)",
        )
        sub.add_argument(
            "--trust-proxy",
            action="append",
            metavar="CIDR",
            help="network whose X-Forwarded-For is believed (repeatable)"
            + ("; default for the demo: loopback" if name == "demo" else ""),
        )
        if name == "demo":
            _add_simulator_ports(sub)
        if name == "serve":
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
    for name, (module, helptext) in _MODULE_COMMANDS.items():
        if only in (None, name):
            _register(module, commands)
        else:
            commands.add_parser(name, help=helptext)
    audit = commands.add_parser("audit", help="the tamper-evident routing log")
    if only in (None, "audit"):
        audit_commands = audit.add_subparsers(dest="audit_command", required=True)
        for module in _AUDIT_MODULES:
            _register(module, audit_commands)
    return parser


def _is_user_error(exc: BaseException) -> bool:
    """True for the project's own user-facing errors (their modules are loaded if raised)."""
    if isinstance(exc, CliError):
        return True
    for path in _USER_ERRORS:
        module, _, name = path.partition(":")
        loaded = sys.modules.get(module)
        if loaded is not None and isinstance(exc, getattr(loaded, name)):
            return True
    return False


def _validation_message(exc: BaseException) -> str | None:
    """An invalid setting as one line naming its environment variable (None: not one)."""
    settings = sys.modules.get("gateway.settings")
    pydantic = sys.modules.get("pydantic")
    if settings is None or pydantic is None or not isinstance(exc, pydantic.ValidationError):
        return None
    if exc.title != settings.Settings.__name__:
        first = exc.errors()[0]
        return f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}"
    message: str = settings.setting_error(exc)
    return message


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `gateway` console script."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    location, rest = _location_options().parse_known_args(arguments)
    command = next((a for a in rest if not a.startswith("-")), None)
    args = build_parser(only=command or "").parse_args(arguments)
    with _located(location):
        return _run(args)


@contextlib.contextmanager
def _located(location: argparse.Namespace) -> Iterator[None]:
    """The location flags as GATEWAY_* variables while the command runs: they win over the
    environment and the config file, and reach `serve`'s worker processes."""
    saved = {variable: os.environ.get(variable) for variable in _LOCATION_VARIABLES.values()}
    for option, variable in _LOCATION_VARIABLES.items():
        value = getattr(location, option)
        if value is not None:
            os.environ[variable] = value
    try:
        yield
    finally:
        for variable, previous in saved.items():
            if previous is None:
                os.environ.pop(variable, None)
            else:
                os.environ[variable] = previous


def _run(args: argparse.Namespace) -> int:
    try:
        handler: Callable[[argparse.Namespace], int] = args.handler
        return handler(args)
    except BrokenPipeError:  # output piped into `head` and the like
        sys.stderr.close()
        return 0
    except Exception as exc:
        message = str(exc) if _is_user_error(exc) else _validation_message(exc)
        if message is None:
            raise
        print(f"gateway: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
