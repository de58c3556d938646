"""The assignment index behind `GET /work`: which active miner owns which open job, kept up to
date one changed job at a time.

The rules are `api.routes.work`'s (its docstring): each open job goes to the `r` miners with the
highest `H(job, miner)` among the active miners, committed ones excluded; a miner's queue is its
assigned jobs oldest first (`(open_height, id)` order); a miner that committed to a revealing job
and has not revealed owes a reveal; a job within reach of all its owners for `STALE_S` is stale.

**Why incremental.** At saturation a node holds thousands of live jobs, and the index was
rebuilt from all of them at every block (~8 ms of CPU per block per node, most of it re-ranking
miners for jobs nothing had happened to). The state machine replaces a job's record with a new
object whenever a block writes it (copy-on-write), and each block's result names the jobs it
wrote, so the index follows exactly those: it drops what the old record contributed and adds what
the new one does. Queues and lists are sorted lists of `(open_height, id)` keys, so a position in
a queue is a bisection and a job leaving is a C-level delete. When the index missed blocks (two
committed between requests, a restart, state transfer) it compares every live record with the
one it holds (by identity: unchanged jobs are the same objects) and follows the differing ones;
when the set of active miners changes every ranking changes, and it is built afresh.
"""

from __future__ import annotations

import hashlib
from bisect import bisect_left, insort
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ledger.state import OPEN, REVEALING, Job, State
from ledger.transactions import (
    COMMIT_RESULT,
    COMMIT_RESULTS,
    REVEAL_RESULT,
    REVEAL_RESULTS,
    SUBMIT_RESULT,
    result_items,
)

#: A miner counts as active while it long-polls this node, and this long after this node last
#: saw it (an answer, or a result of it pending): a dead miner's jobs move to others this soon.
ACTIVE_S = 10.0
#: Depth assumed for a miner that never told this node its limit.
DEFAULT_DEPTH = 4
#: A job within reach of its owners (they may be computing it) for this long is stealable anyway.
STALE_S = 3.0

Key = tuple[int, str]
"""`(open_height, job id)`: the FIFO order of live jobs."""


def job_key(job: Job) -> Key:
    return (job.open_height or 0, job.id)


def rank_miners(job_id: str, miners: Iterable[str]) -> tuple[str, ...]:
    """Miners in rendezvous order for a job: highest `sha256(job || miner)` first."""
    job = bytes.fromhex(job_id)
    return tuple(
        sorted(miners, key=lambda m: hashlib.sha256(job + bytes.fromhex(m)).digest(), reverse=True)
    )


def live_jobs(state: State) -> dict[str, Job]:
    """Open and revealing jobs (the schedule indexes every one by its pending deadline)."""
    out: dict[str, Job] = {}
    jobs = state.jobs
    for ids in list(state.schedule.values()):
        for job_id in ids:
            job = jobs.get(job_id)
            if job is not None and job.status in (OPEN, REVEALING):
                out[job_id] = job
    return out


def _drop(lists: dict[str, list[Key]], miner: str, key: Key) -> None:
    """Remove `key` from `miner`'s sorted list (and the list once empty)."""
    keys = lists[miner]
    at = bisect_left(keys, key)
    if at == len(keys) or keys[at] != key:
        raise KeyError(f"job {key[1]} is not listed for miner {miner}")
    del keys[at]
    if not keys:
        del lists[miner]


