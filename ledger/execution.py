"""The state machine: run a block's transactions in order, then its deadlines, deterministically.

    result = apply_block(state, block, executor)

runs every tx (each yields a receipt; a stateful failure changes nothing but the nonce), then the
end-of-block step (phase deadlines, settlement, audits; `ledger.settlement`), then chains the state
root over the block's canonical diff. Nothing here reads a clock or the network: the outcome is a
function of the state, the block and the tensors, identical on every validator.

Changes go to an overlay (`BlockContext`) and are merged into the state only when the whole block
executed, so an exception (a missing tensor, say) leaves the state exactly as it was.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ledger import kernels, settlement
from ledger.blocks import Block
from ledger.errors import InvalidBlock, KernelError
from ledger.executor import Executor, NoExecutor
from ledger.merkle import merkle_root
from ledger.receipts import OK, Receipt, failure, success
from ledger.state import (
    EXPIRED,
    FAILED,
    OPEN,
    REVEALING,
    SETTLED,
    WAITING,
    Account,
    Job,
    MinerStats,
    Run,
    State,
    next_root,
)
from ledger.transactions import (
    CHECKPOINT,
    COMMIT_RESULT,
    COMMIT_RESULTS,
    POST_JOB,
    POST_JOBS,
    REVEAL_RESULT,
    REVEAL_RESULTS,
    SUBMIT_RESULT,
    TRANSFER,
    Tx,
    commitment,
    posted_jobs,
)
from ledger.trusted_json import trusted_canonical_json


@dataclass(frozen=True)
class BlockResult:
    """What executing a block produced; the store persists all of it with the block."""

    height: int
    block_hash: str
    receipts: tuple[Receipt, ...]
    diff: dict[str, Any]
    """Final values of every record the block wrote (PROTOCOL.md §6.4)."""
    diff_json: str
    """canonical_json(diff) as text: exactly the bytes the state root hashes."""
    state_root: str
    """Root after this block; the next header's app_hash."""
    reexecuted: tuple[str, ...]
    """Ids of the jobs re-executed in this block (disputes and audits)."""
    job_json: dict[str, str] = field(default_factory=dict)
    """Canonical JSON of each job record in the diff (the store's projection reuses it)."""


def encode_diff(diff: dict[str, Any]) -> tuple[bytes, dict[str, bytes]]:
    """canonical_json(diff), encoding each job record once and returning those encodings too.

    Object keys are assembled in sorted order exactly as `sort_keys` would, so the bytes equal
    `canonical_json(diff)` (tests assert it); job records are the bulk of a diff, and the store
    writes the same bytes into its jobs projection instead of encoding them again.
    """
    jobs = {job_id: trusted_canonical_json(rec) for job_id, rec in diff["jobs"].items()}
    parts = {key: trusted_canonical_json(value) for key, value in diff.items() if key != "jobs"}
    parts["jobs"] = (
        b"{"
        + b",".join(trusted_canonical_json(job_id) + b":" + jobs[job_id] for job_id in sorted(jobs))
        + b"}"
    )
    body = b",".join(trusted_canonical_json(key) + b":" + parts[key] for key in sorted(parts))
    return b"{" + body + b"}", jobs


