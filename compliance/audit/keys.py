"""The Ed25519 key that signs audit checkpoints and export manifests."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

SIGNING_KEY_FILE = "audit-signing-key.pem"
"""The signing key's file name in data_dir when no key is configured."""


class AuditKeyError(Exception):
    """A key file is missing, unreadable or not an Ed25519 key."""


def key_id(public: Ed25519PublicKey) -> str:
    """A short fingerprint naming a public key: hex SHA-256 of its raw bytes, 32 digits."""
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:32]


def public_key_pem(public: Ed25519PublicKey) -> str:
    """The public key as PEM (SubjectPublicKeyInfo), the form auditors keep and pass back."""
    return public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode("ascii")


def load_signing_key(path: Path) -> Ed25519PrivateKey:
    """Read a PEM (PKCS#8) Ed25519 private key."""
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except OSError as exc:
        raise AuditKeyError(f"audit signing key {path}: {exc.strerror or exc}") from None
    except (ValueError, TypeError) as exc:
        raise AuditKeyError(f"audit signing key {path}: not a PEM private key ({exc})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise AuditKeyError(f"audit signing key {path}: not an Ed25519 key")
    return key


def load_or_create_signing_key(path: Path) -> Ed25519PrivateKey:
    """The key at `path`, generated there (mode 0600) if absent; safe against racing starts."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        pem = Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(pem)
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(temporary, path)  # fails if another process created the key first
        except FileExistsError:
            pass
        finally:
            temporary.unlink()
    return load_signing_key(path)


def load_public_key(data: bytes, source: str) -> Ed25519PublicKey:
    """A PEM public key (or a PEM private key, whose public half is used)."""
    try:
        if b"PRIVATE KEY" in data:
            private = serialization.load_pem_private_key(data, password=None)
            public: object = private.public_key()
        else:
            public = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise AuditKeyError(f"{source}: not a PEM key ({exc})") from None
    if not isinstance(public, Ed25519PublicKey):
        raise AuditKeyError(f"{source}: not an Ed25519 key")
    return public


def read_public_key(path: Path) -> Ed25519PublicKey:
    """Load a public key file (see load_public_key)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise AuditKeyError(f"public key {path}: {exc.strerror or exc}") from None
    return load_public_key(data, f"public key {path}")


def signature_ok(public: Ed25519PublicKey, signature_hex: str, payload: bytes) -> bool:
    """True if `signature_hex` is `public`'s signature of `payload`."""
    try:
        public.verify(bytes.fromhex(signature_hex), payload)
    except (InvalidSignature, ValueError):
        return False
    return True
