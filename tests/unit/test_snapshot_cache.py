"""The signed policy snapshot cache: an exact round trip of a real policy, and every file that
was not written by this gateway for this database refused."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from compliance.pack import load_pack
from compliance.snapshot import PolicySnapshot
from compliance.store.catalog_file import load_catalog
from compliance.store.migrate import upgrade
from compliance.store.policy_store import PolicyStore
from gateway.snapshot_cache import CacheRefused, SnapshotCache

KEY = Ed25519PrivateKey.generate()


@pytest.fixture
def policy(tmp_path: Path) -> PolicySnapshot:
    """The default pack and the demo catalog, as read back from a real SQLite database."""
    url = f"sqlite:///{tmp_path}/policy.db"
    upgrade(url)
    store = PolicyStore(url)
    try:
        store.seed_if_empty(*load_pack(), *load_catalog())
        return store.load_snapshot()
    finally:
        store.close()


def _cache(tmp_path: Path, key: Ed25519PrivateKey = KEY, db: str = "postgresql://u:pw@h/db") -> Any:
    return SnapshotCache(tmp_path / "cache" / "policy-snapshot-cache.json", key, db)


def test_round_trip_is_exact_and_private(policy: PolicySnapshot, tmp_path: Path) -> None:
    cache = _cache(tmp_path)
    assert cache.read() is None and cache.load() is None  # no file yet
    cache.save(policy)
    assert cache.path.stat().st_mode & 0o777 == 0o600
    assert b"pw" not in cache.path.read_bytes()  # the database password is not kept
    cached = cache.read()
    assert cached is not None
    loaded = cached.policy
    assert (loaded.version, loaded.label) == (policy.version, policy.label)
    assert loaded.regimes == policy.regimes and any(r.rules for r in loaded.regimes)
    assert loaded.regions == policy.regions
    assert dict(loaded.tenants) == dict(policy.tenants)
    assert dict(loaded.tenant_by_key_hash) == dict(policy.tenant_by_key_hash)
    assert [p.name for p in cache.path.parent.iterdir()] == [cache.path.name]  # no temp left


def _edit_payload(envelope: dict[str, Any]) -> None:
    document = json.loads(envelope["payload"])
    document["regions"][0]["attestations"] = ["eu_us_dpf"]
    envelope["payload"] = json.dumps(document)


def _unsigned(envelope: dict[str, Any]) -> None:
    del envelope["signature"]


def _other_signature(envelope: dict[str, Any]) -> None:
    envelope["signature"] = Ed25519PrivateKey.generate().sign(b"x").hex()


@pytest.mark.parametrize(
    ("tamper", "reason"),
    [
        (_edit_payload, "signature does not verify"),
        (_unsigned, "not a signed snapshot cache"),
        (_other_signature, "signature does not verify"),
    ],
)
def test_altered_file_is_refused(
    policy: PolicySnapshot,
    tmp_path: Path,
    tamper: Callable[[dict[str, Any]], None],
    reason: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    cache = _cache(tmp_path)
    cache.save(policy)
    envelope = json.loads(cache.path.read_text("utf-8"))
    tamper(envelope)
    cache.path.write_text(json.dumps(envelope), "utf-8")
    with pytest.raises(CacheRefused, match=reason):
        cache.read()
    assert cache.load() is None
    assert "refused, not serving from it" in caplog.text


@pytest.mark.parametrize("content", [b"", b"{not json", b"[]", b'{"payload": 1}'])
def test_garbage_is_refused(content: bytes, tmp_path: Path) -> None:
    cache = _cache(tmp_path)
    cache.path.parent.mkdir(parents=True)
    cache.path.write_bytes(content)
    with pytest.raises(CacheRefused):
        cache.read()


def test_another_key_or_database_is_refused(policy: PolicySnapshot, tmp_path: Path) -> None:
    _cache(tmp_path).save(policy)
    with pytest.raises(CacheRefused, match="signature does not verify"):
        _cache(tmp_path, key=Ed25519PrivateKey.generate()).read()
    with pytest.raises(CacheRefused, match="another database"):
        _cache(tmp_path, db="postgresql://u:pw@h/other").read()
    assert _cache(tmp_path, db="postgresql://u:changed@h/db").read() is not None
