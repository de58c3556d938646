"""The incremental assignment index gives exactly what building it from every live job gives.

`reference` below is the index as `GET /work` built it from scratch at every block before it
became incremental; random job histories (opening, commitments, reveals, settling, new jobs,
blocks the index misses) are followed one changed job at a time and compared with it.
"""

from __future__ import annotations

import hashlib
import random
from types import SimpleNamespace
from typing import Any

import pytest

from api.routes.assignment import (
    DEFAULT_DEPTH,
    STALE_S,
    Book,
    Pending,
    build,
    job_key,
    live_jobs,
    rank_miners,
)
from ledger.identity import Keypair
from ledger.state import OPEN, REVEALING, SETTLED, WAITING, Job
from ledger.transactions import (
    COMMIT_RESULT,
    COMMIT_RESULTS,
    REVEAL_RESULT,
    REVEAL_RESULTS,
    TRANSFER,
    Tx,
    commit_body,
    commits_body,
    reveal_body,
    reveals_body,
    sign_tx,
    transfer_body,
)


def reference(
    live: list[Job],
    miners: frozenset[str],
    depth: dict[str, int],
    reachable_since: dict[str, float],
    now: float,
) -> dict[str, Any]:
    """The pre-incremental `_build` of api/routes/work.py, on plain job ids."""
    live = sorted(live, key=job_key)
    assigned: dict[str, tuple[str, ...]] = {}
    queue: dict[str, list[str]] = {}
    position: dict[tuple[str, str], int] = {}
    reveal: dict[str, list[str]] = {}
    opened: list[Job] = []
    for job in live:
        if job.status == REVEALING:
            for miner in job.commits:
                if miner not in job.reveals:
                    reveal.setdefault(miner, []).append(job.id)
            continue
        opened.append(job)
        slots = job.replication - len(job.commits)
        if slots <= 0:
            continue
        ranked = rank_miners(job.id, miners)
        chosen = tuple(m for m in ranked if m not in job.commits and m not in job.reveals)[:slots]
        assigned[job.id] = chosen
        for miner in chosen:
            mine = queue.setdefault(miner, [])
            position[(job.id, miner)] = len(mine)
            mine.append(job.id)
    stale: list[str] = []
    since: dict[str, float] = {}
    for job in opened:
        owners = assigned.get(job.id, ())
        if owners and all(position[(job.id, m)] < depth.get(m, DEFAULT_DEPTH) for m in owners):
            since[job.id] = reachable_since.get(job.id, now)
            if now - since[job.id] > STALE_S:
                stale.append(job.id)
    return {
        "assigned": assigned,
        "queue": queue,
        "position": position,
        "reveal": reveal,
        "newest_first": [j.id for j in reversed(opened)],
        "stale": stale,
        "since": since,
        "idle": frozenset(m for m in miners if not queue.get(m)),
    }


def _address(rng: random.Random) -> str:
    return hashlib.sha256(rng.randbytes(8)).hexdigest()


class History:
    """Jobs changing block after block as the state machine changes them (copy-on-write)."""

    def __init__(self, seed: int, miners: list[str]) -> None:
        self.rng = random.Random(seed)
        self.miners = miners
        self.height = 0
        self.jobs: dict[str, Job] = {}
        self.state = SimpleNamespace(jobs=self.jobs, schedule={})

    def _new(self) -> Job:
        job = Job(
            id=_address(self.rng),
            poster="00" * 32,
            op="dense_forward",
            kernel_version="1",
            inputs=[],
            params={},
            replication=self.rng.choice((1, 2, 2, 3)),
            reward=1,
            deadline=10,
            output_metas=[],
            macs=1,
            posted_height=self.height,
        )
        if self.rng.random() < 0.8:
            job.status, job.open_height = OPEN, self.height
        return job

    def _change(self, job: Job) -> Job:
        job = job.copy()
        free = [m for m in self.miners if m not in job.commits]
        if job.status == WAITING:
            job.status, job.open_height = OPEN, self.height
        elif job.status == OPEN and free and self.rng.random() < 0.9:
            job.commits[self.rng.choice(free)] = "cc" * 32
            if len(job.commits) >= job.replication:
                job.status = REVEALING
        elif job.status == REVEALING:
            unrevealed = [m for m in job.commits if m not in job.reveals]
            if unrevealed and self.rng.random() < 0.7:
                job.reveals[self.rng.choice(unrevealed)] = ["dd" * 32]
            else:
                job.status = SETTLED
        else:
            job.status = SETTLED  # expired with too few commitments, in effect
        return job

    def block(self) -> list[str]:
        """One block: new jobs and changes to some live or waiting ones; the ids it wrote."""
        self.height += 1
        written: dict[str, Job] = {}
        for _ in range(self.rng.randrange(4)):
            job = self._new()
            written[job.id] = job
        unfinished = [j for j in self.jobs.values() if j.status in (WAITING, OPEN, REVEALING)]
        for job in self.rng.sample(unfinished, min(len(unfinished), self.rng.randrange(6))):
            written[job.id] = self._change(job)
        self.jobs.update(written)
        # Like State.schedule: live jobs under a deadline height; stale ids may linger.
        schedule: dict[int, set[str]] = self.state.schedule
        for job in written.values():
            if job.status in (OPEN, REVEALING):
                schedule.setdefault(self.height + 5, set()).add(job.id)
        return list(written)

    def live(self) -> list[Job]:
        return [j for j in self.jobs.values() if j.status in (OPEN, REVEALING)]


