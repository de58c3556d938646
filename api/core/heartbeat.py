"""Heartbeat blocks: when this validator proposes, or votes for, a block without txs.

Deadlines are counted in blocks (a job's commit and reveal phases), and the core proposes only
when it holds txs, so on an idle chain they never passed: a job whose miners vanished stayed
open for ever, and a driver waiting for it waited for ever. Now, while some job is open or
revealing, a primary that saw no block for `interval_s` proposes an empty one (the core asks
`Node.heartbeat_due`), and a backup votes for an empty block only while some job is live and
at least half the interval passed since its own last block (`acceptable`): a primary cannot
rush deadlines past with a burst of empty blocks. Once every job is final the chain idles again.
An idle backup also asks `heartbeat_due`: while one is owed it runs its view timer, so a primary
that died (or sends nothing) on an idle chain is replaced (`Replica._watch_heartbeat`).

Node policy, not protocol: an empty block was always valid (PROTOCOL.md §6.3); this decides
when an honest validator makes or accepts one. Clocks are local (monotonic), so a backup that
committed the parent much later than the others may refuse a heartbeat the others accept; the
block then waits for the others' quorum, or for the next heartbeat after a view change.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from ledger.state import OPEN, REVEALING, Job

#: Job statuses with a deadline still ahead (a waiting job waits on such a job).
LIVE = (OPEN, REVEALING)


class Heartbeat:
    """The live jobs and the time of the last block, as this validator saw them."""

    def __init__(self, interval_s: float, jobs: Iterable[Job], now: float) -> None:
        self.interval_s = interval_s
        """0 turns heartbeats off (the core then proposes only txs, as before)."""
        self.live = {job.id for job in jobs if job.status in LIVE}
        self.last_block_at = now

    def after_block(self, changed_jobs: Mapping[str, Mapping[str, Any]], now: float) -> None:
        """A block committed; `changed_jobs` are the job records it wrote (its diff)."""
        self.last_block_at = now
        for job_id, record in changed_jobs.items():
            if record["status"] in LIVE:
                self.live.add(job_id)
            else:
                self.live.discard(job_id)

    def due(self, now: float) -> bool:
        """As primary: propose an empty block now."""
        return self._waited(now, self.interval_s)

    def acceptable(self, now: float) -> bool:
        """As backup: vote for an empty block now."""
        return self._waited(now, self.interval_s / 2)

    def _waited(self, now: float, at_least: float) -> bool:
        return self.interval_s > 0 and bool(self.live) and now - self.last_block_at >= at_least
