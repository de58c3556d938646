"""Mempool selection: arrival order, each sender's txs in nonce order, gaps held then released."""

from __future__ import annotations

import time

from api.core.mempool import Mempool
from ledger.identity import Keypair
from ledger.transactions import TRANSFER, Tx, sign_tx, transfer_body

CHAIN = "test-chain"
ALICE = Keypair.from_seed(b"a" * 32)
BOB = Keypair.from_seed(b"b" * 32)


def tx(key: Keypair, nonce: int) -> Tx:
    return sign_tx(key, CHAIN, TRANSFER, nonce, transfer_body("c" * 64, 1))


def test_sender_nonces_leave_in_order_even_when_they_arrived_reordered() -> None:
    pool = Mempool(limit=100)
    for t in (tx(ALICE, 1), tx(BOB, 0), tx(ALICE, 0), tx(ALICE, 2)):
        assert pool.add(t)
    chosen = pool.select(10, next_nonce=lambda sender: 0)
    assert [(t.sender, t.nonce) for t in chosen] == [
        (ALICE.address, 0),
        (ALICE.address, 1),
        (ALICE.address, 2),
        (BOB.address, 0),
    ]


def test_gap_is_held_then_released_after_hold_time() -> None:
    pool = Mempool(limit=100, hold_s=0.05)
    pool.add(tx(ALICE, 3))
    assert pool.select(10, next_nonce=lambda sender: 0) == []
    time.sleep(0.06)
    assert [t.nonce for t in pool.select(10, next_nonce=lambda sender: 0)] == [3]


def test_stale_nonce_is_released_at_once_and_duplicates_refused() -> None:
    pool = Mempool(limit=100)
    stale = tx(ALICE, 0)
    assert pool.add(stale)
    assert not pool.add(stale)
    assert pool.select(10, next_nonce=lambda sender: 5) == [stale]


def test_committed_txs_leave_and_are_not_readmitted() -> None:
    pool = Mempool(limit=100)
    t = tx(ALICE, 0)
    pool.add(t)
    pool.remove_committed([t.hash])
    assert len(pool) == 0
    assert not pool.add(t)


def test_limit_and_exclusion() -> None:
    pool = Mempool(limit=2)
    a, b = tx(ALICE, 0), tx(BOB, 0)
    assert pool.add(a) and pool.add(b)
    assert not pool.add(tx(ALICE, 1))
    assert pool.select(10, next_nonce=lambda s: 0, exclude={a.hash}) == [b]
    assert pool.select(1, next_nonce=lambda s: 0) == [a]


def test_nonce_queue_releases_only_gap_free_runs() -> None:
    from api.core.mempool import NonceQueue

    queue = NonceQueue()
    for n in (2, 3, 5):
        queue.add(tx(ALICE, n))
    ready, stale = queue.release(ALICE.address, committed_next=0)
    assert ready == [] and stale == [] and len(queue) == 3  # nonces 0 and 1 still missing
    queue.add(tx(ALICE, 0))
    queue.add(tx(ALICE, 1))
    ready, _ = queue.release(ALICE.address, committed_next=0)
    assert [t.nonce for t in ready] == [0, 1, 2, 3]
    assert queue.next_nonce(ALICE.address, 0) == 4 and queue.holds(ALICE.address, 5)
    # The state moved past 5 through txs seen elsewhere: 5 is stale, nothing waits any more.
    ready, stale = queue.release(ALICE.address, committed_next=6)
    assert ready == [] and [t.nonce for t in stale] == [5] and len(queue) == 0


def test_nonce_queue_expiry() -> None:
    from api.core.mempool import NonceQueue

    queue = NonceQueue()
    old, new = tx(ALICE, 7), tx(BOB, 9)
    queue.add(old)
    queue.add(new)
    assert queue.expire(lambda t: t is old) == [old]
    assert len(queue) == 1 and queue.holds(BOB.address, 9)
