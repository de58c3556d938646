"""Work queues for miners and drivers, answered from the in-memory state with long-poll.

- `GET /work?miner=ADDR&wait=S`: what this miner can do now: jobs open for commitment that it has
  not committed to, and jobs in their reveal phase awaiting its reveal. One request per block
  instead of a scan of `/jobs` (which keeps listing jobs the miner already committed to).
- `POST /work/results?wait=S {"jobs": [...]}`: the status and outputs of many jobs, returned
  once all of them are final (or on timeout). The driver waits for a whole training step with it.

Added by the miner/driver work (issue 6); served from `node.chain.state`, never the SQL projection,
so it costs nothing per open job beyond a dict lookup.
"""

from __future__ import annotations

import hashlib
import time
from collections import Counter
from typing import Any

from fastapi import APIRouter, HTTPException, Query, Request
from pydantic import BaseModel

from api.core.bodies import read_json
from api.core.errors import ERROR_RESPONSES
from api.deps import NodeDep
from api.routes.jobs import JobOut, job_out
from ledger.state import FINAL_STATUSES, OPEN, REVEALING, Job
from ledger.transactions import COMMIT_RESULT, SUBMIT_RESULT

router = APIRouter(prefix="/work", tags=["work"])

ADDRESS = r"^[0-9a-f]{64}$"
MAX_RESULT_JOBS = 5000


class WorkOut(BaseModel):
    height: int
    """Chain height the answer reflects."""
    commit: list[JobOut]
    """Open jobs this miner has not committed to (or, for replication 1, not submitted)."""
    reveal: list[str]
    """Ids of jobs in their reveal phase where this miner committed and has not revealed."""


class ResultStatus(BaseModel):
    id: str
    status: str
    """A job status, or `unknown` while its post_job is not committed yet."""
    outputs: list[str] | None
    settlement: str | None
    settled_height: int | None
    reason: str


class ResultsOut(BaseModel):
    height: int
    done: bool
    """True when every listed job is final (settled, expired or failed)."""
    jobs: list[ResultStatus]


def _live_jobs(node: NodeDep) -> list[Job]:
    """Open and revealing jobs: the schedule indexes every one by its pending deadline."""
    state = node.chain.state
    seen: set[str] = set()
    out: list[Job] = []
    for ids in list(state.schedule.values()):
        for job_id in ids:
            job = state.jobs.get(job_id)
            if job is None or job_id in seen or job.status not in (OPEN, REVEALING):
                continue
            seen.add(job_id)
            out.append(job)
    out.sort(key=lambda j: (j.open_height or 0, j.id))
    return out


def _pending_results(node: NodeDep) -> tuple[Counter[str], set[tuple[str, str]]]:
    """Commitments and submissions waiting in this node's pending set: per job, and (job, miner).

    A job whose committed plus pending commitments already reach its replication is not offered:
    another miner computing it would only lose the race to the commit phase's close.
    """
    per_job: Counter[str] = Counter()
    mine: set[tuple[str, str]] = set()
    replica = node.replica
    if replica is None:
        return per_job, mine
    for tx in list(replica.pending.values()):
        if getattr(tx, "type", None) in (COMMIT_RESULT, SUBMIT_RESULT):
            job_id = tx.body["job_id"]
            per_job[job_id] += 1
            mine.add((job_id, tx.sender))
    return per_job, mine


def _work_for(node: NodeDep, miner: str, limit: int) -> tuple[list[Job], list[str]]:
    commit: list[Job] = []
    reveal: list[str] = []
    pending, mine = _pending_results(node)
    for job in _live_jobs(node):
        if job.status == OPEN and miner not in job.commits and miner not in job.reveals:
            taken = len(job.commits) + pending[job.id] >= job.replication
            if not taken and (job.id, miner) not in mine:
                commit.append(job)
        elif job.status == REVEALING and miner in job.commits and miner not in job.reveals:
            reveal.append(job.id)
    # Spread miners over the open jobs: fewest commitments first, then an order of this miner's
    # own (a hash of miner and job), so each miner's short list differs from the others'.
    me = bytes.fromhex(miner)
    commit.sort(
        key=lambda j: (
            len(j.commits) + pending[j.id],
            hashlib.sha256(me + bytes.fromhex(j.id)).digest(),
        )
    )
    return commit[:limit], reveal


async def _wait_block(node: NodeDep, height: int, deadline: float) -> bool:
    """Wait for a block after `height`; False once the deadline passed."""
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        return False
    if node.chain.height == height:
        await node.events.wait(min(remaining, 1.0))
    return True


@router.get("", response_model=WorkOut, responses=ERROR_RESPONSES)
async def get_work(
    node: NodeDep,
    miner: str = Query(pattern=ADDRESS, description="The miner's address."),
    limit: int = Query(64, ge=1, le=1000, description="Most open jobs to return."),
    wait: float = Query(0, ge=0, le=3600, description="Long-poll: wait this long for work."),
    since: int = Query(
        -1, ge=-1, description="Answer only once the chain is above this height (or on timeout)."
    ),
) -> WorkOut:
    """Jobs this miner can commit to or must reveal; with `wait`, returns as soon as there are.

    A miner passes the `height` of its previous answer as `since`, so jobs it is still computing
    are listed again at most once per block instead of in a busy loop.
    """
    deadline = time.monotonic() + min(wait, node.settings.long_poll_max_s)
    commit: list[Job] = []
    reveal: list[str] = []
    while True:
        height = node.chain.height
        if height > since:
            commit, reveal = _work_for(node, miner, limit)
            if commit or reveal:
                break
        if not await _wait_block(node, height, deadline):
            break
    return WorkOut(
        height=node.chain.height,
        commit=[JobOut(**job_out(node, job)) for job in commit],
        reveal=reveal,
    )


def _result(node: NodeDep, job_id: str) -> dict[str, Any]:
    job = node.chain.state.jobs.get(job_id)
    if job is None:
        return {
            "id": job_id,
            "status": "unknown",
            "outputs": None,
            "settlement": None,
            "settled_height": None,
            "reason": "",
        }
    return {
        "id": job.id,
        "status": job.status,
        "outputs": job.outputs,
        "settlement": job.settlement,
        "settled_height": job.settled_height,
        "reason": job.reason,
    }


@router.post("/results", response_model=ResultsOut, responses=ERROR_RESPONSES)
async def wait_results(
    request: Request,
    node: NodeDep,
    wait: float = Query(0, ge=0, le=3600, description="Long-poll: wait this long for all."),
) -> ResultsOut:
    """Statuses and outputs of the listed jobs, once all are final or `wait` seconds passed."""
    raw = await read_json(request, node.settings.max_body_bytes)
    if not isinstance(raw, dict) or set(raw) != {"jobs"} or not isinstance(raw["jobs"], list):
        raise HTTPException(422, 'body must be {"jobs": [<job id>, ...]}')
    ids = raw["jobs"]
    if len(ids) > MAX_RESULT_JOBS:
        raise HTTPException(413, f"{len(ids)} jobs; the limit is {MAX_RESULT_JOBS}")
    if not all(isinstance(i, str) and len(i) == 64 for i in ids):
        raise HTTPException(422, "every job id must be 64 lowercase hex characters")
    deadline = time.monotonic() + min(wait, node.settings.long_poll_max_s)
    while True:
        height = node.chain.height
        results = [_result(node, job_id) for job_id in ids]
        done = all(r["status"] in FINAL_STATUSES for r in results)
        if done or not await _wait_block(node, height, deadline):
            break
    return ResultsOut(
        height=node.chain.height, done=done, jobs=[ResultStatus(**r) for r in results]
    )
