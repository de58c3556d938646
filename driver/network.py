"""`NetworkRunner`: runs a `Plan` through the chain — the same plan `LocalRunner` runs in-process.

For each plan (one training step, or one evaluation pass) the runner

1. uploads the plan's tensors (weights, shard batches) to the node;
2. posts every job not marked `driver_side` as a `post_job` tx, all in one batch: a job reading an
   earlier job's output names that job's id (the DAG is on the chain, and each job becomes runnable
   when its inputs settle, so miners work on all shards of a layer at once);
3. waits (one long-poll `POST /work/results`) until the chain settled them;
4. reads the settled output hashes from the chain's job records and downloads those tensors,
   verifying each against its hash and its inferred metadata;
5. runs the `driver_side` jobs (exact gradient sums, the SGD update) itself with the same
   `ledger.kernels.execute`, posting any network job that needs their outputs in a next phase.

Every job is an exact kernel, so the results — and the trained weights hash — are the bytes the
local run produces; a wrong result could only come from the chain settling one, which
re-execution on disagreement and random audits prevent.

Jobs are labelled `r<round>/<plan label>` (e.g. `r12/bwd1/s0`), one round per `run()` call, so
`driver.replay` can regroup a run's jobs into the plans that produced them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from driver.plan import JobOutput, Plan, TensorInput
from ledger.errors import KernelError, LedgerError, TensorError
from ledger.identity import Keypair
from ledger.kernels import TensorMeta, execute
from ledger.tensor import Tensor
from ledger.transactions import (
    CHECKPOINT,
    MAX_BATCH_JOBS,
    POST_JOB,
    POST_JOBS,
    Tx,
    checkpoint_body,
    job_input,
    post_job_body,
    post_jobs_body,
    posted_jobs,
    sign_tx,
    tensor_input,
)
from miner.client import NodeClient

log = logging.getLogger(__name__)

UPLOAD_CONCURRENCY = 8
TX_BATCH = 500
MAX_JOBS_PER_TX = min(MAX_BATCH_JOBS, 16)
"""Jobs per post_jobs tx: a training job's body is ~700 bytes, the default tx limit 16 KiB."""


class JobFailedOnChain(LedgerError):
    """A job of the plan ended expired or failed instead of settled."""


class PostRefused(JobFailedOnChain):
    """A post_job was committed with a failure receipt (e.g. `bad_nonce` when a node ordered the
    driver's txs out of nonce order): the round is posted again with fresh nonces."""


POST_ATTEMPTS = 3


@dataclass
class RoundStats:
    """What one `run()` did, for progress displays and benchmarks."""

    round: int
    jobs: int
    """Jobs posted to the chain in this round."""
    seconds: float
    height: int
    """Chain height when the round's results were read back."""


@dataclass
class NetworkTotals:
    rounds: int = 0
    jobs: int = 0
    seconds: float = 0.0
    height: int = 0
    disagreements: int = 0
    """Read-backs where a node's settled outputs differed from what f + 1 others answered."""

    @property
    def jobs_per_s(self) -> float:
        return self.jobs / self.seconds if self.seconds > 0 else 0.0


