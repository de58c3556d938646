"""Merge queued single-job result txs into batches (`commit_results`, `reveal_results`).

A miner working on many jobs queues one `commit_result` or `reveal_result` per job; sent as they
are, a job round with r = 2 costs the chain 5 signed txs (post, 2 commits, 2 reveals), and
signature checks and per-tx overhead on every validator cap the jobs it can settle. `merge`
turns a queue of (type, body) items into the txs to sign: runs of commits become one
`commit_results`, runs of reveals one `reveal_results` (PROTOCOL.md §5.3), each within
`MAX_BATCH_RESULTS` items and a byte budget under the chain's `max_tx_bytes`. Every other item
(and a lone result) goes out unchanged. Item order is kept, so a job's commit is never signed
after its reveal.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from ledger.transactions import (
    COMMIT_RESULT,
    COMMIT_RESULTS,
    MAX_BATCH_RESULTS,
    REVEAL_RESULT,
    REVEAL_RESULTS,
)

T = TypeVar("T")

#: Body bytes a batch may grow to: the default `max_tx_bytes` (16 KiB) less room for the envelope
#: (type, sender, nonce, signature and keys: ~300 bytes).
BODY_BUDGET = 15_000

_BATCH_OF = {COMMIT_RESULT: (COMMIT_RESULTS, "commits"), REVEAL_RESULT: (REVEAL_RESULTS, "reveals")}


@dataclass
class Merged(Generic[T]):
    """One tx to sign, and the tags (e.g. futures) of every queued item it carries."""

    tx_type: str
    body: dict[str, Any]
    tags: list[T] = field(default_factory=list)


def merge(
    items: Sequence[tuple[str, dict[str, Any], T]], budget: int = BODY_BUDGET
) -> list[Merged[T]]:
    """The txs for `items` (type, body, tag), in order, with result runs batched."""
    out: list[Merged[T]] = []
    run: list[tuple[dict[str, Any], T]] = []
    run_type = ""
    size = 0

    def flush() -> None:
        nonlocal run, size
        if len(run) == 1:
            out.append(Merged(run_type, run[0][0], [run[0][1]]))
        elif run:
            batch_type, key = _BATCH_OF[run_type]
            out.append(Merged(batch_type, {key: [b for b, _ in run]}, [t for _, t in run]))
        run, size = [], 0

    for tx_type, body, tag in items:
        if tx_type not in _BATCH_OF:
            flush()
            out.append(Merged(tx_type, body, [tag]))
            continue
        item_size = len(json.dumps(body, separators=(",", ":"))) + 1
        if run and (
            tx_type != run_type
            or len(run) >= MAX_BATCH_RESULTS
            or size + item_size > budget
            or any(b["job_id"] == body["job_id"] for b, _ in run)
        ):
            flush()
        run_type = tx_type
        run.append((body, tag))
        size += item_size
    flush()
    return out
