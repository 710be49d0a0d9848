"""The last good policy snapshot, kept on local disk so a gateway started during a database
outage can route (and only as that policy allowed) instead of serving from nothing.

The file (`data_dir/policy-snapshot-cache.json`, mode 0600) is replaced atomically whenever a new
policy version is read from the database. It is signed with the gateway's Ed25519 audit
signing key and names the database it came from; a file that is unsigned, altered, signed by
another key, from another database or unreadable is refused (logged) and never served from.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Self

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy.engine import make_url

from compliance.audit.keys import key_id, signature_ok
from compliance.snapshot import PolicySnapshot
from compliance.store import rows
from gateway.settings import Settings

logger = logging.getLogger(__name__)

CACHE_FILE = "policy-snapshot-cache.json"
FORMAT = 1
_DOMAIN = b"residency-gateway policy snapshot cache v1\n"
"""Prefix of the signed bytes: a signature made for anything else never verifies here."""
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class CacheRefused(Exception):
    """The cache file exists but may not be served from (the reason is the message)."""


@dataclass(frozen=True)
class CachedPolicy:
    """A verified cached policy and when it was last read from the database."""

    policy: PolicySnapshot
    written_at: datetime


def database_identity(url: str) -> str:
    """The database URL without its password: which database a cache belongs to."""
    return make_url(url).render_as_string(hide_password=True)


def _dated(value: Any) -> Any:
    return value.isoformat() if isinstance(value, date) else value


def _document(policy: PolicySnapshot, database: str) -> dict[str, Any]:
    regimes = []
    for position, regime in enumerate(policy.regimes):
        rules = [
            {k: _dated(v) for k, v in rows.rule_row(rule, index).items()}
            for index, rule in enumerate(regime.rules)
        ]
        regimes.append({**rows.regime_row(regime, position), "rules": rules})
    regions = []
    for region in policy.regions:
        row = rows.region_row(region, _EPOCH)
        del row["updated_at"]
        regions.append(row)
    tenants = [
        {**rows.tenant_row(t), "api_key_hashes": sorted(t.api_key_hashes)}
        for t in policy.tenants.values()
    ]
    return {
        "format": FORMAT,
        "database": database,
        "version": policy.version,
        "label": policy.label,
        "written_at": datetime.now(UTC).isoformat(),
        "regimes": regimes,
        "regions": regions,
        "tenants": tenants,
    }


def _date(value: Any) -> date | None:
    return None if value is None else date.fromisoformat(str(value))


def _policy(document: dict[str, Any]) -> PolicySnapshot:
    regimes = [
        rows.to_regime(
            r,
            [
                rows.to_rule(
                    {
                        **rule,
                        "effective_from": _date(rule["effective_from"]),
                        "effective_to": _date(rule["effective_to"]),
                    }
                )
                for rule in r["rules"]
            ],
        )
        for r in document["regimes"]
    ]
    regions = [rows.to_region(r) for r in document["regions"]]
    tenants = [rows.to_tenant(t, t["api_key_hashes"]) for t in document["tenants"]]
    return PolicySnapshot(
        int(document["version"]), regimes, regions, tenants, label=str(document["label"])
    )


class SnapshotCache:
    """Reads and writes one signed snapshot cache file."""

    def __init__(self, path: Path, key: Ed25519PrivateKey, database_url: str) -> None:
        self.path = path
        self._key = key
        self._database = database_identity(database_url)

    @classmethod
    def for_settings(cls, settings: Settings, key: Ed25519PrivateKey | None = None) -> Self:
        """The cache of `settings.data_dir`, signed with `key` (default: the audit key)."""
        if key is None:
            from gateway.audit_setup import signing_key

            key = signing_key(settings)
        return cls(settings.data_dir / CACHE_FILE, key, settings.resolved_database_url)

    def save(self, policy: PolicySnapshot) -> None:
        """Replace the cache with `policy` (atomic; fsynced; 0600). Failures are logged only:
        a cache that cannot be written must not stop routing."""
        payload = orjson.dumps(_document(policy, self._database))
        envelope = {
            "format": FORMAT,
            "key_id": key_id(self._key.public_key()),
            "signature": self._key.sign(_DOMAIN + payload).hex(),
            "payload": payload.decode("utf-8"),
        }
        temporary = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(orjson.dumps(envelope))
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, self.path)
        except OSError as exc:
            logger.error("could not write the policy snapshot cache %s: %s", self.path, exc)
            temporary.unlink(missing_ok=True)

    def read(self) -> CachedPolicy | None:
        """The verified cached policy; None if there is no file. Raises CacheRefused."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise CacheRefused(f"unreadable: {exc.strerror or exc}") from None
        try:
            envelope = orjson.loads(raw)
            payload = str(envelope["payload"]).encode("utf-8")
            signature = str(envelope["signature"])
        except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
            raise CacheRefused(f"not a signed snapshot cache ({exc})") from None
        if not signature_ok(self._key.public_key(), signature, _DOMAIN + payload):
            raise CacheRefused(
                "signature does not verify with this gateway's audit signing key "
                "(altered, or written by another key)"
            )
        document = orjson.loads(payload)
        if document.get("format") != FORMAT:
            raise CacheRefused(f"unknown format {document.get('format')!r}")
        if document.get("database") != self._database:
            raise CacheRefused(f"written for another database ({document.get('database')})")
        return CachedPolicy(_policy(document), datetime.fromisoformat(document["written_at"]))

    def load(self) -> CachedPolicy | None:
        """The verified cached policy, or None (absent, or refused: logged as an error)."""
        try:
            return self.read()
        except CacheRefused as exc:
            logger.error(
                "policy snapshot cache %s refused, not serving from it: %s", self.path, exc
            )
            return None
