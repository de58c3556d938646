"""Canonical encoding: the exact bytes, refusals, and signing-byte domain separation."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledger.encoding import (
    MAX_SAFE_INT,
    canonical_json,
    digest,
    parse_json,
    sha256_hex,
    signing_bytes,
)
from ledger.errors import EncodingError
from ledger.trusted_json import trusted_canonical_json


def test_exact_bytes() -> None:
    value = {"b": [1, -2, True, None], "a": "é", "c": {"z": 0, "y": b"\x01\xff"}}
    assert canonical_json(value) == '{"a":"é","b":[1,-2,true,null],"c":{"y":"01ff","z":0}}'.encode()
    assert digest(value) == hashlib.sha256(canonical_json(value)).hexdigest()
    assert sha256_hex(b"") == hashlib.sha256(b"").hexdigest()


def test_key_order_does_not_matter() -> None:
    assert canonical_json({"a": 1, "b": 2}) == canonical_json({"b": 2, "a": 1})


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (1.5, "float at \\$"),
        ({"x": [0.0]}, r"float at \$\.x\[0\]"),
        ({1: 2}, "is not a string"),
        (MAX_SAFE_INT + 1, "does not fit"),
        (-MAX_SAFE_INT - 1, "does not fit"),
        ({"s": {1, 2}}, "type set"),
    ],
)
def test_refusals(value: object, message: str) -> None:
    with pytest.raises(EncodingError, match=message):
        canonical_json(value)


def test_parse_json_refuses_floats_duplicates_and_garbage() -> None:
    assert parse_json(b'{"a":[1,2]}') == {"a": [1, 2]}
    for text, message in [
        (b'{"a":1.0}', "float"),
        (b'{"a":1e3}', "float"),
        (b'{"a":NaN}', "float"),
        (b'{"a":1,"a":2}', "duplicate key"),
        (b"{", "malformed JSON"),
        (b"\xff", "malformed JSON"),
    ]:
        with pytest.raises(EncodingError, match=message):
            parse_json(text)


def test_signing_bytes_separate_kinds_and_chains() -> None:
    payload = {"height": 1}
    base = signing_bytes("commit", "chain-a", payload)
    assert base == canonical_json(
        {"chain_id": "chain-a", "domain": "layerchain/v1", "kind": "commit", "payload": payload}
    )
    assert signing_bytes("prepare", "chain-a", payload) != base
    assert signing_bytes("commit", "chain-b", payload) != base
    with pytest.raises(EncodingError):
        signing_bytes("", "chain-a", payload)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-MAX_SAFE_INT, MAX_SAFE_INT) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=20,
)


@given(json_values)
def test_round_trip_and_trusted_encoder_agree(value: object) -> None:
    encoded = canonical_json(value)
    assert canonical_json(parse_json(encoded)) == encoded
    assert trusted_canonical_json(value) == encoded
