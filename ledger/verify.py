"""Offline audit of a ledger database, trusting nothing but the genesis.

    report = verify_ledger(store, genesis=None, tensors=None, reexecute=False)

For every height in order it checks: the block is there; its stored hash is the digest of its
header; the header links to its parent (prev_hash, height, time, chain id, proposer, app_hash =
replayed state root); tx_root and n_txs match the transactions; every tx is well-formed and signed
by its sender; the commit certificate carries a quorum of genesis validators signing this block;
replaying the state machine gives exactly the stored receipts, state diff and state root. With
`reexecute`, every job that settled by agreement is computed again from the tensors and must give
the settled outputs (disputed and audited jobs are re-executed by the replay itself whenever
tensors are given). It stops at the FIRST bad height and says what is wrong there.

Without tensors, the replay cannot compute the jobs the chain re-executed; it takes their outcome
from the stored diff (`RecordedExecutor`) and counts them in `trusted_reexecutions`. Those diffs
are still bound by the state root chain, so they cannot be altered undetected — but whether the
recorded outputs are the true ones is only checked with `--tensors`.

`layerchain verify` and the explorer's verify view both call `verify_ledger`; `reindex` uses the
same replay (`replay_blocks`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

from ledger import kernels
from ledger.blocks import BlockHeader, validate_block, validate_certificate
from ledger.encoding import EncodingError, parse_json
from ledger.errors import LedgerError
from ledger.execution import BlockResult, apply_block
from ledger.executor import Executor, KernelExecutor, RecordedExecutor
from ledger.genesis import Genesis
from ledger.state import AGREED, SETTLED, Job, State
from ledger.store import Store, StoredBlock
from ledger.tensorstore import MissingTensor, TensorStore


class VerifyFailure(LedgerError):
    """What is wrong at one height (raised inside the replay, turned into the report)."""

    def __init__(self, height: int, problem: str) -> None:
        super().__init__(f"height {height}: {problem}")
        self.height = height
        self.problem = problem


@dataclass
class VerifyReport:
    """The outcome of `verify_ledger`; `ok` only if every height checked out."""

    ok: bool = True
    genesis_hash: str = ""
    chain_id: str = ""
    head: int = 0
    """Highest height stored (read once, when the check started)."""
    start: int = 1
    end: int = 0
    """The range checked and counted: [start, end] (end = the head unless given). Heights below
    `start` are replayed and checked too (block h needs the state after h - 1) but not counted."""
    replayed: int = 0
    """Blocks replayed from height 1."""
    verified_height: int = 0
    """Every height up to this one checked out."""
    first_bad_height: int | None = None
    problem: str | None = None
    blocks: int = 0
    txs: int = 0
    certificate_signatures: int = 0
    reexecuted_jobs: int = 0
    """Jobs computed by this run (disputes/audits in the replay, plus --reexecute checks)."""
    trusted_reexecutions: int = 0
    """Re-executions whose outcome was taken from the ledger because no tensors were given."""
    final_state_root: str = ""
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        if self.ok:
            text = (
                f"OK: {self.blocks} blocks, {self.txs} txs, {self.certificate_signatures} "
                f"certificate signatures, {self.reexecuted_jobs} jobs re-executed, head "
                f"{self.head}, state root {self.final_state_root[:16]}… ({self.seconds:.2f} s)"
            )
            if self.trusted_reexecutions:
                text += f"; {self.trusted_reexecutions} re-execution outcomes taken from the ledger"
        else:
            text = f"FAILED at height {self.first_bad_height}: {self.problem}"
        return "\n".join([text, *self.notes])


def _stored_diff(stored: StoredBlock, height: int) -> dict[str, Any]:
    if stored.diff_json is None:
        raise VerifyFailure(height, "the block's state diff is missing")
    try:
        diff = parse_json(stored.diff_json)
    except EncodingError as exc:
        raise VerifyFailure(height, f"the stored state diff is not canonical JSON: {exc}") from exc
    if not isinstance(diff, dict):
        raise VerifyFailure(height, "the stored state diff is not an object")
    return diff


def _check_stored_block(
    stored: StoredBlock,
    expected_height: int,
    genesis: Genesis,
    parent: BlockHeader | None,
    state: State,
) -> None:
    header = stored.block.header
    if header.height != expected_height:
        raise VerifyFailure(expected_height, f"block {expected_height} is missing")
    if stored.problem is not None:
        raise VerifyFailure(expected_height, stored.problem)
    if stored.stored_hash != header.hash:
        raise VerifyFailure(
            expected_height,
            "the stored block hash is not the digest of the stored header (a header field "
            "was changed)",
        )
    try:
        validate_block(stored.block, genesis, parent, app_hash=state.root)
    except LedgerError as exc:
        raise VerifyFailure(expected_height, str(exc)) from exc
    if stored.certificate is None:
        raise VerifyFailure(expected_height, "the commit certificate is missing")
    try:
        validate_certificate(stored.certificate, genesis, header)
    except LedgerError as exc:
        raise VerifyFailure(expected_height, str(exc)) from exc


def _compare_result(stored: StoredBlock, result: BlockResult) -> None:
    h = result.height
    if len(stored.receipts) != len(result.receipts):
        raise VerifyFailure(
            h, f"{len(stored.receipts)} receipts stored; replay gives {len(result.receipts)}"
        )
    for i, (have, want) in enumerate(zip(stored.receipts, result.receipts, strict=True)):
        if have != want:
            raise VerifyFailure(
                h,
                f"receipt {i} is stored as {have.code!r} {have.message!r} (ok={have.ok}); "
                f"replay gives {want.code!r} {want.message!r} (ok={want.ok})",
            )
    if stored.diff_json != result.diff_json:
        raise VerifyFailure(h, "the stored state diff differs from the replayed one")
    if stored.state_root != result.state_root:
        raise VerifyFailure(h, "the stored state root differs from the replayed one")


def replay_blocks(
    store: Store,
    genesis: Genesis,
    *,
    tensors: TensorStore | None = None,
    on_block: Callable[[StoredBlock, BlockResult, State], None] | None = None,
) -> Iterator[tuple[StoredBlock, BlockResult]]:
    """Check and replay every stored block from genesis; raise VerifyFailure at the first bad one.

    Yields each stored block with its replayed result (reindex writes the projections from them).
    """
    state = State.from_genesis(genesis)
    kernel_executor = KernelExecutor(tensors) if tensors is not None else None
    parent: BlockHeader | None = None
    expected = 1
    for stored in store.iter_blocks():
        _check_stored_block(stored, expected, genesis, parent, state)
        executor: Executor
        if kernel_executor is not None:
            executor = kernel_executor
        else:
            executor = RecordedExecutor.from_diff(_stored_diff(stored, expected))
        try:
            result = apply_block(state, stored.block, executor)
        except MissingTensor as exc:
            raise VerifyFailure(expected, f"cannot re-execute a job: {exc}") from exc
        except LedgerError as exc:
            raise VerifyFailure(expected, f"replay failed: {exc}") from exc
        _compare_result(stored, result)
        if on_block is not None:
            on_block(stored, result, state)
        yield stored, result
        parent = stored.block.header
        expected += 1


def _reexecute_agreed(state: State, tensors: TensorStore, result: BlockResult) -> int:
    """Compute again every job that settled by agreement in this block; return how many."""
    count = 0
    for job_id, record in result.diff["jobs"].items():
        if record["status"] != SETTLED or record["settlement"] != AGREED:
            continue
        job = state.jobs[job_id]
        inputs = [tensors.get(h) for h in _input_hashes(state, job)]
        outputs = [t.hash for t in kernels.execute(job.op, job.params, inputs)]
        count += 1
        if outputs != job.outputs:
            raise VerifyFailure(
                result.height,
                f"job {job_id} settled by agreement with outputs {job.outputs}, but "
                f"re-execution gives {outputs}: the agreeing miners were wrong",
            )
    return count


def _input_hashes(state: State, job: Job) -> list[str]:
    out = []
    for ref in job.inputs:
        if "tensor" in ref:
            out.append(ref["tensor"])
        else:
            parent = state.jobs[ref["job"]]
            assert parent.outputs is not None
            out.append(parent.outputs[ref["output"]])
    return out


def verify_ledger(
    store: Store,
    *,
    genesis: Genesis | None = None,
    tensors: TensorStore | None = None,
    reexecute: bool = False,
    start: int = 1,
    end: int | None = None,
) -> VerifyReport:
    """Audit the ledger up to `end` (the head), counting heights [start, end] (see the module
    docstring and `VerifyReport.start`). Never raises for a bad ledger: the report says where
    and what; raises only for bad arguments (reexecute without tensors, a backwards range)."""
    started = time.perf_counter()
    if reexecute and tensors is None:
        raise LedgerError("re-executing settled jobs needs the tensors (--tensors DIR)")
    if start < 1 or (end is not None and end < start):
        raise LedgerError(f"give 1 <= from <= to (got from={start}, to={end})")
    report = VerifyReport(start=start)
    try:
        stored_genesis = store.genesis
    except LedgerError as exc:
        report.ok, report.first_bad_height, report.problem = False, 0, str(exc)
        return report
    trusted = genesis or stored_genesis
    report.genesis_hash, report.chain_id = trusted.hash, trusted.chain_id
    report.head = store.height
    report.end = report.head if end is None else end
    if stored_genesis.hash != trusted.hash:
        report.ok, report.first_bad_height = False, 0
        report.problem = (
            f"the database's genesis {stored_genesis.hash[:16]}… is not the given genesis "
            f"{trusted.hash[:16]}…"
        )
        return report
    if report.end > report.head:
        report.ok, report.first_bad_height = False, report.head + 1
        report.problem = f"block {report.head + 1} is missing: the head is {report.head}"
        return report
    if tensors is None:
        report.notes.append(
            "note: no tensors given; outcomes of jobs the chain re-executed were taken from the "
            "ledger (bound by the state roots, but not recomputed)"
        )

    def count(stored: StoredBlock, result: BlockResult, state: State) -> None:
        report.replayed += 1
        if result.height >= start:
            report.blocks += 1
            report.txs += len(stored.block.txs)
            assert stored.certificate is not None
            report.certificate_signatures += len(stored.certificate.signatures)
            if tensors is None:
                report.trusted_reexecutions += len(result.reexecuted)
            else:
                report.reexecuted_jobs += len(result.reexecuted)
            if reexecute and tensors is not None:
                try:
                    report.reexecuted_jobs += _reexecute_agreed(state, tensors, result)
                except MissingTensor as exc:
                    raise VerifyFailure(result.height, f"cannot re-execute a job: {exc}") from exc
        report.verified_height = result.height
        report.final_state_root = result.state_root

    try:
        # The head is read once: a live node keeps appending, and blocks past it are not ours.
        for stored, _result in replay_blocks(store, trusted, tensors=tensors, on_block=count):
            if stored.block.header.height >= report.end:
                break
    except VerifyFailure as failure:
        report.ok = False
        report.first_bad_height = failure.height
        report.problem = failure.problem
    except LedgerError as exc:  # unreadable rows etc.
        report.ok = False
        report.first_bad_height = report.verified_height + 1
        report.problem = str(exc)
    if report.ok and report.verified_height != report.end:
        report.ok = False
        report.first_bad_height = report.verified_height + 1
        report.problem = f"block {report.verified_height + 1} is missing"
    report.seconds = time.perf_counter() - started
    return report


@dataclass
class ReindexReport:
    blocks: int
    state_root: str
    seconds: float


def reindex(store: Store, *, tensors: TensorStore | None = None) -> ReindexReport:
    """Rebuild every projection table from the ledger tables, checking each block by replay.

    All in one transaction: if any block fails its checks, the projections are left untouched
    and VerifyFailure says where.
    """
    started = time.perf_counter()
    genesis = store.genesis
    last_root = [store.head().state_root]

    def diffs() -> Iterator[dict[str, Any]]:
        for _stored, result in replay_blocks(store, genesis, tensors=tensors):
            last_root[0] = result.state_root
            yield result.diff

    blocks = store.rebuild_projections(diffs())
    return ReindexReport(blocks, last_root[0], time.perf_counter() - started)
