"""Work queues for miners and drivers, answered from the in-memory state with long-poll.

- `GET /work?miner=ADDR&wait=S&limit=N`: what this miner should do now: open jobs assigned to it
  (then jobs it may steal), and jobs in their reveal phase awaiting its reveal. `limit=0` asks for
  reveals only (a miner whose workers and backlog are full).
  With `inline_bytes=N` the answer also carries the input tensors of the `commit` jobs
  (`tensors`: {hash: base64 of the wire bytes}), for the jobs in order, as long as they fit in N
  bytes (capped at `MAX_INLINE_BYTES`): a miner then needs no `GET /work/tensors` per poll.
- `GET /work/tensors?hash=H&hash=H...`: several tensors in one answer (a job's inputs), framed
  as `<4-byte big-endian length><tensor wire bytes>` each, in the order asked. One request per
  job instead of one per input: under load every request to a node costs more than the transfer.
  The client checks each against its hash, as for `GET /tensors/{hash}`.
- `POST /work/results?wait=S {"jobs": [...]}`: the status and outputs of many jobs, returned
  once all of them are final (or on timeout). The driver waits for a whole training step with it.

**Assignment.** Miners do not announce what they compute until they commit, so miners that pick
jobs independently race: with 16 miners each r = 2 job was computed ~3 times. Instead each open
job is assigned, by rendezvous (highest-random-weight) hashing, to the `r` miners with the highest
`H(job, miner)` among the miners this node saw recently (its own pollers, the senders of pending
results, which gossip brings from every node, and the committers of live jobs). Every node ranks
the same miners the same way, so a miner's list is the same whichever node it asks; adding or
removing a miner moves only the jobs it gains or loses. A miner works through its assigned jobs
oldest first (FIFO). A job counts as taken once `r` commitments are committed or pending; a
commitment pending from a non-assigned miner (a thief) takes the slot of the lowest-ranked
assigned miner.

**Stealing.** Hashing balances load only on average, so a miner with no job of its own (idle) is
also offered jobs it may steal, each job to one thief (its highest-ranked idle miner): jobs that
every assigned miner still lacking a commitment has at least `its limit` jobs ahead of in its
queue (less those it already committed to) — it cannot have started them, and will drop them
when the thief's commitment appears. Newest first (last in the FIFO queues). The answer names
stolen jobs (`stolen`): a miner starts them at once or drops them, never keeps them queued.
A job that has sat within reach of its owners for `STALE_S` without them committing is stealable
too: an owner that died, skips the job (another kernel version) or never commits (a copier) must
not hold it until the commit deadline.

The index (assignment, queues, reveals: `api.routes.assignment`) follows each block's changed
jobs (and is rebuilt when the set of miners changes); a request costs a filter over the first
jobs of the asking miner's own queue.

Added by the miner/driver work (issue 6); served from `node.chain.state`, never the SQL projection.
"""

from __future__ import annotations

import base64
import hashlib
import re
import time
import weakref
from collections.abc import Collection, Sequence
from itertools import islice
from typing import Any

from fastapi import APIRouter, HTTPException, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from api.core.bodies import read_json
from api.core.errors import ERROR_RESPONSES
from api.deps import NodeDep
from api.routes.assignment import DEFAULT_DEPTH, Book, Index, Pending
from api.routes.jobs import JobOut, job_out
from ledger.state import FINAL_STATUSES, Job

router = APIRouter(prefix="/work", tags=["work"])

ADDRESS = r"^[0-9a-f]{64}$"
MAX_RESULT_JOBS = 5000
#: Most tensors in one `GET /work/tensors` (a job has a handful of inputs).
MAX_TENSORS = 64
#: Most input bytes `GET /work?inline_bytes=` carries (larger requests are capped to it).
MAX_INLINE_BYTES = 1 << 20
#: Steal candidates examined per request (newest first).
STEAL_SCAN = 64


class WorkOut(BaseModel):
    height: int
    """Chain height the answer reflects."""
    commit: list[JobOut]
    """Open jobs for this miner, in the order to compute them: its assigned jobs oldest first,
    then jobs it may steal."""
    reveal: list[str]
    """Ids of jobs in their reveal phase where this miner committed and has not revealed."""
    stolen: list[str] = []
    """Ids of the `commit` jobs offered for stealing (assigned to others): start them now or
    not at all — kept in a backlog they would be reached by their owners first."""
    tensors: dict[str, str] = {}
    """With `inline_bytes=N`: input tensors of the `commit` jobs this node holds, as
    {hash: base64 of the wire bytes}; those of the first jobs, in order, up to the first that
    would exceed N bytes (before base64). The miner checks each against its hash, as a download."""


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


