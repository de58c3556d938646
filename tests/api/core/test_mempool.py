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
