"""Fixed-point tensors: round trips, a pinned hash, and every malformed upload refused clearly."""

from __future__ import annotations

import hashlib
import io

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.encoding import canonical_json
from ledger.errors import TensorError
from ledger.tensor import Tensor, dequantize, quantize

#: Pinned: if this changes, the tensor format (and so every hash on every ledger) changed.
PINNED_HASH = "1257f23dcf5fd8dda142a1fb2d4109ad27c85e7ad470d968cbb28a6c7ccb6bcd"


def pinned() -> Tensor:
    return Tensor(np.arange(6, dtype=np.int32).reshape(2, 3) - 2, 8)


def npy(header: str, body: bytes, version: bytes = b"\x01\x00") -> bytes:
    """A hand-made .npy file (so the tests can lie in the header)."""
    raw = header.encode("latin1")
    pad = 64 - (10 + len(raw) + 1) % 64
    raw += b" " * pad + b"\n"
    return b"\x93NUMPY" + version + len(raw).to_bytes(2, "little") + raw + body


def wire(payload: bytes, meta: bytes = b'{"frac_bits":3}') -> bytes:
    return b"LCT1\n" + meta + b"\n" + payload


#: Any tensor metadata: both dtypes, 0 to 4 dimensions of 0 to 5, every scale.
ANY_META = {
    "dtype": st.sampled_from([np.int32, np.int64]),
    "shape": st.lists(st.integers(0, 5), max_size=4),
    "frac_bits": st.integers(0, 30),
}

GOOD_HEADER = "{'descr': '<i8', 'fortran_order': False, 'shape': (2, 2), }"
GOOD_BODY = np.arange(4, dtype="<i8").tobytes()


def test_hash_is_pinned_and_follows_the_protocol_formula() -> None:
    t = pinned()
    assert t.hash == PINNED_HASH
    formula = hashlib.sha256(
        b"layerchain/tensor/v1\n"
        + b'{"dtype":"<i4","frac_bits":8,"shape":[2,3]}\n'
        + (np.arange(6, dtype="<i4") - 2).tobytes()
    ).hexdigest()
    assert formula == PINNED_HASH


@settings(max_examples=200, deadline=None)
@given(**ANY_META)
def test_hashed_meta_is_the_canonical_json_of_meta(
    dtype: type, shape: list[int], frac_bits: int
) -> None:
    """The hash writes the meta line out by hand; it must be `canonical_json(meta())`."""
    t = Tensor(np.zeros(shape, dtype=dtype), frac_bits)
    assert t._meta_json() == canonical_json(t.meta())
    expected = hashlib.sha256(
        b"layerchain/tensor/v1\n" + canonical_json(t.meta()) + b"\n" + t.data.tobytes()
    ).hexdigest()
    assert t.hash == expected


@settings(max_examples=200, deadline=None)
@given(**ANY_META)
def test_wire_bytes_are_what_numpy_and_canonical_json_write(
    dtype: type, shape: list[int], frac_bits: int
) -> None:
    """`to_bytes` writes the meta line and a cached `.npy` header by hand; the bytes must be
    the format's own: `canonical_json` meta, then numpy's version 1.0 file."""
    t = Tensor((np.arange(int(np.prod(shape)), dtype=dtype) - 3).reshape(shape), frac_bits)
    buf = io.BytesIO()
    np.lib.format.write_array(buf, t.data, version=(1, 0), allow_pickle=False)
    expected = b"LCT1\n" + canonical_json({"frac_bits": frac_bits}) + b"\n" + buf.getvalue()
    assert t.to_bytes() == expected
    assert Tensor.from_bytes(expected, expected_hash=t.hash) == t


def test_a_meta_line_in_other_json_spelling_still_parses() -> None:
    """Readers match the canonical meta line without a JSON parser; any other valid spelling
    goes through the parser and means the same."""
    body = npy(GOOD_HEADER, GOOD_BODY)
    assert Tensor.from_bytes(wire(body, b'{ "frac_bits" : 3 }')).frac_bits == 3
    assert Tensor.from_bytes(wire(body, b'{"frac_bits":0}')).frac_bits == 0
    for bad in (b'{"frac_bits":03}', b'{"frac_bits":-1}', b'{"frac_bits":true}'):
        with pytest.raises(TensorError):
            Tensor.from_bytes(wire(body, bad))


@pytest.mark.parametrize("dtype", [np.int32, np.int64])
def test_round_trip(dtype: type) -> None:
    rng = np.random.default_rng(0)
    t = Tensor(rng.integers(-(2**31), 2**31 - 1, (3, 4, 5)).astype(dtype), 17)
    back = Tensor.from_bytes(t.to_bytes(), expected_hash=t.hash)
    assert back == t and back.hash == t.hash and back.data.dtype == dtype
    assert np.array_equal(back.data, t.data) and back.frac_bits == 17


def test_hash_covers_dtype_shape_and_scale() -> None:
    base = Tensor(np.arange(6, dtype=np.int64), 4)
    assert base.hash != Tensor(np.arange(6, dtype=np.int32), 4).hash
    assert base.hash != Tensor(np.arange(6, dtype=np.int64).reshape(2, 3), 4).hash
    assert base.hash != Tensor(np.arange(6, dtype=np.int64), 5).hash


