"""Layer-compute jobs: open ones for miners (with long-poll), by id, by training run."""

from __future__ import annotations

import asyncio
import time
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Path, Query
from pydantic import BaseModel

from api.core.errors import ERROR_RESPONSES
from api.deps import NodeDep
from ledger.state import JOB_STATUSES, OPEN, REVEALING, Job

router = APIRouter(prefix="/jobs", tags=["jobs"])

HASH_PATTERN = r"^[0-9a-f]{64}$"
Status = Literal["waiting", "open", "revealing", "settled", "expired", "failed"]


class ResultOut(BaseModel):
    job_id: str
    miner: str
    commitment: str | None
    outputs: list[str] | None
    verdict: str | None
    paid: int
    slashed: int
    updated_height: int


class JobOut(BaseModel):
    """A job, with its inputs resolved to tensor hashes once they are known."""

    id: str
    status: str
    phase: str | None
    """`commit` (status open), `reveal` (status revealing), or null."""
    poster: str
    op: str
    kernel_version: str
    params: dict[str, Any]
    inputs: list[dict[str, Any]]
    """As posted: tensor refs with metadata, or {"job", "output"} refs."""
    input_hashes: list[str | None]
    """Tensor hash of each input; null for the output of a job not settled yet."""
    output_metas: list[dict[str, Any]]
    replication: int
    reward: int
    deadline: int
    macs: int
    run: str | None
    label: str | None
    posted_height: int
    open_height: int | None
    commit_deadline: int | None
    """Last height whose end still belongs to the commit phase."""
    closed_height: int | None
    reveal_deadline: int | None
    """Last height whose end still belongs to the reveal phase."""
    committed_miners: list[str]
    revealed_miners: list[str]
    outputs: list[str] | None
    settled_height: int | None
    settlement: str | None
    verdicts: dict[str, str]
    paid: dict[str, int]
    slashed: dict[str, int]
    refund: int
    reason: str


class JobDetail(JobOut):
    results: list[ResultOut]


class JobPage(BaseModel):
    jobs: list[JobOut]
    height: int
    """Chain height the answer reflects."""
    next_after: str | None
    """Pass as `after` for the next page (`<posted_height>:<job id>`), null on the last."""


def job_out(node: NodeDep, job: Job) -> dict[str, Any]:
    jobs = node.chain.state.jobs
    hashes: list[str | None] = []
    for ref in job.inputs:
        if "tensor" in ref:
            hashes.append(ref["tensor"])
        else:
            parent = jobs.get(ref["job"])
            outputs = parent.outputs if parent is not None else None
            hashes.append(outputs[ref["output"]] if outputs else None)
    phase = "commit" if job.status == OPEN else "reveal" if job.status == REVEALING else None
    return {
        "id": job.id,
        "status": job.status,
        "phase": phase,
        "poster": job.poster,
        "op": job.op,
        "kernel_version": job.kernel_version,
        "params": job.params,
        "inputs": job.inputs,
        "input_hashes": hashes,
        "output_metas": job.output_metas,
        "replication": job.replication,
        "reward": job.reward,
        "deadline": job.deadline,
        "macs": job.macs,
        "run": job.run,
        "label": job.label,
        "posted_height": job.posted_height,
        "open_height": job.open_height,
        "commit_deadline": job.commit_deadline,
        "closed_height": job.closed_height,
        "reveal_deadline": job.reveal_deadline,
        "committed_miners": sorted(job.commits),
        "revealed_miners": sorted(job.reveals),
        "outputs": job.outputs,
        "settled_height": job.settled_height,
        "settlement": job.settlement,
        "verdicts": job.verdicts,
        "paid": job.paid,
        "slashed": job.slashed,
        "refund": job.refund,
        "reason": job.reason,
    }


def _parse_after(after: str | None) -> tuple[int, str] | None:
    if after is None:
        return None
    height, _, job_id = after.partition(":")
    if not (height.isascii() and height.isdigit()) or len(job_id) != 64:
        raise HTTPException(422, "after must be '<posted_height>:<job id>' from next_after")
    return int(height), job_id


@router.get("", response_model=JobPage, responses=ERROR_RESPONSES)
async def list_jobs(
    node: NodeDep,
    status: Annotated[Status | None, Query(description="Only jobs with this status.")] = None,
    run: str | None = Query(None, max_length=128, description="Only jobs of this training run."),
    poster: str | None = Query(None, pattern=HASH_PATTERN, description="Only this poster's."),
    after: str | None = Query(None, max_length=200, description="Cursor from next_after."),
    limit: int = Query(100, ge=1, le=1000),
    wait: float = Query(
        0, ge=0, le=3600, description="Long-poll: wait up to this many seconds for a match."
    ),
) -> JobPage:
    """Jobs oldest first, filtered; with `wait`, returns as soon as any job matches (miners)."""
    cursor = _parse_after(after)
    deadline = time.monotonic() + min(wait, node.settings.long_poll_max_s)
    while True:
        jobs = node.chain.store.list_jobs(
            status=status, run=run, poster=poster, after=cursor, limit=limit
        )
        remaining = deadline - time.monotonic()
        if jobs or remaining <= 0:
            break
        try:
            await asyncio.wait_for(node.events.wait(remaining), remaining + 0.01)
        except TimeoutError:
            pass
    items = [JobOut(**job_out(node, job)) for job in jobs]
    next_after = f"{jobs[-1].posted_height}:{jobs[-1].id}" if len(jobs) == limit and jobs else None
    return JobPage(jobs=items, height=node.chain.height, next_after=next_after)


@router.get("/{job_id}", response_model=JobDetail, responses=ERROR_RESPONSES)
async def get_job(
    node: NodeDep, job_id: str = Path(pattern=HASH_PATTERN, description="Job id (post_job hash).")
) -> JobDetail:
    """One job with every miner's commitment, revealed outputs and verdict."""
    job = node.chain.store.get_job(job_id)
    if job is None:
        raise HTTPException(404, f"no job {job_id} (it may still be pending: GET /txs/{job_id})")
    results = [ResultOut(**r) for r in node.chain.store.results_of_job(job_id)]
    return JobDetail(**job_out(node, job), results=results)


__all__ = ["router", "JOB_STATUSES"]