class BlockContext:
    """Copy-on-write view of the state during one block.

    `x(...)` accessors return a record for writing (copied into the overlay on first use, so it
    ends up in the diff); `peek_x(...)` read without marking anything written.
    """

    def __init__(self, state: State, block: Block, executor: Executor) -> None:
        self.state = state
        self.params = state.genesis.params
        self.height = block.header.height
        self.block_hash = block.header.hash
        self.executor = executor
        self.accounts: dict[str, Account] = {}
        self.jobs: dict[str, Job] = {}
        self.miners: dict[str, MinerStats] = {}
        self.runs: dict[str, Run] = {}
        self.checkpoints: list[dict[str, Any]] = []
        self.new_dependents: dict[str, set[str]] = {}
        self.reexecuted: list[str] = []

    # -- accounts
    def account(self, address: str) -> Account:
        acc = self.accounts.get(address)
        if acc is None:
            base = self.state.accounts.get(address)
            acc = base.copy() if base else Account()
            self.accounts[address] = acc
        return acc

    def peek_account(self, address: str) -> Account | None:
        return self.accounts.get(address) or self.state.accounts.get(address)

    # -- jobs
    def job(self, job_id: str) -> Job:
        job = self.jobs.get(job_id)
        if job is None:
            job = self.state.jobs[job_id].copy()
            self.jobs[job_id] = job
        return job

    def peek_job(self, job_id: str) -> Job | None:
        return self.jobs.get(job_id) or self.state.jobs.get(job_id)

    def add_job(self, job: Job) -> None:
        self.jobs[job.id] = job
        if job.status == WAITING:
            for parent in job.input_jobs():
                self.new_dependents.setdefault(parent, set()).add(job.id)

    def dependents_of(self, job_id: str) -> list[str]:
        """Waiting jobs reading `job_id`'s outputs, in a canonical (sorted) order."""
        ids = self.state.dependents.get(job_id, set()) | self.new_dependents.get(job_id, set())
        return sorted(ids)

    # -- miners and runs
    def miner(self, address: str) -> MinerStats:
        stats = self.miners.get(address)
        if stats is None:
            base = self.state.miners.get(address)
            stats = base.copy() if base else MinerStats()
            self.miners[address] = stats
        return stats

    def peek_run(self, name: str) -> Run | None:
        return self.runs.get(name) or self.state.runs.get(name)

    def run(self, name: str) -> Run:
        run = self.runs.get(name)
        if run is None:
            run = self.state.runs[name].copy()
            self.runs[name] = run
        return run

    # -- the result
    def diff(self, receipts: list[Receipt]) -> dict[str, Any]:
        return {
            "height": self.height,
            "accounts": {a: acc.to_dict() for a, acc in self.accounts.items()},
            "jobs": {j: job.to_dict() for j, job in self.jobs.items()},
            "miners": {m: s.to_dict() for m, s in self.miners.items()},
            "runs": {r: run.to_dict() for r, run in self.runs.items()},
            "checkpoints": self.checkpoints,
            "receipts_root": merkle_root([r.hash for r in receipts]),
        }

    def merge(self, root: str) -> None:
        """Make the overlay the state (called once the block fully executed)."""
        state = self.state
        state.accounts.update(self.accounts)
        state.miners.update(self.miners)
        state.runs.update(self.runs)
        state.schedule.pop(self.height, None)
        for job in self.jobs.values():
            state.jobs[job.id] = job
            if job.status != WAITING:
                for parent in job.input_jobs():
                    waiting = state.dependents.get(parent)
                    if waiting is not None:
                        waiting.discard(job.id)
                        if not waiting:
                            del state.dependents[parent]
            state.index_job(job)
        state.height = self.height
        state.root = root
        state.block_hash = self.block_hash


# --------------------------------------------------------------------------- transactions

_Failure = tuple[str, str]
"""(failure code, message) of a rule a tx or a batch item broke."""


def _transfer(ctx: BlockContext, tx: Tx) -> Receipt:
    amount = tx.body["amount"]
    sender = ctx.account(tx.sender)
    if sender.balance < amount:
        return failure(
            tx.hash, "insufficient_funds", f"balance {sender.balance} is below amount {amount}"
        )
    sender.balance -= amount
    ctx.account(tx.body["to"]).balance += amount
    return success(tx.hash)