class NetworkRunner:
    """A `JobRunner` that executes plans through validator nodes (see the module docstring).

    Synchronous facade over an event loop it owns, because `driver.training.train` is synchronous;
    close it (or use it as a context manager) to release the connections.
    """

    def __init__(
        self,
        urls: Sequence[str],
        key: Keypair,
        *,
        run: str,
        replication: int = 2,
        reward: int = 10,
        deadline: int = 10_000,
        wait_timeout_s: float = 600.0,
        transport: httpx.AsyncBaseTransport | None = None,
        on_round: Callable[[RoundStats], None] | None = None,
    ) -> None:
        if replication < 1:
            raise LedgerError("replication must be at least 1")
        self.key = key
        self.run_name = run
        self.replication = replication
        self.reward = reward
        self.deadline = deadline
        self.wait_timeout_s = wait_timeout_s
        self.on_round = on_round
        self.loop = asyncio.new_event_loop()
        # Generous: a view change after a crash can leave every node slow to answer for seconds.
        self.client = NodeClient(urls, transport=transport, attempts=20)
        self.witnesses = {url: NodeClient([url], transport=transport, attempts=2) for url in urls}
        """One client per node, to confirm settled outputs with other validators."""
        self.quorum = 1
        """Matching answers needed on settled outputs: f + 1 of the genesis validators."""
        self.chain_id = ""
        self.nonce: int | None = None
        self.round = 0
        self.totals = NetworkTotals()
        self.job_ids: list[str] = []
        """Every job id this runner posted, in order."""
        self._uploaded: dict[str, str] = {}
        """tensor hash -> URL of the node it was uploaded to."""
        self._posted: dict[str, tuple[Tx, list[Tensor]]] = {}
        """post_job hash -> the signed tx and the tensors it names (to submit it again)."""

    # ------------------------------------------------------------------------------ lifecycle

    def close(self) -> None:
        if not self.loop.is_closed():
            self.loop.run_until_complete(self.client.aclose())
            for witness in self.witnesses.values():
                self.loop.run_until_complete(witness.aclose())
            self.loop.close()

    def __enter__(self) -> NetworkRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _sync(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    async def _connect(self) -> None:
        if not self.chain_id:
            status = await self.client.status()
            self.chain_id = str(status["chain_id"])
            self.totals.height = int(status["height"])
            validators = await self.client.get_json("/validators")
            n = len(validators["validators"])
            self.quorum = (n - 1) // 3 + 1
            if len(self.witnesses) < self.quorum:
                log.warning(
                    "%d node URL(s) for %d validators: settled outputs are confirmed by fewer "
                    "than f + 1 = %d of them",
                    len(self.witnesses),
                    n,
                    self.quorum,
                )

    # ------------------------------------------------------------------------------ JobRunner

    def run(self, plan: Plan) -> dict[str, Tensor]:
        """Execute `plan` through the chain; returns its named results (JobRunner protocol)."""
        self.round += 1
        for attempt in range(POST_ATTEMPTS):
            try:
                result: dict[str, Tensor] = self._sync(self._run(plan))
                return result
            except PostRefused:
                if attempt + 1 == POST_ATTEMPTS:
                    raise
                self.nonce = None  # re-read it; the same round is posted again (same labels)
        raise AssertionError("unreachable")

    async def _run(self, plan: Plan) -> dict[str, Tensor]:
        await self._connect()
        specs = plan.specs()
        started = time.monotonic()
        posted: dict[int, str] = {}
        values: dict[int, list[Tensor]] = {}
        """job number -> its outputs, once known here (driver-side, or read back)."""
        jobs = plan.jobs
        done_driver: set[int] = set()
        await self._upload(list(plan.tensors.values()))
        height = self.totals.height
        while len(posted) + len(done_driver) < len(jobs):
            progress = False
            # 1. Post every network job whose inputs are tensors, posted jobs or computed values.
            ready = [
                n
                for n, job in enumerate(jobs)
                if not job.driver_side
                and n not in posted
                and all(
                    isinstance(r, TensorInput) or r.job in posted or r.job in values
                    for r in job.inputs
                )
            ]
            if ready:
                await self._post(plan, ready, posted, values)
                progress = True
            # 2. Driver-side jobs: read back the network outputs they need, then compute them.
            pending = [n for n, job in enumerate(jobs) if job.driver_side and n not in done_driver]
            needs = {
                r.job
                for n in pending
                for r in jobs[n].inputs
                if isinstance(r, JobOutput) and r.job in posted and r.job not in values
            }
            if needs:
                height = await self._read_back(plan, specs, sorted(needs), posted, values)
            for n in pending:
                job = jobs[n]
                if not all(r.job in values for r in job.inputs if isinstance(r, JobOutput)):
                    continue
                inputs = [self._value(plan, r, values) for r in job.inputs]
                values[n] = await asyncio.to_thread(execute, job.op, dict(job.params), inputs)
                done_driver.add(n)
                progress = True
            if not progress:
                raise KernelError("plan has jobs whose inputs can never become available")
        wanted = [ref.job for ref in plan.results.values()]
        height = max(height, await self._read_back(plan, specs, wanted, posted, values))
        results = {name: values[ref.job][ref.index] for name, ref in plan.results.items()}
        stats = RoundStats(self.round, len(posted), time.monotonic() - started, height)
        self.totals.rounds += 1
        self.totals.jobs += stats.jobs
        self.totals.seconds += stats.seconds
        self.totals.height = max(self.totals.height, height)
        if self.on_round is not None:
            self.on_round(stats)
        return results

    @staticmethod
    def _value(plan: Plan, ref: TensorInput | JobOutput, values: dict[int, list[Tensor]]) -> Tensor:
        if isinstance(ref, TensorInput):
            return plan.tensors[ref.name]
        return values[ref.job][ref.index]

    # ------------------------------------------------------------------------------ posting

    async def _upload(self, tensors: list[Tensor]) -> None:
        """Upload the tensors the current node does not have from us yet."""
        url = self.client.url
        todo = {t.hash: t for t in tensors if self._uploaded.get(t.hash) != url}
        semaphore = asyncio.Semaphore(UPLOAD_CONCURRENCY)

        async def one(tensor: Tensor) -> None:
            async with semaphore:
                await self.client.put_tensor(tensor)
                self._uploaded[tensor.hash] = self.client.url

        await asyncio.gather(*(one(t) for t in todo.values()))

    async def _next_nonce(self) -> int:
        if self.nonce is None:
            account = await self.client.account(self.key.address)
            self.nonce = int(account["nonce"]) + int(account.get("pending_txs", 0))
        return self.nonce

    def _sign(self, tx_type: str, body: dict[str, Any], nonce: int) -> Tx:
        return sign_tx(self.key, self.chain_id, tx_type, nonce, body)

    async def _post(
        self,
        plan: Plan,
        numbers: list[int],
        posted: dict[int, str],
        values: dict[int, list[Tensor]],
    ) -> None:
        """Sign and submit the jobs `numbers` (in order, so DAG ids are known) as `post_jobs`
        txs of up to MAX_JOBS_PER_TX jobs: a new tx starts whenever a job reads the output of a
        job in the current one (a job's id depends on its tx's hash, PROTOCOL §5.3). A fused
        training step (independent shard jobs) is one tx."""
        extra: list[Tensor] = []
        txs: list[Tx] = []
        nonce = await self._next_nonce()
        group: list[int] = []
        bodies: list[dict[str, Any]] = []

        def seal() -> None:
            if not group:
                return
            if len(group) == 1:
                tx = self._sign(POST_JOB, bodies[0], nonce + len(txs))
            else:
                tx = self._sign(POST_JOBS, post_jobs_body(bodies), nonce + len(txs))
            txs.append(tx)
            for n, (job_id, _) in zip(group, posted_jobs(tx), strict=True):
                posted[n] = job_id
            group.clear()
            bodies.clear()

        for n in numbers:
            job = plan.jobs[n]
            reads = {ref.job for ref in job.inputs if isinstance(ref, JobOutput)}
            if reads & set(group) or len(group) >= MAX_JOBS_PER_TX:
                seal()
            inputs: list[dict[str, Any]] = []
            for ref in job.inputs:
                if isinstance(ref, TensorInput):
                    inputs.append(tensor_input(plan.tensors[ref.name]))
                elif ref.job in posted:
                    inputs.append(job_input(posted[ref.job], ref.index))
                else:  # a driver-side output feeding a network job: ship it as a tensor
                    tensor = values[ref.job][ref.index]
                    extra.append(tensor)
                    inputs.append(tensor_input(tensor))
            bodies.append(
                post_job_body(
                    op=job.op,
                    kernel_version=plan.kernel_version,
                    inputs=inputs,
                    params=dict(job.params),
                    replication=self.replication,
                    reward=self.reward,
                    deadline=self.deadline,
                    run=self.run_name,
                    label=(
                        f"r{self.round}/{job.label}"[:128] if job.label else f"r{self.round}/j{n}"
                    ),
                )
            )
            group.append(n)
        seal()
        if extra:
            await self._upload(extra)
        named = [*plan.tensors.values(), *extra]
        for tx in txs:
            for job_id, _ in posted_jobs(tx):
                self._posted[job_id] = (tx, named)
        await self._submit(txs, plan, extra)
        self.nonce = nonce + len(txs)
        self.job_ids.extend(job_id for tx in txs for job_id, _ in posted_jobs(tx))

    async def _submit(self, txs: list[Tx], plan: Plan, extra: list[Tensor]) -> None:
        """Submit in batches; after a fail-over, re-upload the tensors to the new node once."""
        for start in range(0, len(txs), TX_BATCH):
            chunk = txs[start : start + TX_BATCH]
            for attempt in range(2):
                url = self.client.url
                results = await self.client.submit_batch(chunk)
                refused = [r for r in results if not r.get("accepted")]
                if not refused:
                    break
                if (
                    attempt == 0
                    and self.client.url == url
                    and any("not stored on this node" in str(r.get("error")) for r in refused)
                ):
                    for t in [*plan.tensors.values(), *extra]:
                        self._uploaded.pop(t.hash, None)
                    await self._upload([*plan.tensors.values(), *extra])
                    continue
                self.nonce = None
                raise LedgerError(f"the node refused a post_job: {refused[0].get('error')}")

    # ------------------------------------------------------------------------------ reading back

    async def _read_back(
        self,
        plan: Plan,
        specs: list[Any],
        numbers: list[int],
        posted: dict[int, str],
        values: dict[int, list[Tensor]],
    ) -> int:
        """Wait for the network jobs `numbers` to settle and download their outputs into
        `values`. Returns the chain height of the answer."""
        missing = sorted({n for n in numbers if n not in values and n in posted})
        if not missing:
            return self.totals.height
        ids = [posted[n] for n in missing]
        deadline = time.monotonic() + self.wait_timeout_s
        while True:
            answer = await self.client.results(ids, wait=min(25.0, self.wait_timeout_s))
            if answer["done"]:
                break
            await self._check_posted([j["id"] for j in answer["jobs"] if j["status"] == "unknown"])
            if time.monotonic() > deadline:
                open_ = sum(1 for j in answer["jobs"] if j["status"] not in ("settled",))
                raise JobFailedOnChain(
                    f"{open_} job(s) not settled after {self.wait_timeout_s:.0f} s (are miners "
                    "running?)"
                )
        by_id = await self._confirmed(ids, {j["id"]: j for j in answer["jobs"]})
        fetch: list[tuple[int, int, str]] = []
        for n in missing:
            record = by_id[posted[n]]
            if record["status"] != "settled":
                raise JobFailedOnChain(
                    f"job {plan.jobs[n].label or n} ({posted[n][:16]}…) ended "
                    f"{record['status']}: {record['reason']}"
                )
            outputs = record["outputs"]
            if len(outputs) != len(specs[n].outputs):
                raise JobFailedOnChain(f"job {posted[n][:16]}… settled with a wrong output count")
            fetch.extend((n, i, h) for i, h in enumerate(outputs))
        semaphore = asyncio.Semaphore(UPLOAD_CONCURRENCY)

        async def one(n: int, i: int, tensor_hash: str) -> tuple[int, int, Tensor]:
            async with semaphore:
                tensor = await self.client.get_tensor(tensor_hash)
            if TensorMeta.of_tensor(tensor) != specs[n].outputs[i]:
                raise TensorError(
                    f"settled output {i} of job {posted[n][:16]}… does not have the inferred "
                    "dtype, shape and scale"
                )
            return n, i, tensor

        got = await asyncio.gather(*(one(n, i, h) for n, i, h in fetch))
        for n in missing:
            values[n] = [None] * len(specs[n].outputs)  # type: ignore[list-item]
        for n, i, tensor in got:
            values[n][i] = tensor
        return int(answer["height"])

    async def _confirmed(
        self, ids: list[str], first: dict[str, dict[str, Any]]
    ) -> dict[str, dict[str, Any]]:
        """The final records of `ids` as f + 1 validators report them.

        One node's answer is not evidence: a Byzantine node could name other output hashes (and
        serve tensors matching them). Other nodes are asked until f + 1 answers agree on every
        job's status and outputs (the first answer counts); one that disagrees is counted in
        `totals.disagreements` and the agreed answer is used. No f + 1 agreement → LedgerError.
        """

        def key(records: dict[str, dict[str, Any]]) -> tuple[Any, ...]:
            return tuple((records[i]["status"], tuple(records[i]["outputs"] or ())) for i in ids)

        need = min(self.quorum, len(self.witnesses))
        answers = [first]
        others = [w for url, w in self.witnesses.items() if url != self.client.url]
        while True:
            counts = Counter(key(records) for records in answers)
            best, votes = counts.most_common(1)[0]
            if votes >= need:
                if len(counts) > 1:
                    self.totals.disagreements += 1
                    log.warning("a node's settled outputs differ from f + 1 others; using theirs")
                return next(records for records in answers if key(records) == best)
            if not others:
                raise LedgerError(
                    f"validators disagree on the settled outputs of {len(ids)} job(s): no "
                    f"{need} matching answers among {len(answers)}"
                )
            witness = others.pop(0)
            try:
                reply = await witness.results(ids, wait=min(10.0, self.wait_timeout_s))
            except LedgerError as exc:
                log.info("node %s could not confirm settled outputs: %s", witness.url, exc)
                continue
            if reply["done"]:
                answers.append({j["id"]: j for j in reply["jobs"]})

    async def _check_posted(self, unknown: list[str]) -> None:
        """Called after a whole long-poll without these jobs appearing. A post_job the node we
        ask does not know is not necessarily lost (it may be pending elsewhere): it is submitted
        again as the same signed tx, which is harmless if it is pending and brings it back if a
        mempool dropped it. Raise PostRefused only if it was committed as a failed tx, or its
        nonce was used by another tx (the round is then posted again with fresh nonces)."""
        for job_id in unknown[:3]:
            posted = self._posted.get(job_id)
            found = await self.client.tx(posted[0].hash if posted is not None else job_id)
            if found is None:
                await self._resubmit(job_id)
                continue
            if found["status"] == "committed":
                receipt = found.get("receipt") or {}
                if not receipt.get("ok", False):
                    raise PostRefused(
                        f"post_job {job_id[:16]}… failed on chain: {receipt.get('code')}: "
                        f"{receipt.get('message')}"
                    )

    async def _resubmit(self, job_id: str) -> None:
        posted = self._posted.get(job_id)
        if posted is None:
            raise PostRefused(f"post_job {job_id[:16]}… is unknown to the node and not ours")
        tx, named = posted
        for tensor in named:  # the node we now talk to may lack them (fail-over)
            self._uploaded.pop(tensor.hash, None)
        await self._upload(named)
        (result,) = await self.client.submit_batch([tx])
        if not result.get("accepted") and "already" in str(result.get("error")):
            raise PostRefused(
                f"post_job {job_id[:16]}… was dropped and its nonce is taken: {result['error']}"
            )

    # ------------------------------------------------------------------------------ checkpoints

    def checkpoint(self, epoch: int, model_hash: str, metrics: dict[str, int]) -> str:
        """Post a checkpoint tx for the run and wait until it is committed; returns its hash."""
        tx_hash: str = self._sync(self._checkpoint(epoch, model_hash, metrics))
        return tx_hash

    async def _checkpoint(self, epoch: int, model_hash: str, metrics: dict[str, int]) -> str:
        await self._connect()
        nonce = await self._next_nonce()
        tx = self._sign(
            CHECKPOINT, checkpoint_body(self.run_name, epoch, model_hash, metrics), nonce
        )
        await self.client.submit(tx)
        self.nonce = nonce + 1
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            found = await self.client.tx(tx.hash)
            if found is not None and found["status"] == "committed":
                receipt = found.get("receipt") or {}
                if not receipt.get("ok", False):
                    raise LedgerError(f"checkpoint refused by the chain: {receipt.get('message')}")
                return tx.hash
            await asyncio.sleep(0.02)
        raise LedgerError(f"checkpoint tx {tx.hash} not committed within 60 s")
