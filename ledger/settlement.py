"""Job settlement: phase deadlines, agreement, re-execution, audits, payment and slashing.

Everything is decided by block height and block hash, never wall time (PROTOCOL.md §5.5):

- A job opens when all its inputs are settled (at posting, or when its last input settles); its
  commit phase then lasts `deadline` blocks. It closes early once `replication` miners committed.
- At the close: no commitment -> EXPIRED (escrow refunded). Otherwise the reveal phase lasts
  `Params.reveal_blocks` (at least 1) blocks, ending early once every committed miner revealed.
- Resolution: `replication` identical reveals -> SETTLED with them, unless the random audit hits
  (`audit_hit`), in which case the job is re-executed first. Anything else (disagreement, too few
  reveals) -> re-executed, SETTLED with the true outputs. No reveal at all -> EXPIRED. If the
  kernels refuse the inputs -> FAILED. Right miners share the reward; wrong and missing ones are
  slashed; the remainder of the escrow returns to the poster.
- Because an audit happens when the job settles, before its outputs are released, a DAG job never
  consumes an audited job's wrong output: the chain corrects it before anyone can read it.
- A waiting job whose input expired or failed expires too (escrow refunded), recursively.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

from ledger.executor import FAILED_PREFIX, JobFailed
from ledger.state import (
    AGREED,
    AUDITED,
    EXPIRED,
    FAILED,
    MISSED,
    OPEN,
    REEXECUTED,
    REVEALING,
    RIGHT,
    SETTLED,
    WAITING,
    WRONG,
    Job,
)

if TYPE_CHECKING:
    from ledger.execution import BlockContext

REPUTATION_GAIN = 1
"""Reputation added for each right result."""
REPUTATION_PENALTY = 10
"""Reputation taken for each wrong or missing result."""
PPM = 1_000_000


def audit_hit(block_hash: str, job_id: str, audit_rate_ppm: int) -> bool:
    """True when the job settling in this block is audited: H(block_hash || job_id) mod 1e6 < rate.

    Miners cannot predict the hash of the block their reveals land in, so they cannot know
    which agreed results will be checked.
    """
    h = hashlib.sha256(bytes.fromhex(block_hash) + bytes.fromhex(job_id)).digest()
    return int.from_bytes(h, "big") % PPM < audit_rate_ppm


def open_job(ctx: BlockContext, job: Job) -> None:
    """Start the commit phase now."""
    job.status = OPEN
    job.open_height = ctx.height
    job.commit_deadline = ctx.height + job.deadline


def close_commit_phase(ctx: BlockContext, job: Job) -> None:
    """End the commit phase: to the reveal phase, or expired if nobody committed."""
    job.closed_height = ctx.height
    if not job.commits:
        _finish_unsettled(ctx, job, EXPIRED, "no miner committed before the commit deadline")
        return
    job.status = REVEALING
    job.reveal_deadline = ctx.height + max(1, ctx.params.reveal_blocks)


def end_block(ctx: BlockContext) -> None:
    """Process the phase deadlines that fall at the end of this block, in job-id order."""
    for job_id in sorted(ctx.state.schedule.get(ctx.height, ())):
        job = ctx.peek_job(job_id)
        if job is None:
            continue
        if job.status == OPEN and job.commit_deadline == ctx.height:
            close_commit_phase(ctx, ctx.job(job_id))
        elif job.status == REVEALING and job.reveal_deadline == ctx.height:
            resolve(ctx, ctx.job(job_id))


def resolve(ctx: BlockContext, job: Job) -> None:
    """Decide a job from its reveals (see the module docstring)."""
    if not job.reveals:
        _finish_unsettled(ctx, job, EXPIRED, "no committed miner revealed a result")
        return
    distinct = {tuple(outputs) for outputs in job.reveals.values()}
    if len(job.reveals) >= job.replication and len(distinct) == 1:
        candidate = list(next(iter(distinct)))
        if not audit_hit(ctx.block_hash, job.id, ctx.params.audit_rate_ppm):
            _settle(ctx, job, candidate, AGREED)
            return
        how = AUDITED
    else:
        how = REEXECUTED
    truth = _reexecute(ctx, job)
    if truth is not None:
        _settle(ctx, job, truth, how)


def _input_hashes(ctx: BlockContext, job: Job) -> list[str]:
    hashes = []
    for ref in job.inputs:
        if "tensor" in ref:
            hashes.append(ref["tensor"])
        else:
            parent = ctx.peek_job(ref["job"])
            assert parent is not None and parent.outputs is not None, "input job not settled"
            hashes.append(parent.outputs[ref["output"]])
    return hashes


def _reexecute(ctx: BlockContext, job: Job) -> list[str] | None:
    """The true outputs, or None after failing the job when the kernels refuse it."""
    ctx.reexecuted.append(job.id)
    try:
        return ctx.executor.run(job, _input_hashes(ctx, job))
    except JobFailed as exc:
        _finish_unsettled(ctx, job, FAILED, f"{FAILED_PREFIX}{exc}")
        return None


def _settle(ctx: BlockContext, job: Job, outputs: list[str], how: str) -> None:
    job.status = SETTLED
    job.outputs = outputs
    job.settlement = how
    job.settled_height = ctx.height
    right = sorted(m for m, out in job.reveals.items() if out == outputs)
    share = job.reward // len(right) if right else 0
    for miner in right:
        ctx.account(miner).balance += share
        stats = ctx.miner(miner)
        stats.accepted += 1
        stats.earned += share
        stats.reputation += REPUTATION_GAIN
        job.verdicts[miner] = RIGHT
        job.paid[miner] = share
    _refund(ctx, job, job.reward - share * len(right))
    _penalise_others(ctx, job, set(right))
    for dep_id in ctx.dependents_of(job.id):
        dep = ctx.peek_job(dep_id)
        if dep is None or dep.status != WAITING:
            continue
        parents = [ctx.peek_job(p) for p in dep.input_jobs()]
        if all(p is not None and p.status == SETTLED for p in parents):
            open_job(ctx, ctx.job(dep_id))


def _finish_unsettled(ctx: BlockContext, job: Job, status: str, reason: str) -> None:
    """EXPIRED or FAILED: refund the escrow, penalise revealers and no-shows, cascade to the DAG."""
    job.status = status
    job.reason = reason
    job.settled_height = ctx.height
    _refund(ctx, job, job.reward)
    _penalise_others(ctx, job, set())
    for dep_id in ctx.dependents_of(job.id):
        dep = ctx.peek_job(dep_id)
        if dep is not None and dep.status == WAITING:
            dep = ctx.job(dep_id)
            _finish_unsettled(ctx, dep, EXPIRED, f"input job {job.id} {status}")


def _refund(ctx: BlockContext, job: Job, amount: int) -> None:
    job.refund = amount
    if amount:
        ctx.account(job.poster).balance += amount


def _penalise_others(ctx: BlockContext, job: Job, right: set[str]) -> None:
    """Slash every revealer not in `right` (WRONG) and every committer who never revealed."""
    for miner in sorted(set(job.reveals) | set(job.commits)):
        if miner in right:
            continue
        verdict = WRONG if miner in job.reveals else MISSED
        account = ctx.account(miner)
        amount = min(ctx.params.slash_amount, account.balance)
        account.balance -= amount
        stats = ctx.miner(miner)
        if verdict == WRONG:
            stats.rejected += 1
        else:
            stats.missed += 1
        stats.slashed += amount
        stats.reputation -= REPUTATION_PENALTY
        job.verdicts[miner] = verdict
        job.slashed[miner] = amount