# ----------------------------------------------------------------------------- assignment

_books: weakref.WeakKeyDictionary[Any, Book] = weakref.WeakKeyDictionary()


def _book(node: Any) -> Book:
    book = _books.get(node)
    if book is None:
        book = _books[node] = Book()
    return book


def _pending(node: NodeDep, book: Book, now: float) -> Pending:
    """Follow the replica's pending txs (at most once per millisecond); note their senders."""
    if now - book.pending_at < 0.001:
        return book.pending
    pending = book.pending
    replica = node.replica
    pending.follow(replica.pending if replica is not None else {})
    for sender in pending.miners:
        if sender not in book.seen:
            book.index = None  # a new miner: rank again
        book.see(sender, now)
    book.pending_at = now
    return pending


def _index(node: NodeDep, book: Book, now: float) -> Index:
    """The book's index at the chain's height (see `Book.refresh`)."""
    chain = node.chain
    height = chain.height
    last = chain.last_result
    changed = last.diff["jobs"] if last is not None and last.height == height else None
    return book.refresh(chain.state, height, changed, now)


def _takes(job: Job, miner: str, assigned: tuple[str, ...], pending: Pending) -> bool:
    """Is `miner` still one of the assigned miners for a free slot, given pending results?"""
    others: Collection[str] = pending.senders.get(job.id, ())
    if miner in others:
        return False
    free = job.replication - len(job.commits) - len(others)
    if free <= 0:
        return False
    thieves = sum(1 for m in others if m not in assigned)
    keep = [m for m in assigned if m not in others][: max(0, len(assigned) - thieves)]
    return miner in keep[:free]


def _stealable(
    job: Job, miner: str, index: Index, pending: Pending, book: Book, stale: bool = False
) -> bool:
    assigned = index.assigned.get(job.id, ())
    if miner in assigned or miner in job.commits or miner in job.reveals:
        return False
    others: Collection[str] = pending.senders.get(job.id, ())
    if miner in others or len(job.commits) + len(others) >= job.replication:
        return False
    # One thief per job (the highest-ranked idle miner that is not an owner): idle thieves that
    # all took the same few jobs at the tail of a batch lost most of their work.
    thief = next(
        (
            m
            for m in index.ranking(job.id)
            if m in index.idle
            and m not in assigned
            and m not in job.commits
            and m not in job.reveals
            and m not in others
        ),
        None,
    )
    if thief != miner:
        return False
    if stale:
        return True
    for owner in assigned:
        if owner in others:
            continue
        # Jobs ahead in its queue that it already committed to (pending, not in a block yet) are
        # behind it: without them the owner could be closer to this job than its position says.
        ahead = index.position(job, owner) - pending.by_miner[owner]
        if ahead < book.depth.get(owner, DEFAULT_DEPTH):
            return False  # the owner may already be computing it
    return True