def test_layout_and_byte_order_do_not_change_the_hash() -> None:
    c = np.arange(12, dtype=np.int64).reshape(3, 4)
    assert Tensor(np.asfortranarray(c), 0).hash == Tensor(c, 0).hash
    assert Tensor(c.astype(">i8"), 0).hash == Tensor(c, 0).hash
    assert Tensor(np.arange(24, dtype=np.int64)[::2].reshape(3, 4), 0) == Tensor(c * 2, 0)


def test_constructor_refuses_floats_and_bad_scales() -> None:
    with pytest.raises(TensorError, match="int32 or int64"):
        Tensor(np.zeros(3), 0)
    with pytest.raises(TensorError, match="int32 or int64"):
        Tensor(np.zeros(3, dtype=np.int16), 0)
    with pytest.raises(TensorError, match="frac_bits"):
        Tensor(np.zeros(3, dtype=np.int64), 31)
    with pytest.raises(TensorError, match="dimensions"):
        Tensor(np.zeros((1, 1, 1, 1, 1), dtype=np.int64), 0)


def test_quantize_dequantize() -> None:
    t = quantize(np.array([0.5, -0.25, 1.0 / 3.0]), 8)
    assert t.data.tolist() == [128, -64, 85]
    assert dequantize(t).tolist() == [0.5, -0.25, 85 / 256]
    with pytest.raises(TensorError, match="do not fit"):
        quantize(np.array([1e30]), 8)


def test_good_hand_made_payload_parses() -> None:
    t = Tensor.from_bytes(wire(npy(GOOD_HEADER, GOOD_BODY)))
    assert t.shape == (2, 2) and t.frac_bits == 3 and t.data.tolist() == [[0, 1], [2, 3]]


@pytest.mark.parametrize(
    ("blob", "message"),
    [
        (b"LCT2\n{}\n", "magic"),
        (b"npy" + GOOD_BODY, "magic"),
        (b"LCT1\n" + b"x" * 300, "meta line"),
        (wire(npy(GOOD_HEADER, GOOD_BODY), b"{frac_bits:3}"), "meta line"),
        (wire(npy(GOOD_HEADER, GOOD_BODY), b'{"frac_bits":3,"x":1}'), "exactly"),
        (wire(npy(GOOD_HEADER, GOOD_BODY), b'{"frac_bits":3.0}'), "meta line"),
        (wire(npy(GOOD_HEADER, GOOD_BODY), b'{"frac_bits":40}'), "frac_bits"),
        (wire(b"not an npy file at all"), "not a .npy"),
        (wire(npy(GOOD_HEADER, GOOD_BODY, version=b"\x02\x00")), "version 1.0"),
        (
            wire(npy("{'descr': '<f8', 'fortran_order': False, 'shape': (2, 2), }", GOOD_BODY)),
            "'<f8'",
        ),
        (
            wire(npy("{'descr': '>i8', 'fortran_order': False, 'shape': (2, 2), }", GOOD_BODY)),
            "'>i8'",
        ),
        (
            wire(npy("{'descr': '<i2', 'fortran_order': False, 'shape': (2, 2), }", GOOD_BODY)),
            "'<i2'",
        ),
        (
            wire(npy("{'descr': '|O', 'fortran_order': False, 'shape': (2,), }", b"x" * 16)),
            "no pickles",
        ),
        (
            wire(npy("{'descr': '<i8', 'fortran_order': True, 'shape': (2, 2), }", GOOD_BODY)),
            "C order",
        ),
        (
            wire(
                npy("{'descr': '<i8', 'fortran_order': False, 'shape': (2, 2), 'x': 1}", GOOD_BODY)
            ),
            "exactly",
        ),
        (
            wire(npy("{'descr': '<i8', 'fortran_order': False, 'shape': (2, -2), }", GOOD_BODY)),
            "shape",
        ),
        (
            wire(npy("{'descr': '<i8', 'fortran_order': False, 'shape': [2, 2], }", GOOD_BODY)),
            "shape",
        ),
        (wire(npy("__import__('os').system('true')", GOOD_BODY)), "malformed"),
        (wire(npy(GOOD_HEADER, GOOD_BODY[:-8])), "needs 32"),
        (wire(npy(GOOD_HEADER, GOOD_BODY + b"\x00" * 8)), "needs 32"),
        (wire(npy(GOOD_HEADER, GOOD_BODY + b"!")), "needs 32"),
        (
            wire(npy("{'descr': '<i8', 'fortran_order': False, 'shape': (2, 2, 2, 2, 2), }", b"")),
            "shape",
        ),
    ],
)
def test_malformed_wire_payloads_are_refused(blob: bytes, message: str) -> None:
    with pytest.raises(TensorError, match=message):
        Tensor.from_bytes(blob)


def test_pickled_object_array_is_refused_without_unpickling() -> None:
    buf = io.BytesIO()
    np.save(buf, np.array([{"boom": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(TensorError, match="no pickles"):
        Tensor.from_bytes(wire(buf.getvalue()))


def test_hash_mismatch_is_refused() -> None:
    t = pinned()
    with pytest.raises(TensorError, match="does not match"):
        Tensor.from_bytes(t.to_bytes(), expected_hash="0" * 64)


def test_too_many_elements_refused_before_allocating() -> None:
    header = "{'descr': '<i8', 'fortran_order': False, 'shape': (100000, 100000), }"
    with pytest.raises(TensorError, match="limit"):
        Tensor.from_bytes(wire(npy(header, b"")))
    t = Tensor(np.zeros(10, dtype=np.int64), 0)
    with pytest.raises(TensorError, match="limit is 9"):
        Tensor.from_bytes(t.to_bytes(), max_elements=9)