def _prepare_job(
    ctx: BlockContext, job_id: str, sender: str, body: dict[str, Any]
) -> Job | _Failure:
    """The job a post_job body creates (status WAITING), or why it cannot be created.

    Changes nothing: the caller checks funds, escrows and adds the job (PROTOCOL.md §5.4).
    """
    if body["kernel_version"] != kernels.KERNEL_VERSION:
        return (
            "unsupported_kernel_version",
            f"kernel version {body['kernel_version']!r}; "
            f"this chain runs {kernels.KERNEL_VERSION!r}",
        )
    metas: list[kernels.TensorMeta] = []
    for i, ref in enumerate(body["inputs"]):
        if "tensor" in ref:
            metas.append(kernels.TensorMeta(ref["dtype"], tuple(ref["shape"]), ref["frac_bits"]))
            continue
        parent = ctx.peek_job(ref["job"])
        if parent is None or ref["output"] >= len(parent.output_metas):
            return "unknown_input", f"input {i} names job output {ref['job']}:{ref['output']}"
        if parent.status in (EXPIRED, FAILED):
            return "input_failed", f"input {i}: job {ref['job']} {parent.status}"
        meta = parent.output_metas[ref["output"]]
        metas.append(kernels.TensorMeta(meta["dtype"], tuple(meta["shape"]), meta["frac_bits"]))
    try:
        spec = kernels.infer(body["op"], body["params"], metas)
    except KernelError as exc:
        return "invalid_job", str(exc)
    limit = ctx.params.max_tensor_elements
    for meta in list(metas) + list(spec.outputs):
        if meta.size > limit:
            return "invalid_job", f"a tensor of {meta.size} elements exceeds the limit {limit}"
    if spec.macs > ctx.params.max_job_macs:
        return (
            "invalid_job",
            f"job needs {spec.macs} multiply-accumulates; the limit is {ctx.params.max_job_macs}",
        )
    return Job(
        id=job_id,
        poster=sender,
        op=body["op"],
        kernel_version=body["kernel_version"],
        inputs=[dict(ref) for ref in body["inputs"]],
        params=dict(body["params"]),
        replication=body["replication"],
        reward=body["reward"],
        deadline=body["deadline"],
        output_metas=[
            {"dtype": m.dtype, "shape": list(m.shape), "frac_bits": m.frac_bits}
            for m in spec.outputs
        ],
        macs=spec.macs,
        posted_height=ctx.height,
        run=body.get("run"),
        label=body.get("label"),
    )


def _inputs_settled(ctx: BlockContext, job: Job) -> bool:
    parents = (ctx.peek_job(parent) for parent in job.input_jobs())
    return all(parent is not None and parent.status == SETTLED for parent in parents)


def _create_jobs(ctx: BlockContext, tx: Tx) -> Receipt:
    """`post_job` and `post_jobs`: every job is created, or none (the first failure is the
    receipt's code; a batch names the item, `jobs[i]: ...`). The rewards are escrowed."""
    jobs: list[Job] = []
    for i, (job_id, body) in enumerate(posted_jobs(tx)):
        prepared = _prepare_job(ctx, job_id, tx.sender, body)
        if not isinstance(prepared, Job):
            code, message = prepared
            where = "" if tx.type == POST_JOB else f"jobs[{i}]: "
            return failure(tx.hash, code, where + message)
        jobs.append(prepared)
    total = sum(job.reward for job in jobs)
    poster = ctx.account(tx.sender)
    if poster.balance < total:
        what = "the reward" if tx.type == POST_JOB else "the jobs' total reward"
        return failure(
            tx.hash,
            "insufficient_funds",
            f"balance {poster.balance} is below {what} {total} to escrow",
        )
    poster.balance -= total
    for job in jobs:
        ctx.add_job(job)
        if _inputs_settled(ctx, job):
            settlement.open_job(ctx, job)
    return success(tx.hash)


_Outcome = _Failure | None
"""None when an item applied, else (failure code, message)."""


