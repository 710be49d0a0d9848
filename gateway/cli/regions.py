"""`gateway regions`: manage GPU regions through a running gateway's admin API.

apply (plan, then change), put (create or replace one), patch (status, weight), list (with
each region's live health and in-flight requests), drain (optionally waiting for in-flight
work), resume (active again), delete. Talks HTTP to `GATEWAY_ADMIN_URL` with
`GATEWAY_ADMIN_TOKEN`.
Exit status: 0 done, 2 error (one line on stderr), 3 `drain --wait` ran out of time.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from compliance.store.admin_documents import READ_ONLY_FIELDS, region_document
from compliance.store.catalog_file import load_catalog
from gateway.cli.admin_client import AdminClient, AdminError
from gateway.cli.common import CliError
from regions.catalog import RegionStatus

EXIT_WAIT_EXPIRED = 3
POLL_INTERVAL_S = 0.2


def _client() -> AdminClient:
    return AdminClient.from_settings()


def _comma_list(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def _without_state(document: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in document.items() if k not in READ_ONLY_FIELDS}


# -- apply ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Step:
    """One line of a plan: what happens to one region, and why."""

    action: str  # create, update, unchanged, delete, keep
    region_id: str
    detail: str = ""
    body: dict[str, Any] | None = None
    etag: str | None = None


_SYMBOLS = {"create": "+", "update": "~", "unchanged": "=", "delete": "-", "keep": "!"}
_PAST = {"create": "created", "update": "updated", "delete": "deleted"}


def _differences(current: dict[str, Any], desired: dict[str, Any]) -> str:
    changed = [k for k in desired if current.get(k) != desired[k]]
    return ", ".join(f"{k}: {_show(current.get(k))} -> {_show(desired[k])}" for k in changed)


def _show(value: Any) -> str:
    return orjson.dumps(value).decode() if isinstance(value, list | dict) else str(value)


def plan(desired: list[dict[str, Any]], current: list[dict[str, Any]], prune: bool) -> list[Step]:
    """What applying `desired` to `current` (documents with etags) would do."""
    existing = {d["id"]: d for d in current}
    wanted = {d["id"] for d in desired}
    steps: list[Step] = []
    for document in desired:
        now = existing.get(document["id"])
        if now is None:
            steps.append(Step("create", document["id"], body=document))
            continue
        diff = _differences(_without_state(now), document)
        action = "update" if diff else "unchanged"
        steps.append(Step(action, document["id"], diff, document, now.get("etag")))
    for region_id in sorted(set(existing) - wanted):
        if prune:
            steps.append(Step("delete", region_id, etag=existing[region_id].get("etag")))
        else:
            steps.append(Step("keep", region_id, "not in the file; kept (use --prune to delete)"))
    return steps


def _print_plan(steps: list[Step]) -> None:
    for step in steps:
        action = "not managed" if step.action == "keep" else step.action
        line = f"  {_SYMBOLS[step.action]} {action} {step.region_id}"
        print(f"{line}: {step.detail}" if step.detail else line)
    counts = {a: sum(1 for s in steps if s.action == a) for a in _SYMBOLS}
    print(
        f"Plan: {counts['create']} to create, {counts['update']} to update, "
        f"{counts['delete']} to delete, {counts['unchanged']} unchanged."
    )


def _execute(client: AdminClient, steps: list[Step]) -> None:
    todo = [s for s in steps if s.action in ("create", "update", "delete")]
    for done, step in enumerate(todo):
        try:
            if step.action == "delete":
                _print_warnings(
                    client.request("DELETE", f"/admin/regions/{step.region_id}", if_match=step.etag)
                )
            else:
                client.request(
                    "PUT", f"/admin/regions/{step.region_id}", step.body, if_match=step.etag
                )
        except AdminError as exc:
            raise CliError(
                f"{step.action} {step.region_id} failed after {done} of {len(todo)} changes: {exc}"
            ) from None
        print(f"{_PAST[step.action]} {step.region_id}")
    print(f"Apply complete: {len(todo)} changed.")


def _apply(args: argparse.Namespace) -> int:
    regions, tenants = load_catalog(Path(args.file))
    if tenants:
        print(f"note: {args.file}: tenants are not applied by `gateway regions apply`")
    desired = [region_document(r) for r in regions]
    client = _client()
    current = client.request("GET", "/admin/regions")["data"]
    steps = plan(desired, current, args.prune)
    _print_plan(steps)
    if args.dry_run:
        print("Dry run: nothing changed.")
        return 0
    if not any(s.action in ("create", "update", "delete") for s in steps):
        print("Nothing to change.")
        return 0
    _execute(client, steps)
    return 0


# -- put, list, drain, delete --------------------------------------------------------------


def _put(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {
        "id": args.id,
        "name": args.name,
        "country": args.country,
        "latitude": args.latitude,
        "longitude": args.longitude,
        "base_url": args.base_url,
        "models": _comma_list(args.models),
        "attestations": _comma_list(args.attestations),
        "weight": args.weight,
        "status": args.status,
    }
    result = _client().request("PUT", f"/admin/regions/{args.id}", body, if_match=args.if_match)
    print(f"{result['result']} region {args.id} (etag {result['etag']})")
    return 0


def health_cell(health: dict[str, Any] | None) -> str:
    """`up`, `down (why)` or `unknown` (not probed yet) for the HEALTH column."""
    healthy = (health or {}).get("healthy")
    if healthy is None:
        return "unknown"
    detail = health.get("detail") if health else None
    word = "up" if healthy else "down"
    return f"{word} ({detail})" if detail else word


def _list(args: argparse.Namespace) -> int:
    regions = _client().request("GET", "/admin/regions")["data"]
    if args.json:
        print(orjson.dumps(regions, option=orjson.OPT_INDENT_2).decode())
        return 0
    url_width = max([len("BASE URL"), *(len(r["base_url"]) for r in regions)])
    print(
        f"{'ID':<20} {'STATUS':<9} {'WEIGHT':>6} {'COUNTRY':<7} {'IN-FLIGHT':>9}  "
        f"{'BASE URL':<{url_width}}  HEALTH"
    )
    for r in regions:
        print(
            f"{r['id']:<20} {r['status']:<9} {r['weight']:>6} {r['country']:<7} "
            f"{r['in_flight']:>9}  {r['base_url']:<{url_width}}  {health_cell(r.get('health'))}"
        )
    return 0


def _missing(exc: AdminError, args: argparse.Namespace) -> bool:
    if exc.status == 404 and args.missing_ok:
        print(f"region {args.id} does not exist; nothing to do")
        return True
    return False


def _drain(args: argparse.Namespace) -> int:
    client = _client()
    path = f"/admin/regions/{args.id}"
    try:
        client.request("PATCH", path, {"status": RegionStatus.DRAINING.value})
    except AdminError as exc:
        if _missing(exc, args):
            return 0
        raise
    print(f"region {args.id} is draining: it takes no new requests")
    if args.wait is None:
        return 0
    return _wait_drained(client, path, args.id, args.wait)


def _wait_drained(client: AdminClient, path: str, region_id: str, bound: float) -> int:
    """Poll until the gateway routes with the region draining and has nothing in flight."""
    deadline = time.monotonic() + bound
    while True:
        try:
            state = client.request("GET", path)
        except AdminError as exc:
            if exc.status == 404:
                print(f"region {region_id} is gone")
                return 0
            raise
        serving = state["serving_status"] in (None, RegionStatus.DRAINING, RegionStatus.DISABLED)
        if serving and state["in_flight"] == 0:
            print(f"region {region_id} drained: no requests in flight")
            return 0
        if time.monotonic() >= deadline:
            print(
                f"gateway: region {region_id} still has {state['in_flight']} request(s) in "
                f"flight after {bound:g}s",
                file=sys.stderr,
            )
            return EXIT_WAIT_EXPIRED
        time.sleep(POLL_INTERVAL_S)


def _resume(args: argparse.Namespace) -> int:
    _client().request("PATCH", f"/admin/regions/{args.id}", {"status": RegionStatus.ACTIVE.value})
    print(f"region {args.id} is active: it takes new requests")
    return 0


def _patch(args: argparse.Namespace) -> int:
    body = {k: v for k, v in (("status", args.status), ("weight", args.weight)) if v is not None}
    if not body:
        raise CliError("nothing to change: give --status, --weight or both")
    path = f"/admin/regions/{args.id}"
    result = _client().request("PATCH", path, body, if_match=args.if_match)
    now = ", ".join(f"{k} {result[k]}" for k in body)
    print(f"{result['result']} region {args.id}: {now} (etag {result['etag']})")
    return 0


def _print_warnings(reply: dict[str, Any]) -> None:
    """Print the warnings of a DELETE answer (what deleting a region did to tenants naming it)."""
    for warning in reply.get("warnings", []):
        print(f"warning: {warning}", file=sys.stderr)


def _delete(args: argparse.Namespace) -> int:
    try:
        _print_warnings(
            _client().request("DELETE", f"/admin/regions/{args.id}", if_match=args.if_match)
        )
    except AdminError as exc:
        if _missing(exc, args):
            return 0
        raise
    print(f"deleted region {args.id}")
    return 0


def register(commands: Any) -> None:
    """Add `regions apply|put|patch|list|drain|resume|delete` to the top-level subcommands."""
    regions = commands.add_parser("regions", help="GPU regions, through the admin API")
    sub = regions.add_subparsers(dest="regions_command", required=True)
    apply = sub.add_parser("apply", help="make the regions match a catalog file (plan first)")
    apply.add_argument("-f", "--file", required=True, help="catalog YAML with a regions list")
    apply.add_argument("--prune", action="store_true", help="delete regions not in the file")
    apply.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
    apply.set_defaults(handler=_apply)
    put = sub.add_parser("put", help="create or replace one region")
    put.add_argument("id")
    put.add_argument("--name", required=True)
    put.add_argument("--country", required=True, help="ISO 3166-1 alpha-2 code")
    put.add_argument("--latitude", required=True, type=float)
    put.add_argument("--longitude", required=True, type=float)
    put.add_argument("--base-url", required=True, help="http(s) URL of the region's API")
    put.add_argument("--models", required=True, help="comma-separated model names")
    put.add_argument("--attestations", default="", help="comma-separated attestations")
    put.add_argument("--weight", type=int, default=100, help="0-100 (default 100)")
    put.add_argument("--status", default=RegionStatus.ACTIVE.value, help="active (default), ...")
    put.add_argument("--if-match", help="only if the region's ETag is still this")
    put.set_defaults(handler=_put)
    patch = sub.add_parser("patch", help="change a region's status or weight, nothing else")
    patch.add_argument("id")
    patch.add_argument("--status", help="active, draining or disabled")
    patch.add_argument("--weight", type=int, help="0-100")
    patch.add_argument("--if-match", help="only if the region's ETag is still this")
    patch.set_defaults(handler=_patch)
    listing = sub.add_parser(
        "list", help="list regions with status, in-flight requests and live health"
    )
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(handler=_list)
    drain = sub.add_parser("drain", help="stop new requests to a region")
    drain.add_argument("id")
    drain.add_argument("--wait", type=float, metavar="SECONDS", help="wait for in-flight work")
    drain.add_argument("--missing-ok", action="store_true", help="succeed if it does not exist")
    drain.set_defaults(handler=_drain)
    resume = sub.add_parser("resume", help="take new requests again (after drain)")
    resume.add_argument("id")
    resume.set_defaults(handler=_resume)
    delete = sub.add_parser("delete", help="remove a region")
    delete.add_argument("id")
    delete.add_argument("--if-match", help="only if the region's ETag is still this")
    delete.add_argument("--missing-ok", action="store_true", help="succeed if it does not exist")
    delete.set_defaults(handler=_delete)