class Index:
    """One node's view of the live jobs for one set of active miners."""

    def __init__(self, state: State, miners: frozenset[str]) -> None:
        self.state = state
        """The state followed (another object, after a restart or a reload: build afresh)."""
        self.miners = miners
        self.height = -1
        """Chain height the index reflects."""
        self.built_at = 0.0
        """When `stale` and `idle` were last worked out (monotonic seconds)."""
        self.jobs: dict[str, Job] = {}
        """Live jobs: the records the index reflects."""
        self.assigned: dict[str, tuple[str, ...]] = {}
        """Open job -> miners assigned to its remaining slots (best rank first), committed ones
        excluded; absent for jobs with no free slot."""
        self.queue: dict[str, list[Key]] = {}
        """Miner -> its assigned open jobs, oldest first (only miners with at least one)."""
        self.opened: list[Key] = []
        """Every open job, oldest first."""
        self.reveal: dict[str, list[Key]] = {}
        """Miner -> revealing jobs awaiting its reveal, oldest first."""
        self.committers: Counter[str] = Counter()
        """Miner -> open jobs it committed to (committers count as active)."""
        self.ranks: dict[str, tuple[str, ...]] = {}
        self.stale: list[Job] = []
        """Open jobs within their owners' reach for over STALE_S, oldest first."""
        self.idle: frozenset[str] = frozenset()
        """Active miners with no assigned open job: the only ones that may steal."""

    # -------------------------------------------------------------------- reading

    def ranking(self, job_id: str) -> tuple[str, ...]:
        ranked = self.ranks.get(job_id)
        if ranked is None:
            ranked = self.ranks[job_id] = rank_miners(job_id, self.miners)
        return ranked

    def position(self, job: Job, miner: str) -> int:
        """How many assigned jobs `miner` has ahead of `job` (which is in its queue)."""
        return bisect_left(self.queue.get(miner, ()), job_key(job))  # type: ignore[arg-type]

    def own(self, miner: str) -> Iterable[Job]:
        """The miner's assigned open jobs, oldest first."""
        jobs = self.jobs
        return (jobs[key[1]] for key in self.queue.get(miner, ()))

    def newest(self, count: int) -> list[Job]:
        """The `count` newest open jobs, newest first."""
        jobs = self.jobs
        return [jobs[key[1]] for key in reversed(self.opened[-count:])] if count > 0 else []

    def reveals(self, miner: str) -> list[str]:
        """Ids of the revealing jobs awaiting the miner's reveal, oldest first."""
        return [key[1] for key in self.reveal.get(miner, ())]

    # -------------------------------------------------------------------- following the state

    def follow(self, job_id: str, job: Job | None) -> None:
        """Take a job's current record (None, or not live: the job leaves the index)."""
        old = self.jobs.get(job_id)
        if old is job:
            return
        if old is not None:
            self._remove(old)
        if job is not None and job.status in (OPEN, REVEALING):
            self._add(job)
        else:
            self.ranks.pop(job_id, None)

    def resync(self, live: dict[str, Job]) -> None:
        """Follow every job whose record differs from the live ones (after missed blocks)."""
        for job_id in [j for j in self.jobs if j not in live]:
            self.follow(job_id, None)
        for job_id, job in live.items():
            if self.jobs.get(job_id) is not job:
                self.follow(job_id, job)

    def _add(self, job: Job) -> None:
        key = job_key(job)
        self.jobs[job.id] = job
        if job.status == REVEALING:
            for miner in job.commits:
                if miner not in job.reveals:
                    insort(self.reveal.setdefault(miner, []), key)
            return
        insort(self.opened, key)
        for miner in job.commits:
            self.committers[miner] += 1
        slots = job.replication - len(job.commits)
        if slots <= 0:
            return
        chosen: list[str] = []
        for miner in self.ranking(job.id):
            if miner not in job.commits and miner not in job.reveals:
                chosen.append(miner)
                if len(chosen) == slots:
                    break
        self.assigned[job.id] = tuple(chosen)
        for miner in chosen:
            insort(self.queue.setdefault(miner, []), key)

    def _remove(self, job: Job) -> None:
        key = job_key(job)
        del self.jobs[job.id]
        if job.status == REVEALING:
            for miner in job.commits:
                if miner not in job.reveals:
                    _drop(self.reveal, miner, key)
            return
        at = bisect_left(self.opened, key)
        del self.opened[at]
        for miner in job.commits:
            self.committers[miner] -= 1
            if not self.committers[miner]:
                del self.committers[miner]
        for miner in self.assigned.pop(job.id, ()):
            _drop(self.queue, miner, key)

    def settle(
        self, depth: dict[str, int], reachable_since: dict[str, float], now: float
    ) -> dict[str, float]:
        """Work out `stale` and `idle` at `now`; returns the new `reachable_since` (job -> when
        it came within reach of all its owners, i.e. within each owner's first `depth` jobs)."""
        candidates: set[Key] = set()
        for miner, keys in self.queue.items():
            candidates.update(keys[: depth.get(miner, DEFAULT_DEPTH)])
        since: dict[str, float] = {}
        stale: list[Job] = []
        for key in sorted(candidates):
            job_id = key[1]
            if all(
                bisect_left(self.queue[m], key) < depth.get(m, DEFAULT_DEPTH)
                for m in self.assigned[job_id]
            ):
                since[job_id] = reachable_since.get(job_id, now)
                if now - since[job_id] > STALE_S:
                    stale.append(self.jobs[job_id])
        self.stale = stale
        self.idle = frozenset(m for m in self.miners if m not in self.queue)
        self.built_at = now
        return since


def build(state: State, miners: frozenset[str], jobs: Iterable[Job]) -> Index:
    """An index of `jobs` (live records of `state`) for these miners."""
    index = Index(state, miners)
    for job in sorted(jobs, key=job_key):
        index.follow(job.id, job)
    return index


_COMMITS = (COMMIT_RESULT, SUBMIT_RESULT, COMMIT_RESULTS)
_REVEALS = (REVEAL_RESULT, REVEAL_RESULTS)


def _less(counts: Counter[Any], key: Any) -> None:
    counts[key] -= 1
    if counts[key] <= 0:
        del counts[key]