def _commit_one(ctx: BlockContext, miner: str, job_id: str, value: str) -> _Outcome:
    """Record `miner`'s commitment on an open job (PROTOCOL.md §5.4, §5.5)."""
    job = ctx.peek_job(job_id)
    if job is None:
        return "unknown_job", f"no job {job_id}"
    if job.status != OPEN:
        return "job_not_open", f"job {job_id[:16]}… is {job.status}"
    if miner in job.commits:
        return "already_committed", "this miner already committed to this job"
    if value in job.commits.values():
        return "duplicate_commitment", "another miner already committed exactly this value"
    job = ctx.job(job_id)
    job.commits[miner] = value
    if len(job.commits) >= job.replication:
        settlement.close_commit_phase(ctx, job)
    return None


def _reveal_one(
    ctx: BlockContext, miner: str, job_id: str, outputs: list[str], salt: str
) -> _Outcome:
    """Open `miner`'s commitment on a job in its reveal phase; resolve once all revealed."""
    job = ctx.peek_job(job_id)
    if job is None:
        return "unknown_job", f"no job {job_id}"
    if job.status == OPEN:
        return "commit_phase_open", "the commit phase of this job is still open"
    if job.status != REVEALING:
        return "not_revealing", f"job {job_id[:16]}… is {job.status}"
    if miner not in job.commits:
        return "not_committed", "this miner has no commitment for this job"
    if miner in job.reveals:
        return "already_revealed", "this miner already revealed for this job"
    if len(outputs) != len(job.output_metas):
        return (
            "wrong_output_count",
            f"{len(outputs)} outputs revealed; the job produces {len(job.output_metas)}",
        )
    if commitment(job_id, miner, outputs, salt) != job.commits[miner]:
        return "commitment_mismatch", "outputs and salt do not match the commitment"
    job = ctx.job(job_id)
    job.reveals[miner] = list(outputs)
    if len(job.reveals) == len(job.commits):
        settlement.resolve(ctx, job)
    return None


def _single(tx: Tx, outcome: _Outcome) -> Receipt:
    return success(tx.hash) if outcome is None else failure(tx.hash, *outcome)


def _batch(tx: Tx, outcomes: list[_Outcome]) -> Receipt:
    """The receipt of a batched result tx (PROTOCOL.md §5.4): ok when at least one item applied;
    the message lists every item that did not, as `not applied: <index> <code>, ...`."""
    skipped = [(i, o) for i, o in enumerate(outcomes) if o is not None]
    if not skipped:
        return success(tx.hash)
    message = "not applied: " + ", ".join(f"{i} {o[0]}" for i, o in skipped)
    if len(skipped) < len(outcomes):
        return Receipt(tx.hash, True, OK, message)
    return failure(tx.hash, skipped[0][1][0], message)


def _commit(ctx: BlockContext, tx: Tx) -> Receipt:
    return _single(tx, _commit_one(ctx, tx.sender, tx.body["job_id"], tx.body["commitment"]))


def _reveal(ctx: BlockContext, tx: Tx) -> Receipt:
    body = tx.body
    return _single(tx, _reveal_one(ctx, tx.sender, body["job_id"], body["outputs"], body["salt"]))


def _commits(ctx: BlockContext, tx: Tx) -> Receipt:
    """`commit_results`: each item exactly as a `commit_result` would apply, in order."""
    return _batch(
        tx,
        [
            _commit_one(ctx, tx.sender, item["job_id"], item["commitment"])
            for item in tx.body["commits"]
        ],
    )


def _reveals(ctx: BlockContext, tx: Tx) -> Receipt:
    """`reveal_results`: each item exactly as a `reveal_result` would apply, in order."""
    return _batch(
        tx,
        [
            _reveal_one(ctx, tx.sender, item["job_id"], item["outputs"], item["salt"])
            for item in tx.body["reveals"]
        ],
    )


