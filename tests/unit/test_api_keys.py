"""Tenant API keys: generated keys, and which imported keys are refused."""

from __future__ import annotations

import re
from typing import Any

import pytest

from compliance.api_keys import generate_api_key, key_problem
from compliance.snapshot import hash_api_key
from compliance.store.admin_documents import InvalidDocument, tenant_from_body
from compliance.store.catalog_file import CatalogError, load_catalog, parse_catalog

STRONG = "k" * 32


def test_generated_keys_are_prefixed_random_and_acceptable() -> None:
    keys = {generate_api_key() for _ in range(100)}
    assert len(keys) == 100
    for key in keys:
        assert re.fullmatch(r"rg_[A-Za-z0-9_-]{43}", key)  # 43 base64 chars: 256 bits
        assert key_problem(key) is None


@pytest.mark.parametrize(
    ("key", "problem"),
    [
        ("x", "needs at least 32 characters (128 bits of randomness), this one has 1"),
        ("k" * 31, "this one has 31"),
        ("k" * 257, "at most 256 characters"),
        ("k" * 30 + " k", "only letters, digits"),
        ("k" * 30 + "é1", "only letters, digits"),
    ],
)
def test_weak_or_malformed_keys_are_refused(key: str, problem: str) -> None:
    message = key_problem(key)
    assert message is not None and problem in message
    assert key not in message  # a refusal never repeats the secret


def _catalog(keys: list[str], **top: Any) -> dict[str, Any]:
    return {**top, "tenants": [{"id": "t", "name": "T", "api_keys": keys}]}


def test_catalog_import_refuses_a_one_character_key() -> None:
    with pytest.raises(CatalogError) as refused:
        parse_catalog(_catalog([STRONG, "x"]), "c.yaml")
    assert str(refused.value).startswith(
        "c.yaml: tenants[0].api_keys[1]: an API key needs at least 32 characters"
    )


def test_a_demo_catalog_may_keep_short_public_keys() -> None:
    _, tenants = parse_catalog(_catalog(["rg-demo-key"], demo=True))
    assert tenants[0].api_key_hashes == frozenset({hash_api_key("rg-demo-key")})
    with pytest.raises(CatalogError, match="demo: must be true or false"):
        parse_catalog(_catalog(["rg-demo-key"], demo="yes"))


def test_the_shipped_demo_catalog_is_marked_demo() -> None:
    _, tenants = load_catalog()
    assert hash_api_key("rg-demo-key") in tenants[0].api_key_hashes


def test_admin_api_documents_refuse_short_keys_even_named_demo() -> None:
    with pytest.raises(InvalidDocument) as refused:
        tenant_from_body({"name": "T", "api_keys": ["x"], "demo": True}, "t")
    assert refused.value.field == "demo"  # no such field: there is no demo allowance here
    with pytest.raises(InvalidDocument) as refused:
        tenant_from_body({"name": "T", "api_keys": ["x"]}, "t")
    assert refused.value.field == "api_keys[0]"
    assert "at least 32 characters" in str(refused.value)
    tenant, _ = tenant_from_body({"name": "T", "api_keys": [STRONG]}, "t")
    assert tenant.api_key_hashes == frozenset({hash_api_key(STRONG)})
