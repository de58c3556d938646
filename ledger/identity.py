"""Ed25519 identities: every validator, miner and client is a key pair; address = public key.

An address is the 32-byte raw Ed25519 public key as 64 lowercase hex characters, so anyone can
check a signature from the address alone, with no registry of keys.
"""

from __future__ import annotations

import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ledger.encoding import signing_bytes
from ledger.errors import IdentityError

ADDRESS_RE = re.compile(r"^[0-9a-f]{64}\Z")
SIGNATURE_RE = re.compile(r"^[0-9a-f]{128}\Z")


def check_address(address: object) -> str:
    """Return `address` if it is 64 lowercase hex characters, else raise IdentityError."""
    if not isinstance(address, str) or not ADDRESS_RE.match(address):
        raise IdentityError("an address is 64 lowercase hex characters (an Ed25519 public key)")
    return address


class Keypair:
    """An Ed25519 private key with helpers to sign layerchain messages."""

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._key = private_key
        raw = private_key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        self.address: str = raw.hex()

    @classmethod
    def generate(cls) -> Keypair:
        """A fresh random key pair."""
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_seed(cls, seed: bytes) -> Keypair:
        """A deterministic key pair from a 32-byte seed (tests and simulations only)."""
        if len(seed) != 32:
            raise IdentityError("an Ed25519 seed is exactly 32 bytes")
        return cls(Ed25519PrivateKey.from_private_bytes(seed))

    def to_pem(self) -> bytes:
        """PKCS#8 PEM, unencrypted."""
        return self._key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    @classmethod
    def from_pem(cls, data: bytes) -> Keypair:
        """Load a PKCS#8 PEM Ed25519 private key, with a clear error for anything else."""
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError) as exc:
            raise IdentityError(f"not an unencrypted PKCS#8 PEM private key: {exc}") from exc
        if not isinstance(key, Ed25519PrivateKey):
            raise IdentityError("the key file holds a key that is not Ed25519")
        return cls(key)

    def save(self, path: str | Path) -> None:
        """Write the PEM key file with mode 0600, created that way so it is never world-readable."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(self.to_pem())

    @classmethod
    def load(cls, path: str | Path) -> Keypair:
        """Read a PEM key file written by `save` (or by `layerchain keygen`)."""
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise IdentityError(f"cannot read key file {path}: {exc.strerror}") from exc
        return cls.from_pem(data)

    def sign_raw(self, message: bytes) -> str:
        """Ed25519 signature over exactly `message`, as 128 hex characters."""
        return self._key.sign(message).hex()

    def sign(self, kind: str, chain_id: str, payload: Any) -> str:
        """Sign a domain-separated message (see `ledger.encoding.signing_bytes`)."""
        return self.sign_raw(signing_bytes(kind, chain_id, payload))


@lru_cache(maxsize=4096)
def _public_key(address: str) -> Ed25519PublicKey:
    return Ed25519PublicKey.from_public_bytes(bytes.fromhex(address))


def verify_raw(address: str, message: bytes, signature: str) -> bool:
    """True when `signature` (hex) is `address`'s Ed25519 signature over `message`."""
    if not isinstance(address, str) or not ADDRESS_RE.match(address):
        return False
    if not isinstance(signature, str) or not SIGNATURE_RE.match(signature):
        return False
    try:
        _public_key(address).verify(bytes.fromhex(signature), message)
    except (InvalidSignature, ValueError):
        return False
    return True


def verify(address: str, kind: str, chain_id: str, payload: Any, signature: str) -> bool:
    """True when `signature` is `address`'s signature over the domain-separated message."""
    return verify_raw(address, signing_bytes(kind, chain_id, payload), signature)
