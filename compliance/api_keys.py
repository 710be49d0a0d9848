"""Tenant API keys: how they are generated and what an imported key must look like.

Keys are stored as unsalted SHA-256 (`compliance.snapshot.hash_api_key`). That is safe only
because every key carries at least 128 bits of randomness: nobody can search a 2^128 space,
salted or not (salts and slow hashes protect low-entropy secrets such as passwords). So keys
are generated here with 256 random bits, and imported keys must be at least 32 characters from
the bearer-token alphabet: 32 hex digits, the sparsest alphabet a key generator uses, are 128
bits. Demo catalogs (`demo: true`) are exempt: their keys are published in the README.
"""

from __future__ import annotations

import re
import secrets

KEY_PREFIX = "rg_"
"""Recognisable prefix of generated keys (secret scanners can match `rg_` + 43 characters)."""
MIN_KEY_LENGTH = 32
MAX_KEY_LENGTH = 256
_TOKEN68 = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
"""RFC 6750 b64token: what can travel in `Authorization: Bearer`."""


def generate_api_key() -> str:
    """A new tenant API key: `rg_` and 256 random bits, URL-safe base64 (46 characters)."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def key_problem(key: str) -> str | None:
    """Why `key` may not be imported as a tenant API key, or None. Never repeats the key."""
    if len(key) < MIN_KEY_LENGTH:
        return (
            f"an API key needs at least {MIN_KEY_LENGTH} characters (128 bits of randomness), "
            f"this one has {len(key)}; generate one with `gateway tenants keys create`"
        )
    if len(key) > MAX_KEY_LENGTH:
        return f"an API key has at most {MAX_KEY_LENGTH} characters, this one has {len(key)}"
    if not _TOKEN68.fullmatch(key):
        return (
            "an API key may contain only letters, digits and - . _ ~ + / "
            "(with = only at the end), as a bearer token can"
        )
    return None