@dataclass
class Pending:
    """Results waiting in this node's pending set, followed tx by tx as the set changes (a
    pending tx is read once, not at every request: a busy node holds hundreds of them)."""

    senders: dict[str, Counter[str]] = field(default_factory=dict)
    """job -> miners with a pending commitment or submission (-> how many)."""
    reveals: Counter[tuple[str, str]] = field(default_factory=Counter)
    """(job, miner) with a pending reveal."""
    by_miner: Counter[str] = field(default_factory=Counter)
    """Pending commitments and submissions per miner."""
    miners: Counter[str] = field(default_factory=Counter)
    """Senders of pending result txs (-> how many)."""
    txs: dict[str, tuple[bool, str, tuple[str, ...]] | None] = field(default_factory=dict)
    """Pending tx hash -> (commits?, sender, job ids), None for txs that are not results."""

    def follow(self, pending: dict[str, Any]) -> None:
        """Take the replica's pending set (tx hash -> tx) as it is now."""
        known = self.txs
        if known.keys() == pending.keys():
            return
        for tx_hash in known.keys() - pending.keys():
            self._remove(known.pop(tx_hash))
        for tx_hash in pending.keys() - known.keys():
            known[tx_hash] = entry = _entry(pending[tx_hash])
            if entry is not None:
                self._add(entry)

    def _add(self, entry: tuple[bool, str, tuple[str, ...]]) -> None:
        commits, sender, jobs = entry
        self.miners[sender] += 1
        for job_id in jobs:
            if commits:
                self.senders.setdefault(job_id, Counter())[sender] += 1
                self.by_miner[sender] += 1
            else:
                self.reveals[(job_id, sender)] += 1

    def _remove(self, entry: tuple[bool, str, tuple[str, ...]] | None) -> None:
        if entry is None:
            return
        commits, sender, jobs = entry
        _less(self.miners, sender)
        for job_id in jobs:
            if commits:
                _less(self.senders[job_id], sender)
                if not self.senders[job_id]:
                    del self.senders[job_id]
                _less(self.by_miner, sender)
            else:
                _less(self.reveals, (job_id, sender))


def _entry(tx: Any) -> tuple[bool, str, tuple[str, ...]] | None:
    kind = getattr(tx, "type", None)
    if kind not in _COMMITS and kind not in _REVEALS:
        return None
    jobs = tuple(item["job_id"] for item in result_items(tx))  # one per job, batches included
    return (kind in _COMMITS, tx.sender, jobs)


@dataclass
class Book:
    """Per-node memory across requests: miners seen, their depths, the index."""

    seen: dict[str, float] = field(default_factory=dict)
    polling: Counter[str] = field(default_factory=Counter)
    """miner -> its long-polls in flight on this node."""
    depth: dict[str, int] = field(default_factory=dict)
    """miner -> the commit limit of its last request (how far ahead its backlog reaches)."""
    index: Index | None = None
    """None: build afresh at the next request (a miner appeared)."""
    pending: Pending = field(default_factory=Pending)
    pending_at: float = -1.0
    reachable_since: dict[str, float] = field(default_factory=dict)
    """job -> when it came within reach of all its owners (for STALE_S)."""

    def see(self, miner: str, now: float) -> None:
        self.seen[miner] = now

    def active(self, now: float, committers: Iterable[str]) -> frozenset[str]:
        for miner in [m for m, t in self.seen.items() if now - t > ACTIVE_S]:
            if not self.polling[miner]:
                del self.seen[miner]
        return frozenset(self.seen) | frozenset(committers)

    def refresh(
        self, state: State, height: int, changed: Iterable[str] | None, now: float
    ) -> Index:
        """The index at `height`, brought up to date.

        `changed`: the jobs the block at `height` wrote, when the index was at `height - 1` (None
        when unknown: every live record is compared). The index is rebuilt when the state object
        or the set of active miners changed; `stale` and `idle` are worked out again at each new
        height and every STALE_S / 2.
        """
        index = self.index
        if index is None or index.state is not state:
            live = live_jobs(state)
            committers = {m for j in live.values() if j.status == OPEN for m in j.commits}
            index = build(state, self.active(now, committers), live.values())
        elif index.height != height:
            if changed is not None and index.height == height - 1:
                jobs = state.jobs
                for job_id in changed:
                    index.follow(job_id, jobs.get(job_id))
            else:
                index.resync(live_jobs(state))
        elif now - index.built_at <= STALE_S / 2:
            return index
        miners = self.active(now, index.committers)
        if miners != index.miners:
            index = build(state, miners, index.jobs.values())
        index.height = height
        self.reachable_since = index.settle(self.depth, self.reachable_since, now)
        self.index = index
        return index
