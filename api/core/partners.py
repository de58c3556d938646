"""The primary's partner wait: a lone replica result waits a moment for the results beside it.

A job with replication r needs r commitments before its reveal phase opens and then r reveals
before it settles. The r miners finish a few milliseconds apart and send to different
validators, so the primary — which proposes as soon as it holds a tx and no block is in flight —
used to put the first commitment in one block and the second in the next, and the same again
for the reveals: a job round of 5 blocks where the protocol needs 3 (post, commits, reveals).

So, as the primary, the node holds back a block whose every candidate is such a lone result —
a commitment or reveal for a job that the candidates would still leave incomplete — until its
partners arrive (the candidate set then completes a job and the block goes at once) or until
`window_s` has passed since the oldest candidate was admitted. Any other tx, or any item that
completes a job, ends the wait: a transfer or a post never waits, and a busy chain (where the
next block always holds something complete) never waits either.

This is proposal policy, not protocol: no block is judged by it, and a primary that ignores it
only makes rounds longer. The consensus core stays pure: the node answers the core's `propose`
with "wait" (as for a nonce gap) and feeds `AppReady` when the wait is over.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ledger.state import OPEN, REVEALING
from ledger.transactions import (
    COMMIT_RESULT,
    COMMIT_RESULTS,
    REVEAL_RESULT,
    REVEAL_RESULTS,
    Tx,
    result_items,
)

#: Default of `Settings.partner_wait_s`: long enough for the second miner's result to reach the
#: primary through another validator, short against a block (~9 ms idle) so a partner that never
#: comes costs little.
PARTNER_WAIT_S = 0.008

_COMMITS = (COMMIT_RESULT, COMMIT_RESULTS)
_REVEALS = (REVEAL_RESULT, REVEAL_RESULTS)
_RESULTS = frozenset(_COMMITS + _REVEALS)


def partner_wait(
    txs: Sequence[Tx],
    jobs: Mapping[str, Any],
    admitted_at: Callable[[Tx], float],
    now: float,
    window_s: float = PARTNER_WAIT_S,
) -> float:
    """Seconds the primary should still wait before proposing `txs`; 0.0 means propose now.

    `jobs` maps job ids to the chain's `Job` records (`status`, `replication`, `commits`,
    `reveals`); `admitted_at(tx)` is when this node admitted a tx (same clock as `now`).
    """
    if not txs or any(tx.type not in _RESULTS for tx in txs):
        return 0.0  # nothing, or something that is not a replica result: nothing to wait for
    left = min(admitted_at(tx) for tx in txs) + window_s - now
    if left <= 0:
        return 0.0
    commits: Counter[str] = Counter()
    reveals: Counter[str] = Counter()
    for tx in txs:
        if tx.type in _COMMITS:
            commits.update(item["job_id"] for item in result_items(tx))
        else:
            reveals.update(item["job_id"] for item in result_items(tx))
    for job_id, count in commits.items():
        job = jobs.get(job_id)
        if job is None or job.status != OPEN or len(job.commits) + count >= job.replication:
            return 0.0  # completes a commit phase (or will fail at once): go
    for job_id, count in reveals.items():
        job = jobs.get(job_id)
        if job is None or job.status != REVEALING or len(job.reveals) + count >= len(job.commits):
            return 0.0  # completes a reveal phase (or will fail at once): go
    return left