def _work_for(
    node: NodeDep, miner: str, limit: int
) -> tuple[list[Job], list[str], list[str], bool]:
    """(open jobs for the miner, jobs awaiting its reveal, which of the open jobs are offered
    for stealing, whether a stale job is offered)."""
    now = time.monotonic()
    book = _book(node)
    if miner not in book.seen:
        book.index = None
    book.see(miner, now)
    if limit > 0:
        book.depth[miner] = limit
    pending = _pending(node, book, now)
    index = _index(node, book, now)
    reveal = [j for j in index.reveals(miner) if (j, miner) not in pending.reveals]
    if limit == 0:
        return [], reveal, [], False
    assigned = index.assigned
    own = (job for job in index.own(miner) if _takes(job, miner, assigned[job.id], pending))
    commit = list(islice(own, limit))
    if len(commit) < limit:
        me = bytes.fromhex(miner)
        stale = [
            job for job in index.stale if _stealable(job, miner, index, pending, book, stale=True)
        ][:limit]
        taken = {job.id for job in stale}
        deep = [
            job
            for job in index.newest(STEAL_SCAN)
            if job.id not in taken and _stealable(job, miner, index, pending, book)
        ]
        # Thieves spread over the newest candidates in an order of their own.
        deep.sort(
            key=lambda j: (-(j.open_height or 0), hashlib.sha256(me + bytes.fromhex(j.id)).digest())
        )
        room = limit - len(commit)
        stolen = (stale + deep)[:room]
        return commit + stolen, reveal, [j.id for j in stolen], bool(stale) and room > 0
    return commit, reveal, [], False


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
    limit: int = Query(
        64, ge=0, le=1000, description="Most open jobs to return; 0 asks for reveals only."
    ),
    wait: float = Query(0, ge=0, le=3600, description="Long-poll: wait this long for work."),
    since: int = Query(
        -1, ge=-1, description="Answer only once the chain is above this height (or on timeout)."
    ),
    inline_bytes: int = Query(
        0,
        ge=0,
        description="Also return the `commit` jobs' input tensors, up to this many bytes "
        f"(capped at {MAX_INLINE_BYTES}); 0: none.",
    ),
) -> Response:
    """Jobs this miner should commit to or must reveal; with `wait`, returns once there are.

    A miner passes the `height` of its previous answer as `since`, so jobs it is still computing
    are listed again at most once per block instead of in a busy loop.
    """
    deadline = time.monotonic() + min(wait, node.settings.long_poll_max_s)
    commit: list[Job] = []
    reveal: list[str] = []
    stolen: list[str] = []
    book = _book(node)
    book.polling[miner] += 1
    waited = False
    try:
        while True:
            height = node.chain.height
            if height > since:
                commit, reveal, stolen, _ = _work_for(node, miner, limit)
                if commit or reveal:
                    break
            elif waited:  # no block since the last answer: only a job gone stale is news
                commit, reveal, stolen, stale = _work_for(node, miner, limit)
                if stale:
                    break
            if not await _wait_block(node, height, deadline):
                break
            waited = True
    finally:
        book.polling[miner] -= 1
        if not book.polling[miner]:
            del book.polling[miner]
        book.see(miner, time.monotonic())
    jobs = [job_out(node, job) for job in commit]
    # Built here rather than validated through `WorkOut` (the documented response model), as
    # `wait_results` does: `job_out` gives exactly `JobOut`'s fields from the job record, and
    # the pydantic round trip cost more than the rest of a poll.
    return JSONResponse(
        {
            "height": node.chain.height,
            "commit": jobs,
            "reveal": reveal,
            "stolen": stolen,
            "tensors": _inline(node, jobs, min(inline_bytes, MAX_INLINE_BYTES)),
        }
    )


#: `GET /work` parameters as `work_query` takes them: plain decimals (`-1` only for `since`).
_DECIMAL = re.compile(r"(?:0|[1-9][0-9]{0,17})(?:\.[0-9]{1,9})?")
_INTEGER = re.compile(r"-1|0|[1-9][0-9]{0,17}")
_ADDRESS = re.compile(ADDRESS.strip("^$"))


#: name: (default, pattern, least, most) of the numeric `get_work` parameters.
_WORK_DEFAULTS: dict[str, tuple[Any, re.Pattern[str], float, float]] = {
    "limit": (64, _INTEGER, 0, 1000),
    "wait": (0.0, _DECIMAL, 0, 3600),
    "since": (-1, _INTEGER, -1, 2**62),
    "inline_bytes": (0, _INTEGER, 0, 2**62),
}


def work_query(pairs: Sequence[tuple[str, str]]) -> dict[str, Any] | None:
    """`get_work`'s keyword arguments from a query, for `api.hotpaths`; None unless every
    parameter is one the route declares, given once and plainly within its bounds.

    None hands the request to FastAPI, which answers it by the route's declaration (its 422
    for a bad value, its reading of repeated or unknown parameters): this parser only has to
    agree with the declaration on what it accepts, never on how to refuse.
    """
    params = dict(pairs)
    if len(params) != len(pairs) or not params.keys() <= _WORK_DEFAULTS.keys() | {"miner"}:
        return None
    if not _ADDRESS.fullmatch(params.get("miner", "")):
        return None
    values: dict[str, Any] = {"miner": params["miner"]}
    for name, (default, pattern, low, high) in _WORK_DEFAULTS.items():
        text = params.get(name)
        if text is None:
            values[name] = default
            continue
        if not pattern.fullmatch(text):
            return None
        value = float(text) if pattern is _DECIMAL else int(text)
        if not low <= value <= high:
            return None
        values[name] = value
    return values


