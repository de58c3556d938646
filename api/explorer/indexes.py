"""Per-validator activity (blocks proposed, certificates signed and missed), kept incrementally.

Counting signatures means reading every certificate ever stored; doing that per request would be
a full scan of a table that only grows. The ledger tables are append-only, so the counts up to a
height never change: the index remembers how far it has counted and, on each request, reads only
the certificates committed since (one indexed range query). The first request on a long chain
pays for the whole history once (about 50 ms for 10,000 blocks), later ones a few rows.

"Signed" means the validator's signature is in the block's commit certificate. A certificate
carries any quorum (2f + 1) of COMMIT votes, so an honest validator whose vote arrived after the
quorum was complete counts as "missed" for that block: the figure measures presence in the
ledger's proof of finality, which is what an auditor can check.
"""

from __future__ import annotations

import json
import threading
import weakref
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select

from ledger import schema
from ledger.store import Store

CHUNK = 5_000


@dataclass
class ValidatorActivity:
    """One validator's counts over heights 1..`ValidatorIndex.height`."""

    proposed: int = 0
    signed: int = 0
    last_proposed: int | None = None
    last_signed: int | None = None


@dataclass
class ValidatorIndex:
    """Counts per validator address, up to `height`, extended on demand."""

    store: Store
    height: int = 0
    blocks: int = 0
    view_changes: int = 0
    """Blocks committed in a view above 0 of the view before them (the primary was replaced)."""
    last_view: int = 0
    activity: dict[str, ValidatorActivity] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def catch_up(self, head: int) -> None:
        """Count every block from `height + 1` to `head` (no-op when already there)."""
        with self._lock:
            while self.height < head:
                hi = min(head, self.height + CHUNK)
                self._count(self.height + 1, hi)

    def _count(self, lo: int, hi: int) -> None:
        b, c = schema.blocks, schema.certificates
        with self.store.engine.connect() as conn:
            blocks = conn.execute(
                select(b.c.height, b.c.proposer, b.c.view)
                .where(b.c.height.between(lo, hi))
                .order_by(b.c.height)
            ).all()
            certs = conn.execute(
                select(c.c.height, c.c.signatures).where(c.c.height.between(lo, hi))
            ).all()
        for height, proposer, view in blocks:
            entry = self.activity.setdefault(proposer, ValidatorActivity())
            entry.proposed += 1
            entry.last_proposed = height
            if view > self.last_view:
                self.view_changes += 1
            self.last_view = view
        for height, signatures in certs:
            for item in json.loads(signatures):
                entry = self.activity.setdefault(str(item["validator"]), ValidatorActivity())
                entry.signed += 1
                if entry.last_signed is None or height > entry.last_signed:
                    entry.last_signed = height
        self.blocks += len(blocks)
        self.height = hi

    def counts(self, address: str) -> dict[str, Any]:
        entry = self.activity.get(address, ValidatorActivity())
        return {
            "proposed": entry.proposed,
            "signed": entry.signed,
            "missed": self.blocks - entry.signed,
            "last_proposed": entry.last_proposed,
            "last_signed": entry.last_signed,
        }


_INDEXES: weakref.WeakKeyDictionary[Store, ValidatorIndex] = weakref.WeakKeyDictionary()


def validator_index(store: Store, head: int) -> ValidatorIndex:
    """The index of `store`, counted up to `head` (created on first use)."""
    index = _INDEXES.get(store)
    if index is None:
        index = _INDEXES.setdefault(store, ValidatorIndex(store))
    index.catch_up(head)
    return index
