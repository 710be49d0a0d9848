"""`gateway explain`: a routing decision for given facts, forwarding nothing."""

from __future__ import annotations

import argparse
import ipaddress
from datetime import UTC, datetime

import orjson

from compliance.store.policy_store import PolicyStore
from gateway.cli.common import CliError
from gateway.cli.database import migrated_database_url
from gateway.errors import ApiError
from gateway.explain_text import explain_text
from gateway.intake import (
    check_model,
    new_request_id,
    parse_data_class_header,
    parse_subject_country,
)
from gateway.routing.decide import decide
from gateway.routing.facts import RequestFacts
from gateway.routing.snapshot import RoutingSnapshot
from gateway.settings import Settings
from regions.geoip import GeoIpLocator, bundled_database_path


def run(args: argparse.Namespace) -> int:
    """Print the decision for the facts given on the command line."""
    settings = Settings()
    try:
        subject = parse_subject_country(args.subject_country)
        data_class = parse_data_class_header(args.data_class)
        model = None if args.model is None else check_model(args.model)
    except ApiError as exc:
        message = exc.message.replace("X-Data-Class", "--data-class").replace("'model'", "--model")
        raise CliError(message.replace("X-Data-Subject-Country", "--subject-country")) from None
    if args.ip is not None:
        try:
            ipaddress.ip_address(args.ip)
        except ValueError:
            raise CliError(f"--ip: {args.ip!r} is not an IP address") from None
    store = PolicyStore(migrated_database_url(settings))
    try:
        policy = store.load_snapshot()
    finally:
        store.close()
    if args.tenant is not None and args.tenant not in policy.tenants:
        known = ", ".join(sorted(policy.tenants)) or "none"
        raise CliError(f"--tenant: no tenant {args.tenant!r} (known: {known})")
    with GeoIpLocator(settings.geoip_database or bundled_database_path()) as locator:
        location = locator.locate(args.ip) if args.ip else None
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
        model=model,
    )
    decision = decide(facts, RoutingSnapshot(policy, health_known=False))
    if args.json:
        print(orjson.dumps(decision.to_dict(), option=orjson.OPT_INDENT_2).decode())
    else:
        print(explain_text(decision))
        print(
            "note: offline, region health is unknown (active regions count as healthy); "
            "POST /v1/residency/explain to the running gateway gives the live choice"
        )
    return 0
