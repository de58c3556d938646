"""Checking a range of the chain with the same code as `layerchain verify`.

`verify_range` drives `ledger.verify.replay_blocks` — the function `verify_ledger` (the CLI) runs —
from genesis up to `end`: hash links, tx roots, signatures, certificates against the genesis
validator set, and the replayed receipts, state diffs and state roots. Checking block h needs the
state after h - 1, which only a replay from genesis gives, so heights below `start` are replayed
(and checked by the same rules) but only [start, end] is counted in the report.

A node keeps committing while this runs, so the end height is fixed when the check starts:
`verify_ledger` likewise reads the head once.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

from ledger.errors import LedgerError
from ledger.execution import BlockResult
from ledger.genesis import Genesis
from ledger.state import State
from ledger.store import Store, StoredBlock
from ledger.tensorstore import TensorStore
from ledger.verify import VerifyFailure, replay_blocks


@dataclass
class RangeReport:
    """What `verify_range` found; `ok` only if every height up to `end` checked out."""

    start: int
    end: int
    head: int
    ok: bool = True
    first_bad_height: int | None = None
    problem: str | None = None
    verified_height: int = 0
    """Every height up to this one checked out."""
    replayed: int = 0
    """Blocks replayed (from height 1)."""
    blocks: int = 0
    """Blocks checked inside [start, end]."""
    txs: int = 0
    certificate_signatures: int = 0
    reexecuted_jobs: int = 0
    trusted_reexecutions: int = 0
    """Re-executions whose outcome was taken from the ledger (no tensors given)."""
    state_root: str = ""
    """Replayed state root after `end` (or after the last good height)."""
    genesis_hash: str = ""
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def verify_range(
    store: Store,
    genesis: Genesis,
    start: int,
    end: int,
    *,
    tensors: TensorStore | None = None,
) -> RangeReport:
    """Check heights [start, end] of `store` against `genesis` (see the module docstring).

    Never raises for a bad ledger: the report names the first bad height and what is wrong.
    """
    started = time.perf_counter()
    head = store.height
    if start < 1 or end < start:
        raise LedgerError(f"give 1 <= from <= to (got from={start}, to={end})")
    report = RangeReport(start=start, end=end, head=head, genesis_hash=genesis.hash)
    if end > head:
        report.ok, report.first_bad_height = False, head + 1
        report.problem = f"block {head + 1} is missing: the head is {head}"
        return report
    stored_genesis = store.genesis
    if stored_genesis.hash != genesis.hash:
        report.ok, report.first_bad_height = False, 0
        report.problem = (
            f"the database's genesis {stored_genesis.hash[:16]}… is not this node's genesis "
            f"{genesis.hash[:16]}…"
        )
        return report
    if tensors is None:
        report.notes.append(
            "no tensors used: outcomes of jobs the chain re-executed were taken from the ledger "
            "(bound by the state roots, but not recomputed)"
        )

    def count(stored: StoredBlock, result: BlockResult, state: State) -> None:
        report.replayed += 1
        report.verified_height = result.height
        report.state_root = result.state_root
        if result.height < start:
            return
        report.blocks += 1
        report.txs += len(stored.block.txs)
        if stored.certificate is not None:
            report.certificate_signatures += len(stored.certificate.signatures)
        if tensors is None:
            report.trusted_reexecutions += len(result.reexecuted)
        else:
            report.reexecuted_jobs += len(result.reexecuted)

    try:
        for stored, _result in replay_blocks(store, genesis, tensors=tensors, on_block=count):
            if stored.block.header.height >= end:
                break
    except VerifyFailure as failure:
        report.ok, report.first_bad_height, report.problem = False, failure.height, failure.problem
    except LedgerError as exc:  # an unreadable row
        report.ok, report.first_bad_height = False, report.verified_height + 1
        report.problem = str(exc)
    if report.ok and report.verified_height < end:
        report.ok, report.first_bad_height = False, report.verified_height + 1
        report.problem = f"block {report.verified_height + 1} is missing"
    report.seconds = round(time.perf_counter() - started, 3)
    return report
