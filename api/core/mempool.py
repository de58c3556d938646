"""Transactions that passed the stateless checks and wait to be ordered into a block.

Any validator admits a tx and gossips it to every other validator, so whoever is primary can
propose it, and a replica that holds a tx the primary keeps leaving out can ask for a view change.
The primary takes txs in arrival order, but a sender's txs leave in nonce order: a tx whose nonce
is ahead of the sender's next one waits (up to `hold_s`) for the gap to fill, so txs sent to
different nodes by one client do not fail with `bad_nonce` only because gossip reordered them.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from ledger.transactions import Tx


@dataclass
class _Entry:
    tx: Tx
    admitted: float = field(default_factory=time.monotonic)


class Mempool:
    """Pending txs by hash, in arrival order, bounded."""

    def __init__(self, limit: int, hold_s: float = 2.0) -> None:
        self.limit = limit
        self.hold_s = hold_s
        self._txs: OrderedDict[str, _Entry] = OrderedDict()
        self._by_signature: dict[str, Tx] = {}
        self._committed_recent: OrderedDict[str, None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._txs)

    def __contains__(self, tx_hash: object) -> bool:
        return tx_hash in self._txs

    def get(self, tx_hash: str) -> Tx | None:
        entry = self._txs.get(tx_hash)
        return entry.tx if entry is not None else None

    def admitted_at(self, tx_hash: str) -> float | None:
        entry = self._txs.get(tx_hash)
        return entry.admitted if entry is not None else None

    def seen(self, tx_hash: str) -> bool:
        """True when the tx is pending or was committed recently (so gossip does not re-add it)."""
        return tx_hash in self._txs or tx_hash in self._committed_recent

    @property
    def full(self) -> bool:
        return len(self._txs) >= self.limit

    def add(self, tx: Tx) -> bool:
        """Add `tx`; False when it is already known or the pool is full."""
        if self.seen(tx.hash) or self.full:
            return False
        self._txs[tx.hash] = _Entry(tx)
        self._by_signature[tx.signature] = tx
        return True

    def pending_of(self, sender: str) -> int:
        """How many of `sender`'s txs wait here."""
        return sum(1 for entry in self._txs.values() if entry.tx.sender == sender)

    def lookup(self, raw: object) -> Tx | None:
        """The pooled Tx whose wire form is exactly `raw`, if any.

        Blocks carry their txs in full; reusing the already parsed (and hashed, and verified)
        object for a tx this node admitted saves parsing and canonically re-encoding it.
        """
        if not isinstance(raw, dict):
            return None
        signature = raw.get("signature")
        tx = self._by_signature.get(signature) if isinstance(signature, str) else None
        return tx if tx is not None and tx.to_dict() == raw else None

    def remove_committed(self, tx_hashes: Iterable[str]) -> None:
        for tx_hash in tx_hashes:
            entry = self._txs.pop(tx_hash, None)
            if entry is not None:
                self._by_signature.pop(entry.tx.signature, None)
            self._committed_recent[tx_hash] = None
        while len(self._committed_recent) > 4 * self.limit:
            self._committed_recent.popitem(last=False)

    def select(
        self,
        max_txs: int,
        next_nonce: Callable[[str], int],
        exclude: set[str] | None = None,
        candidates: Iterable[Tx] | None = None,
    ) -> list[Tx]:
        """Up to `max_txs` txs to propose: arrival order, each sender's in nonce order.

        `next_nonce(sender)` is the nonce the sender's next tx must have; `exclude` holds hashes
        not to propose; `candidates` (default: the whole pool) limits the choice.
        """
        exclude = exclude or set()
        pool = candidates if candidates is not None else (e.tx for e in self._txs.values())
        txs = [tx for tx in pool if tx.hash not in exclude]

        def admitted(tx: Tx) -> float:
            entry = self._txs.get(tx.hash)
            return entry.admitted if entry is not None else 0.0

        return order_for_block(txs, max_txs, next_nonce, admitted, self.hold_s)