def _same(index: Any, want: dict[str, Any]) -> None:
    assert index.assigned == want["assigned"]
    assert {m: [k[1] for k in keys] for m, keys in index.queue.items()} == want["queue"]
    for (job_id, miner), at in want["position"].items():
        assert index.position(index.jobs[job_id], miner) == at
    assert {m: index.reveals(m) for m in index.reveal} == want["reveal"]
    assert [j.id for j in index.newest(10_000)] == want["newest_first"]
    assert [j.id for j in index.newest(3)] == want["newest_first"][:3]
    assert [j.id for j in index.stale] == want["stale"]
    assert index.idle == want["idle"]


@pytest.mark.parametrize("seed", range(12))
def test_following_changed_jobs_matches_a_full_build(seed: int) -> None:
    rng = random.Random(1000 + seed)
    miners = [_address(rng) for _ in range(rng.randrange(1, 7))]
    history = History(seed, miners)
    active = frozenset(miners[: max(1, len(miners) - 1)])  # one miner may be only a committer
    index = build(history.state, active, [])  # type: ignore[arg-type]
    since: dict[str, float] = {}
    for step in range(60):
        written = history.block()
        if rng.random() < 0.2:
            index.resync(live_jobs(history.state))  # type: ignore[arg-type]  # missed blocks
        else:
            for job_id in written:
                index.follow(job_id, history.jobs[job_id])
        depth = {m: rng.randrange(1, 5) for m in miners if rng.random() < 0.7}
        now = step * 0.8
        want = reference(history.live(), active, depth, since, now)
        since = index.settle(depth, since, now)
        assert since == want["since"]
        _same(index, want)
    assert any(index.queue.values()) or not history.live()


def test_the_book_rebuilds_when_the_active_miners_change_and_follows_blocks_otherwise() -> None:
    rng = random.Random(7)
    miners = [_address(rng) for _ in range(4)]
    history = History(7, miners[:3])  # the fourth miner commits to nothing
    book = Book()
    for miner in miners[:3]:
        book.see(miner, 0.0)
        book.polling[miner] = 1  # long-polling: active however long ago it was seen
    state: Any = history.state
    for _ in range(5):
        history.block()
    index = book.refresh(state, history.height, None, 0.0)
    assert index.miners >= frozenset(miners[:3])
    for step in range(1, 30):
        written = history.block()
        if step == 10:
            book.see(miners[3], step)  # a new miner: every ranking changes
            book.polling[miners[3]] = 1
        before = dict(book.reachable_since)
        again = book.refresh(state, history.height, written, float(step))
        if step < 10:
            assert again is index, "a block is followed, not rebuilt from scratch"
        index = again
        committers = {m for j in history.live() if j.status == OPEN for m in j.commits}
        want = reference(
            history.live(), frozenset(book.seen) | committers, book.depth, before, float(step)
        )
        _same(index, want)
    assert miners[3] in index.miners
    assert book.refresh(state, history.height, None, 29.0) is index, "same height: kept"


def _pending_tx(rng: random.Random, keys: list[Keypair], jobs: list[str], nonce: int) -> Tx:
    key = rng.choice(keys)
    picked = rng.sample(jobs, rng.randrange(1, 4))
    commits = [commit_body(j, key.address, ["ee" * 32], "ab" * 32) for j in picked]
    reveals = [reveal_body(j, ["ee" * 32], "ab" * 32) for j in picked]
    kind, body = rng.choice(
        [
            (COMMIT_RESULT, commits[0]),
            (REVEAL_RESULT, reveals[0]),
            (COMMIT_RESULTS, commits_body(commits)),
            (REVEAL_RESULTS, reveals_body(reveals)),
            (TRANSFER, transfer_body("00" * 32, 1)),  # not a result: ignored
        ]
    )
    return sign_tx(key, "test-chain", kind, nonce, body)


def test_pending_results_followed_tx_by_tx_match_a_fresh_scan() -> None:
    """`Pending.follow` gives what reading every pending tx again would give."""
    rng = random.Random(3)
    keys = [Keypair.from_seed(bytes([i]) * 32) for i in range(3)]
    jobs = [_address(rng) for _ in range(5)]
    pending: dict[str, Tx] = {}
    followed = Pending()
    for step in range(80):
        for tx_hash in rng.sample(sorted(pending), min(len(pending), rng.randrange(3))):
            del pending[tx_hash]
        for _ in range(rng.randrange(4)):
            tx = _pending_tx(rng, keys, jobs, step)
            pending[tx.hash] = tx
        followed.follow(dict(pending))
        fresh = Pending()
        fresh.follow(dict(pending))
        want_senders: dict[str, set[str]] = {}
        want_reveals: set[tuple[str, str]] = set()
        for tx in pending.values():
            items = tx.body.get("commits") or tx.body.get("reveals") or [tx.body]
            for item in items if tx.type != TRANSFER else []:
                if tx.type in (COMMIT_RESULT, COMMIT_RESULTS):
                    want_senders.setdefault(item["job_id"], set()).add(tx.sender)
                else:
                    want_reveals.add((item["job_id"], tx.sender))
        assert {j: set(c) for j, c in followed.senders.items()} == want_senders
        assert set(followed.reveals) == want_reveals
        assert followed.by_miner == fresh.by_miner and followed.miners == fresh.miners
        assert all(n > 0 for n in followed.by_miner.values())
        assert followed.senders == fresh.senders and followed.reveals == fresh.reveals