def _inline(node: NodeDep, jobs: list[dict[str, Any]], budget: int) -> dict[str, str]:
    """The jobs' input tensors this node holds, in job order, until the next one would exceed
    `budget` bytes: those of the jobs the miner starts first. A tensor missing here is skipped
    (the miner downloads it). Read unverified: the miner checks every one against its hash."""
    out: dict[str, str] = {}
    if budget <= 0:
        return out
    store = node.tensors
    for job in jobs:
        for tensor_hash in job["input_hashes"]:
            if tensor_hash is None or tensor_hash in out:
                continue
            blob = store.get_unverified_bytes(tensor_hash)
            if blob is None:
                continue
            if len(blob) > budget:
                return out
            budget -= len(blob)
            out[tensor_hash] = base64.b64encode(blob).decode("ascii")
    return out


@router.get(
    "/tensors",
    response_class=Response,
    responses={
        200: {"content": {"application/octet-stream": {"schema": {"type": "string"}}}},
        **ERROR_RESPONSES,
    },
)
async def get_tensors(
    node: NodeDep,
    hash: list[str] = Query(description="Tensor hashes (repeat the parameter)."),  # noqa: B008
) -> Response:
    """Several tensors in one answer: `<u32 big-endian length><wire bytes>` each, in order."""
    if not 1 <= len(hash) <= MAX_TENSORS:
        raise HTTPException(422, f"ask for 1 to {MAX_TENSORS} tensors, not {len(hash)}")
    frames: list[bytes] = []
    for tensor_hash in hash:
        if len(tensor_hash) != 64 or not all(c in "0123456789abcdef" for c in tensor_hash):
            raise HTTPException(422, f"{tensor_hash[:80]!r} is not a tensor hash")
        blob = node.tensor_bytes(tensor_hash)
        if blob is None:
            raise HTTPException(404, f"tensor {tensor_hash} is not stored on this node")
        frames += [len(blob).to_bytes(4, "big"), blob]
    return Response(b"".join(frames), media_type="application/octet-stream")


_UNKNOWN = {"status": "unknown", "outputs": None, "settlement": None, "settled_height": None}


def _result(jobs: dict[str, Job], job_id: str) -> dict[str, Any]:
    job = jobs.get(job_id)
    if job is None:
        return {"id": job_id, **_UNKNOWN, "reason": ""}
    return {
        "id": job.id,
        "status": job.status,
        "outputs": job.outputs,
        "settlement": job.settlement,
        "settled_height": job.settled_height,
        "reason": job.reason,
    }


def _unfinished(jobs: dict[str, Job], ids: list[str]) -> list[str]:
    """The listed jobs not final yet (unknown ones included), in order."""
    out = []
    for job_id in ids:
        job = jobs.get(job_id)
        if job is None or job.status not in FINAL_STATUSES:
            out.append(job_id)
    return out


@router.post("/results", response_model=ResultsOut, responses=ERROR_RESPONSES)
async def wait_results(
    request: Request,
    node: NodeDep,
    wait: float = Query(0, ge=0, le=3600, description="Long-poll: wait this long for all."),
) -> Response:
    """Statuses and outputs of the listed jobs, once all are final or `wait` seconds passed.

    While waiting, each block re-checks only the jobs not final at the previous one (a final
    status never changes), and the answer is built once, at the end: a driver waiting for a
    step of a thousand jobs cost the node a thousand records per block before.
    """
    raw = await read_json(request, node.settings.max_body_bytes)
    if not isinstance(raw, dict) or set(raw) != {"jobs"} or not isinstance(raw["jobs"], list):
        raise HTTPException(422, 'body must be {"jobs": [<job id>, ...]}')
    ids = raw["jobs"]
    if len(ids) > MAX_RESULT_JOBS:
        raise HTTPException(413, f"{len(ids)} jobs; the limit is {MAX_RESULT_JOBS}")
    if not all(isinstance(i, str) and len(i) == 64 for i in ids):
        raise HTTPException(422, "every job id must be 64 lowercase hex characters")
    deadline = time.monotonic() + min(wait, node.settings.long_poll_max_s)
    waiting = ids
    while True:
        height = node.chain.height
        waiting = _unfinished(node.chain.state.jobs, waiting)
        if not waiting or not await _wait_block(node, height, deadline):
            break
    jobs = node.chain.state.jobs
    results = [_result(jobs, job_id) for job_id in ids]
    done = all(r["status"] in FINAL_STATUSES for r in results)
    # Built here rather than validated through `ResultsOut` (the documented response model):
    # every field comes from the job record, already of the declared type.
    return JSONResponse({"height": node.chain.height, "done": done, "jobs": results})