def order_for_block(
    txs: Sequence[Tx],
    max_txs: int,
    next_nonce: Callable[[str], int],
    held_since: Callable[[Tx], float],
    hold_s: float,
) -> list[Tx]:
    """Choose and order txs for a block: arrival order, but each sender's txs in nonce order.

    A tx whose nonce is ahead of its sender's next one waits (unless `hold_s` have passed since
    `held_since(tx)`, when it goes in and gets its failure receipt); a stale nonce goes in at once.
    """
    now = time.monotonic()
    by_sender: dict[str, dict[int, Tx]] = {}
    for tx in txs:
        by_sender.setdefault(tx.sender, {}).setdefault(tx.nonce, tx)
    expected: dict[str, int] = {}
    chosen: list[Tx] = []
    taken: set[str] = set()
    for tx in txs:
        if len(chosen) >= max_txs:
            break
        if tx.hash in taken:
            continue
        sender = tx.sender
        if sender not in expected:
            expected[sender] = next_nonce(sender)
        pending = by_sender[sender]
        # Emit this sender's txs from its next nonce upwards while they are contiguous.
        while expected[sender] in pending and len(chosen) < max_txs:
            nxt = pending.pop(expected[sender])
            if nxt.hash not in taken:
                chosen.append(nxt)
                taken.add(nxt.hash)
            expected[sender] += 1
        if tx.hash in taken or len(chosen) >= max_txs:
            continue
        if tx.nonce < expected[sender] or now - held_since(tx) > hold_s:
            pending.pop(tx.nonce, None)
            chosen.append(tx)
            taken.add(tx.hash)
    return chosen


class NonceQueue:
    """Admitted txs that wait for their turn: released only in gap-free nonce order per sender.

    A tx whose nonce is ahead of its sender's next one would fail with `bad_nonce` if ordered
    now, and under load the missing one is often merely still on its way (gossip, a client
    sending consecutive nonces to different nodes). So such a tx is not handed to consensus at
    all until the gap fills (as Ethereum's "queued" txs); one that waits longer than the TTL is
    dropped (its sender resubmits). Txs handed over leave in nonce order, so the primary can put
    a sender's whole run in one block.
    """

    def __init__(self) -> None:
        self._waiting: dict[str, dict[int, Tx]] = {}
        self._next: dict[str, int] = {}
        self.count = 0

    def __len__(self) -> int:
        return self.count

    def next_nonce(self, sender: str, committed_next: int) -> int:
        """The sender's next nonce counting txs already released (committed or not)."""
        return max(committed_next, self._next.get(sender, 0))

    def holds(self, sender: str, nonce: int) -> bool:
        return nonce in self._waiting.get(sender, {})

    def add(self, tx: Tx) -> None:
        self._waiting.setdefault(tx.sender, {})[tx.nonce] = tx
        self.count += 1

    def release(self, sender: str, committed_next: int) -> tuple[list[Tx], list[Tx]]:
        """(txs now in turn, in nonce order; stale txs whose nonce got used meanwhile)."""
        waiting = self._waiting.get(sender)
        if not waiting:
            if committed_next > self._next.get(sender, 0):
                self._next.pop(sender, None)  # nothing in flight: the state knows best
            return [], []
        stale = [waiting.pop(n) for n in sorted(n for n in waiting if n < committed_next)]
        nonce = self.next_nonce(sender, committed_next)
        ready = []
        while nonce in waiting:
            ready.append(waiting.pop(nonce))
            nonce += 1
        self._next[sender] = nonce
        if not waiting:
            del self._waiting[sender]
        self.count -= len(ready) + len(stale)
        return ready, stale

    def expire(self, is_old: Callable[[Tx], bool]) -> list[Tx]:
        """Drop and return the waiting txs `is_old` says waited too long."""
        dropped = []
        for sender in list(self._waiting):
            waiting = self._waiting[sender]
            for nonce in [n for n, tx in waiting.items() if is_old(tx)]:
                dropped.append(waiting.pop(nonce))
            if not waiting:
                del self._waiting[sender]
        self.count -= len(dropped)
        return dropped
