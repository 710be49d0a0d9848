"""First-start preparation: database schema, default policy pack, demo catalog, secrets."""

from __future__ import annotations

import logging
import os
import secrets

from compliance.model import Tenant
from compliance.pack import load_pack
from compliance.store.catalog_file import load_catalog
from compliance.store.migrate import upgrade
from compliance.store.policy_store import PolicyStore
from gateway.settings import Settings
from gateway.simulator_ports import SimulatorPorts, assign_ports
from regions.catalog import Region

logger = logging.getLogger(__name__)

HMAC_KEY_FILE = "client-ip-hmac.key"


def prepare_database(settings: Settings, simulator_ports: SimulatorPorts | None = None) -> bool:
    """Migrate to the latest schema; seed the default pack (and demo catalog) if empty.

    `simulator_ports` moves the seeded catalog's simulated (loopback) regions to those ports.
    Returns True if the database was seeded now.
    """
    url = settings.resolved_database_url
    upgrade(url)
    label, regimes = load_pack()
    regions: tuple[Region, ...] = ()
    tenants: tuple[Tenant, ...] = ()
    if settings.seed_catalog is not None:
        regions, tenants = load_catalog(settings.seed_catalog)
    elif settings.seed_demo_catalog:
        regions, tenants = load_catalog()
    if simulator_ports is not None:
        regions = assign_ports(regions, simulator_ports)
    store = PolicyStore(url)
    try:
        seeded = store.seed_if_empty(label, regimes, regions, tenants)
    finally:
        store.close()
    if seeded:
        logger.info("seeded the policy database with %s (%d regimes)", label, len(regimes))
    return seeded


def hmac_key(settings: Settings) -> bytes:
    """The client-IP HMAC key: from settings, else a random key kept in `data_dir`."""
    if settings.audit_hmac_key is not None:
        return settings.audit_hmac_key.get_secret_value().encode("utf-8")
    path = settings.data_dir / HMAC_KEY_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_hex(32))
    return path.read_text("ascii").strip().encode("ascii")