def _submit(ctx: BlockContext, tx: Tx) -> Receipt:
    job_id, outputs = tx.body["job_id"], tx.body["outputs"]
    job = ctx.peek_job(job_id)
    if job is None:
        return failure(tx.hash, "unknown_job", f"no job {job_id}")
    if job.replication != 1:
        return failure(
            tx.hash,
            "not_single_replication",
            f"job has replication {job.replication}: use commit_result then reveal_result",
        )
    if job.status != OPEN:
        return failure(tx.hash, "job_not_open", f"job {job_id[:16]}… is {job.status}")
    if len(outputs) != len(job.output_metas):
        return failure(
            tx.hash,
            "wrong_output_count",
            f"{len(outputs)} outputs submitted; the job produces {len(job.output_metas)}",
        )
    job = ctx.job(job_id)
    job.reveals[tx.sender] = list(outputs)
    job.closed_height = ctx.height
    settlement.resolve(ctx, job)
    return success(tx.hash)


def _checkpoint(ctx: BlockContext, tx: Tx) -> Receipt:
    body = tx.body
    name, epoch = body["run"], body["epoch"]
    existing = ctx.peek_run(name)
    if existing is not None:
        if existing.owner != tx.sender:
            return failure(tx.hash, "not_run_owner", f"run {name!r} belongs to another account")
        if epoch <= existing.last_epoch:
            return failure(
                tx.hash, "stale_epoch", f"epoch {epoch} is not after {existing.last_epoch}"
            )
        run = ctx.run(name)
    else:
        run = Run(owner=tx.sender, created_height=ctx.height)
        ctx.runs[name] = run
    run.last_epoch = epoch
    run.last_model_hash = body["model_hash"]
    run.n_checkpoints += 1
    ctx.checkpoints.append(
        {
            "run": name,
            "epoch": epoch,
            "model_hash": body["model_hash"],
            "metrics": dict(body["metrics"]),
            "sender": tx.sender,
            "tx_hash": tx.hash,
            "height": ctx.height,
        }
    )
    return success(tx.hash)


_HANDLERS: dict[str, Callable[[BlockContext, Tx], Receipt]] = {
    TRANSFER: _transfer,
    POST_JOB: _create_jobs,
    POST_JOBS: _create_jobs,
    COMMIT_RESULT: _commit,
    REVEAL_RESULT: _reveal,
    SUBMIT_RESULT: _submit,
    CHECKPOINT: _checkpoint,
    COMMIT_RESULTS: _commits,
    REVEAL_RESULTS: _reveals,
}


def apply_tx(ctx: BlockContext, tx: Tx) -> Receipt:
    """Execute one (statelessly valid) tx. A wrong nonce changes nothing; any other stateful
    failure still consumes the nonce, so the same tx can never succeed later as a replay."""
    peek = ctx.peek_account(tx.sender)
    expected = peek.nonce if peek else 0
    if tx.nonce != expected:
        return failure(tx.hash, "bad_nonce", f"nonce {tx.nonce}; the sender's next is {expected}")
    ctx.account(tx.sender).nonce += 1
    return _HANDLERS[tx.type](ctx, tx)


def apply_block(state: State, block: Block, executor: Executor | None = None) -> BlockResult:
    """Execute `block` on `state` (which it must directly follow) and advance the state.

    The block must already have passed `validate_block`. On any exception the state is unchanged.
    """
    header = block.header
    if header.height != state.height + 1:
        raise InvalidBlock(f"block {header.height} does not follow executed height {state.height}")
    if header.app_hash != state.root:
        raise InvalidBlock(f"block {header.height}: app_hash is not the state root it follows")
    ctx = BlockContext(state, block, executor or NoExecutor())
    receipts = [apply_tx(ctx, tx) for tx in block.txs]
    settlement.end_block(ctx)
    diff = ctx.diff(receipts)
    diff_bytes, job_bytes = encode_diff(diff)
    root = next_root(state.root, diff_bytes)
    ctx.merge(root)
    return BlockResult(
        height=header.height,
        block_hash=header.hash,
        receipts=tuple(receipts),
        diff=diff,
        diff_json=diff_bytes.decode("utf-8"),
        state_root=root,
        reexecuted=tuple(ctx.reexecuted),
        job_json={job_id: raw.decode("utf-8") for job_id, raw in job_bytes.items()},
    )
