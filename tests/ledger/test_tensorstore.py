"""The content-addressed tensor store: verified writes and reads, small tensors packed in SQLite,
large ones in atomic files, files of older stores still read."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from ledger import tensorstore
from ledger.errors import TensorError
from ledger.tensor import Tensor
from ledger.tensorstore import PACK_MAX_BYTES, MissingTensor, TensorStore


def _tensor(seed: int = 0) -> Tensor:
    return Tensor(np.random.default_rng(seed).integers(-100, 100, size=(3, 4)), 5)


def tamper(store: TensorStore, tensor_hash: str, change: Callable[[bytes], bytes]) -> None:
    """Change a packed tensor's stored bytes behind the store's back (what disk damage does)."""
    with sqlite3.connect(store.pack_path) as db:
        (blob,) = db.execute("SELECT blob FROM tensors WHERE hash = ?", (tensor_hash,)).fetchone()
        db.execute("UPDATE tensors SET blob = ? WHERE hash = ?", (change(bytes(blob)), tensor_hash))


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
    tamper(store, t.hash, lambda b: b[:-1] + bytes([b[-1] ^ 1]))  # a flipped bit on disk
    with pytest.raises(TensorError, match="corrupt"):
        store.get(t.hash)


def test_small_tensors_are_packed_and_large_ones_are_files(tmp_path: Path) -> None:
    store = TensorStore(tmp_path)
    small = _tensor()
    side = int((PACK_MAX_BYTES // 8) ** 0.5) + 2
    large = Tensor(np.arange(side * side, dtype=np.int64).reshape(side, side), 0)
    assert len(large.to_bytes()) > PACK_MAX_BYTES
    store.put(small)
    store.put(large)
    assert not store.path(small.hash).exists()
    assert store.path(large.hash).is_file()
    assert not list(tmp_path.rglob("*.tmp-*"))
    store.close()
    again = TensorStore(tmp_path)  # both survive a reopen
    assert again.get(small.hash) == small and again.get(large.hash) == large
    assert again.get_unverified_bytes(large.hash) == large.to_bytes()


def test_a_store_written_as_files_still_reads(tmp_path: Path) -> None:
    """Stores written before the pack kept every tensor in a file of its own."""
    t = _tensor(3)
    path = TensorStore(tmp_path).path(t.hash)
    path.parent.mkdir(parents=True)
    path.write_bytes(t.to_bytes())
    store = TensorStore(tmp_path)
    assert store.has(t.hash) and store.get(t.hash) == t
    assert store.get_unverified_bytes(t.hash) == t.to_bytes()
    assert store.put(t) == t.hash  # already there: not stored twice


def test_refuses_bad_hashes_and_oversized_tensors(tmp_path: Path) -> None:
    with pytest.raises(TensorError, match="64 lowercase hex"):
        TensorStore(tmp_path).has("../etc/passwd")
    small = TensorStore(tmp_path / "small", max_elements=4)
    with pytest.raises(TensorError, match="limit is 4"):
        small.put_bytes(_tensor().to_bytes())


def test_a_store_without_fsync_reads_damaged_bytes_as_missing(tmp_path: Path) -> None:
    """What a power loss can leave after a write that was not fsync'd: bytes cut short. A
    validator's store (durable=False) drops them so the tensor is fetched again; an auditor's
    store (the default) reports the corruption."""
    tensor = Tensor(np.arange(12, dtype=np.int64).reshape(3, 4), 4)
    fast = TensorStore(tmp_path / "fast", durable=False)
    fast.put(tensor)
    assert fast.get(tensor.hash) == tensor
    tamper(fast, tensor.hash, lambda b: b[:10])
    with pytest.raises(MissingTensor):
        fast.get(tensor.hash)
    assert not fast.has(tensor.hash)  # removed: the next `put` (a fetch) stores it again
    fast.put(tensor)
    assert fast.get(tensor.hash) == tensor

    strict = TensorStore(tmp_path / "strict")
    strict.put(tensor)
    tamper(strict, tensor.hash, lambda b: b"\x00" * 10)
    with pytest.raises(TensorError, match="corrupt"):
        strict.get(tensor.hash)
    assert strict.has(tensor.hash)  # evidence kept


def test_put_verified_says_whether_the_tensor_is_new_even_across_reopening(tmp_path: Path) -> None:
    """`created` decides whether a validator pushes an upload on: true once per tensor, also for a
    store reopened without its memo of known hashes (the pack's row count answers)."""
    small, big = _tensor(1), Tensor(np.zeros(PACK_MAX_BYTES // 8 + 1, dtype=np.int64), 0)
    store = TensorStore(tmp_path)
    for t in (small, big):
        assert store.put_verified(t.hash, t.to_bytes()) is True
        assert store.put_verified(t.hash, t.to_bytes()) is False
    store.close()
    reopened = TensorStore(tmp_path)
    for t in (small, big):
        assert reopened.put_verified(t.hash, t.to_bytes()) is False
        assert reopened.get(t.hash) == t
    with pytest.raises(TensorError):
        reopened.put_verified("not-a-hash", small.to_bytes())


def test_recent_tensors_are_forwarded_from_memory_within_a_byte_budget(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Unverified reads (what a node forwards to miners and peers, who check every hash) come
    from memory for pack tensors written or served lately, at most `RECENT_BYTES` of them, the
    least recently used dropped first; verified reads still read the disk and see damage."""
    tensors = [_tensor(seed) for seed in range(3)]
    size = len(tensors[0].to_bytes())
    monkeypatch.setattr(tensorstore, "RECENT_BYTES", 2 * size)
    store = TensorStore(tmp_path)
    for t in tensors:
        store.put(t)
    for t in tensors:  # the disk copies go bad: only what memory holds still reads as written
        tamper(store, t.hash, lambda b: b[:-1] + bytes([b[-1] ^ 1]))
    assert store.get_unverified_bytes(tensors[0].hash) != tensors[0].to_bytes()  # dropped
    assert store.get_unverified_bytes(tensors[2].hash) == tensors[2].to_bytes()
    with pytest.raises(TensorError, match="corrupt"):
        store.get(tensors[2].hash)
    # Memory now holds tensors[0] (read from disk) then tensors[2] (just served); reading
    # tensors[1] from disk drops the least recently used, tensors[0].
    assert store.get_unverified_bytes(tensors[1].hash) != tensors[1].to_bytes()
    assert store.get_unverified_bytes(tensors[2].hash) == tensors[2].to_bytes()
    assert store.get_unverified_bytes(tensors[0].hash) != tensors[0].to_bytes()


def test_a_batch_is_stored_in_one_transaction_with_a_new_or_not_answer_each(
    tmp_path: Path,
) -> None:
    store = TensorStore(tmp_path)
    held, fresh, big = (
        _tensor(1),
        _tensor(2),
        Tensor(np.zeros(PACK_MAX_BYTES // 8 + 8, np.int64), 0),
    )
    store.put(held)
    items = [(t.hash, t.to_bytes()) for t in (fresh, held, fresh, big)]
    assert store.put_verified_many(items) == [True, False, False, True]
    assert store.put_verified_many(items) == [False, False, False, False]
    for t in (held, fresh, big):
        assert store.get(t.hash) == t
    reopened = TensorStore(tmp_path)  # committed, not just cached
    assert reopened.put_verified_many([(fresh.hash, fresh.to_bytes())]) == [False]
    with pytest.raises(TensorError, match="64 lowercase hex"):
        store.put_verified_many([("nothex", b"x")])
