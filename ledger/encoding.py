"""Canonical encoding and digests: the bytes that everything hashed or signed is made of.

Two honest machines must produce identical bytes for the same value, so the encoding is JSON
with sorted keys, no whitespace, UTF-8 and integers only. Floats are refused because their text
form is not unique and their arithmetic is not exact; bytes are written as lowercase hex.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from ledger.errors import EncodingError

HEX64 = re.compile(r"^[0-9a-f]{64}\Z")
"""64 lowercase hex characters: the form of every hash, tx id, job id and address."""

#: Prefix of every signed message: layerchain signatures never verify as anything else.
SIGNING_DOMAIN = "layerchain/v1"

#: JSON integers beyond this magnitude lose precision in common JSON parsers (JavaScript), so they
#: are refused rather than silently mangled by an explorer or third-party verifier.
MAX_SAFE_INT = 2**63 - 1


def _normalise(value: Any, path: str) -> Any:
    """Return `value` with bytes turned into hex and every type checked, or raise EncodingError."""
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        if not -MAX_SAFE_INT <= value <= MAX_SAFE_INT:
            raise EncodingError(f"integer at {path} does not fit in a signed 64-bit integer")
        return value
    if isinstance(value, float):
        raise EncodingError(f"float at {path}: canonical encoding allows integers only")
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise EncodingError(f"key {key!r} at {path} is not a string")
            out[key] = _normalise(item, f"{path}.{key}")
        return out
    if isinstance(value, list | tuple):
        return [_normalise(item, f"{path}[{i}]") for i, item in enumerate(value)]
    raise EncodingError(f"value of type {type(value).__name__} at {path} cannot be encoded")


def canonical_json(value: Any) -> bytes:
    """Canonical bytes of `value`: sorted keys, no whitespace, UTF-8, ints only, bytes as hex."""
    text = json.dumps(
        _normalise(value, "$"), sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:  # a lone surrogate such as "\ud800" has no UTF-8 form
        raise EncodingError(f"string is not valid Unicode (lone surrogate): {exc.reason}") from exc


def sha256_hex(data: bytes) -> str:
    """SHA-256 of `data` as 64 lowercase hex characters."""
    return hashlib.sha256(data).hexdigest()


def digest(value: Any) -> str:
    """SHA-256 (hex) of the canonical encoding of `value`."""
    return sha256_hex(canonical_json(value))


def signing_bytes(kind: str, chain_id: str, payload: Any) -> bytes:
    """The exact bytes signed for a message of `kind` on chain `chain_id`.

    Naming the kind and the chain inside the signed bytes is what stops a signature from being
    replayed in another role (a PREPARE vote reused as a COMMIT) or on another chain.
    """
    if not kind or not chain_id:
        raise EncodingError("signing bytes need a non-empty kind and chain id")
    return canonical_json(
        {"domain": SIGNING_DOMAIN, "kind": kind, "chain_id": chain_id, "payload": payload}
    )


def parse_json(data: bytes | str) -> Any:
    """Parse JSON received from outside, refusing floats and duplicate keys with EncodingError."""

    def no_floats(text: str) -> Any:
        raise EncodingError(f"float {text} is not allowed: use integers (fixed point)")

    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, item in pairs:
            if key in out:
                raise EncodingError(f"duplicate key {key!r}")
            out[key] = item
        return out

    try:
        return json.loads(
            data, parse_float=no_floats, parse_constant=no_floats, object_pairs_hook=no_duplicates
        )
    except (ValueError, UnicodeDecodeError) as exc:
        raise EncodingError(f"malformed JSON: {exc}") from exc
