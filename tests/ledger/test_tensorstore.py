"""The content-addressed tensor store: verified writes and reads, atomic files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ledger.errors import TensorError
from ledger.tensor import Tensor
from ledger.tensorstore import MissingTensor, TensorStore


def _tensor(seed: int = 0) -> Tensor:
    return Tensor(np.random.default_rng(seed).integers(-100, 100, size=(3, 4)), 5)


def test_put_get_has(tmp_path: Path) -> None:
    store = TensorStore(tmp_path)
    t = _tensor()
    assert not store.has(t.hash)
    assert store.put(t) == t.hash
    assert store.has(t.hash) and store.get(t.hash) == t
    assert store.get_bytes(t.hash) == t.to_bytes()
    assert store.path(t.hash).parent.name == t.hash[:2]
    assert store.put(t) == t.hash  # idempotent
    assert not list(tmp_path.rglob(".tmp-*"))


def test_put_bytes_checks_the_hash(tmp_path: Path) -> None:
    store = TensorStore(tmp_path)
    t = _tensor()
    assert store.put_bytes(t.to_bytes(), expected_hash=t.hash) == t.hash
    other = _tensor(1)
    with pytest.raises(TensorError, match="does not match"):
        store.put_bytes(other.to_bytes(), expected_hash=t.hash)
    assert not store.has(other.hash)
    with pytest.raises(TensorError, match="LCT1"):
        store.put_bytes(b"garbage")


def test_missing_and_corrupt_tensors(tmp_path: Path) -> None:
    store = TensorStore(tmp_path)
    with pytest.raises(MissingTensor) as info:
        store.get("ab" * 32)
    assert info.value.hash == "ab" * 32
    t = _tensor()
    store.put(t)
    path = store.path(t.hash)
    blob = bytearray(path.read_bytes())
    blob[-1] ^= 1  # a flipped bit on disk
    path.write_bytes(bytes(blob))
    with pytest.raises(TensorError, match="corrupt"):
        store.get(t.hash)


def test_refuses_bad_hashes_and_oversized_tensors(tmp_path: Path) -> None:
    with pytest.raises(TensorError, match="64 lowercase hex"):
        TensorStore(tmp_path).has("../etc/passwd")
    small = TensorStore(tmp_path / "small", max_elements=4)
    with pytest.raises(TensorError, match="limit is 4"):
        small.put_bytes(_tensor().to_bytes())


def test_a_store_without_fsync_reads_a_damaged_file_as_missing(tmp_path: Path) -> None:
    """What a power loss can leave after a write that was not fsync'd: the file exists but its
    bytes are cut short. A validator's store (durable=False) drops it so it is fetched again;
    an auditor's store (the default) reports the corruption."""
    tensor = Tensor(np.arange(12, dtype=np.int64).reshape(3, 4), 4)
    fast = TensorStore(tmp_path / "fast", durable=False)
    fast.put(tensor)
    assert fast.get(tensor.hash) == tensor
    path = fast.path(tensor.hash)
    path.write_bytes(path.read_bytes()[:10])
    with pytest.raises(MissingTensor):
        fast.get(tensor.hash)
    assert not fast.has(tensor.hash)  # removed: the next `put` (a fetch) stores it again
    fast.put(tensor)
    assert fast.get(tensor.hash) == tensor

    strict = TensorStore(tmp_path / "strict")
    strict.put(tensor)
    strict.path(tensor.hash).write_bytes(b"\x00" * 10)
    with pytest.raises(TensorError, match="corrupt"):
        strict.get(tensor.hash)
    assert strict.has(tensor.hash)  # evidence kept
