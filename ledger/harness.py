"""A chain builder for tests, benchmarks and tools: real txs, real blocks, real certificates.

There is no consensus here: the harness plays a known test validator set, proposes each block
itself and signs its commit certificate with a quorum of those validators. Everything else is the
production code path — `validate_block`, `apply_block`, `Store.append` — so a chain built here is
indistinguishable from one a testnet committed, and `layerchain verify` accepts it.

    chain = ChainHarness(balances={"alice": 1_000}, tensor_dir=tmp / "tensors", db_url=...)
    x = chain.put_tensor(quantize(...))
    post = chain.post_job("alice", op="dense_forward", inputs=[tensor_input(x), ...], params=...)
    chain.commit_block([post])
    outputs = chain.compute(post.hash)                 # what an honest miner computes
    chain.commit_block([chain.commit("m1", post.hash, outputs), chain.commit("m2", ...)])
    chain.commit_block([chain.reveal("m1", post.hash, outputs), chain.reveal("m2", ...)])
    assert chain.job(post.hash).status == "settled"

Actors are named; `actor_key(name)` derives the same Ed25519 key for a name everywhere.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ledger import kernels
from ledger.blocks import Block, BlockHeader, make_block, validate_block
from ledger.certificate import CommitCertificate, sign_commit_vote
from ledger.encoding import digest
from ledger.errors import LedgerError
from ledger.execution import BlockResult, apply_block
from ledger.executor import Executor, KernelExecutor, NoExecutor
from ledger.genesis import Genesis, Params, Validator
from ledger.identity import Keypair
from ledger.receipts import Receipt
from ledger.state import Job, State
from ledger.store import Store
from ledger.tensor import Tensor
from ledger.tensorstore import TensorStore
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
    checkpoint_body,
    commit_body,
    commits_body,
    post_job_body,
    post_jobs_body,
    reveal_body,
    reveals_body,
    sign_tx,
    submit_body,
    transfer_body,
)

TEST_CHAIN_ID = "layerchain-test"
GENESIS_TIME_MS = 1_700_000_000_000
BLOCK_INTERVAL_MS = 1_000


def actor_key(name: str) -> Keypair:
    """The deterministic key of a named test actor ("alice", "miner-1", "validator-0", ...)."""
    return Keypair.from_seed(hashlib.sha256(b"layerchain/test-key/" + name.encode()).digest())


def validator_keys_for(n: int) -> list[Keypair]:
    return [actor_key(f"validator-{i}") for i in range(n)]


def harness_genesis(
    *,
    n_validators: int = 4,
    balances: dict[str, int] | None = None,
    params: Params | None = None,
    chain_id: str = TEST_CHAIN_ID,
    genesis_time_ms: int = GENESIS_TIME_MS,
) -> Genesis:
    """A genesis with the test validator set; `balances` maps actor names to credits."""
    keys = validator_keys_for(n_validators)
    return Genesis(
        chain_id=chain_id,
        validators=tuple(Validator(k.address, f"validator-{i}", "") for i, k in enumerate(keys)),
        params=params or Params(),
        balances={actor_key(name).address: amount for name, amount in (balances or {}).items()},
        genesis_time_ms=genesis_time_ms,
    )


def salt_for(miner: str, job_id: str) -> str:
    """A deterministic salt for tests (real miners draw 32 random bytes)."""
    return digest({"salt": miner, "job": job_id})


class ChainHarness:
    """Builds a chain block by block with the real state machine, signing as the validators."""

    def __init__(
        self,
        *,
        balances: dict[str, int] | None = None,
        params: Params | None = None,
        n_validators: int = 4,
        chain_id: str = TEST_CHAIN_ID,
        tensor_dir: str | Path | None = None,
        db_url: str | None = None,
        genesis: Genesis | None = None,
        validator_keys: Sequence[Keypair] | None = None,
        executor: Executor | None = None,
    ) -> None:
        """`balances` maps actor names to genesis credits. With `tensor_dir`, disputed jobs are
        re-executed with the real kernels; with `db_url`, every block is also stored."""
        self.validator_keys = list(validator_keys or validator_keys_for(n_validators))
        self.genesis = genesis or harness_genesis(
            n_validators=len(self.validator_keys),
            balances=balances,
            params=params,
            chain_id=chain_id,
        )
        self.chain_id = self.genesis.chain_id
        self.state = State.from_genesis(self.genesis)
        self.tensors = TensorStore(tensor_dir) if tensor_dir is not None else None
        self.executor: Executor = executor or (
            KernelExecutor(self.tensors) if self.tensors else NoExecutor()
        )
        self.store = Store.open(db_url, self.genesis) if db_url is not None else None
        self.head: BlockHeader | None = None
        self.nonces: dict[str, int] = {}
        self.results: list[BlockResult] = []
        self._keys: dict[str, Keypair] = {}

    # ----------------------------------------------------------------------- actors and txs

    def key(self, name: str | Keypair) -> Keypair:
        if isinstance(name, Keypair):
            return name
        if name not in self._keys:
            self._keys[name] = actor_key(name)
        return self._keys[name]

    def address(self, name: str | Keypair) -> str:
        return self.key(name).address

    def sign(
        self, sender: str | Keypair, tx_type: str, body: dict[str, Any], nonce: int | None = None
    ) -> Tx:
        """Sign a tx, taking the sender's next nonce from the harness's own counter."""
        key = self.key(sender)
        if nonce is None:
            nonce = self.nonces.get(key.address, self.state.nonce(key.address))
        self.nonces[key.address] = nonce + 1
        return sign_tx(key, self.chain_id, tx_type, nonce, body)

    def transfer(self, sender: str | Keypair, to: str | Keypair, amount: int) -> Tx:
        return self.sign(sender, TRANSFER, transfer_body(self.address(to), amount))

    def post_job(
        self,
        sender: str | Keypair,
        *,
        op: str,
        inputs: Sequence[dict[str, Any]],
        params: dict[str, Any],
        replication: int | None = None,
        reward: int | None = None,
        deadline: int | None = None,
        run: str | None = None,
        label: str | None = None,
        kernel_version: str = kernels.KERNEL_VERSION,
    ) -> Tx:
        """A post_job tx; the job id is the returned tx's hash. Defaults come from the genesis."""
        p = self.genesis.params
        body = post_job_body(
            op=op,
            kernel_version=kernel_version,
            inputs=inputs,
            params=params,
            replication=p.replication if replication is None else replication,
            reward=p.reward_per_job if reward is None else reward,
            deadline=p.commit_blocks if deadline is None else deadline,
            run=run,
            label=label,
        )
        return self.sign(sender, POST_JOB, body)

    def post_jobs(self, sender: str | Keypair, jobs: Sequence[dict[str, Any]]) -> Tx:
        """One post_jobs tx creating jobs from `post_job_body(...)` bodies; the job ids are
        `posted_jobs(tx)`."""
        return self.sign(sender, POST_JOBS, post_jobs_body(jobs))

    def commit(
        self, miner: str | Keypair, job_id: str, outputs: Sequence[str], salt: str | None = None
    ) -> Tx:
        address = self.address(miner)
        salt = salt or salt_for(address, job_id)
        return self.sign(miner, COMMIT_RESULT, commit_body(job_id, address, outputs, salt))

    def reveal(
        self, miner: str | Keypair, job_id: str, outputs: Sequence[str], salt: str | None = None
    ) -> Tx:
        salt = salt or salt_for(self.address(miner), job_id)
        return self.sign(miner, REVEAL_RESULT, reveal_body(job_id, outputs, salt))

    def commit_many(self, miner: str | Keypair, results: Mapping[str, Sequence[str]]) -> Tx:
        """One `commit_results` tx: job id -> outputs, each with this harness's salt."""
        address = self.address(miner)
        items = [
            commit_body(job_id, address, outputs, salt_for(address, job_id))
            for job_id, outputs in results.items()
        ]
        return self.sign(miner, COMMIT_RESULTS, commits_body(items))

    def reveal_many(self, miner: str | Keypair, results: Mapping[str, Sequence[str]]) -> Tx:
        """One `reveal_results` tx opening `commit_many`'s commitments."""
        address = self.address(miner)
        items = [
            reveal_body(job_id, outputs, salt_for(address, job_id))
            for job_id, outputs in results.items()
        ]
        return self.sign(miner, REVEAL_RESULTS, reveals_body(items))

    def submit(self, miner: str | Keypair, job_id: str, outputs: Sequence[str]) -> Tx:
        return self.sign(miner, SUBMIT_RESULT, submit_body(job_id, outputs))

    def checkpoint(
        self,
        sender: str | Keypair,
        run: str,
        epoch: int,
        model_hash: str,
        metrics: dict[str, int] | None = None,
    ) -> Tx:
        return self.sign(sender, CHECKPOINT, checkpoint_body(run, epoch, model_hash, metrics or {}))

    # ----------------------------------------------------------------------- blocks

    @property
    def height(self) -> int:
        return self.state.height

    def make_block(
        self,
        txs: Sequence[Tx] = (),
        *,
        view: int = 0,
        proposer: str | None = None,
        time_ms: int | None = None,
    ) -> Block:
        """The next block on top of the current head, as a primary would propose it."""
        height = self.state.height + 1
        n = len(self.validator_keys)
        return make_block(
            chain_id=self.chain_id,
            height=height,
            prev_hash=self.state.block_hash,
            time_ms=time_ms
            if time_ms is not None
            else self.genesis.genesis_time_ms + height * BLOCK_INTERVAL_MS,
            proposer=proposer or self.validator_keys[(height + view) % n].address,
            view=view,
            app_hash=self.state.root,
            txs=txs,
        )

    def certify(self, block: Block, signers: Iterable[Keypair] | None = None) -> CommitCertificate:
        """A commit certificate signed by `signers` (default: the first quorum of validators)."""
        chosen = (
            list(signers) if signers is not None else self.validator_keys[: self.genesis.quorum]
        )
        header = block.header
        signatures = {
            k.address: sign_commit_vote(k, self.chain_id, header.height, header.view, header.hash)
            for k in chosen
        }
        return CommitCertificate.build(header.height, header.view, header.hash, signatures)

    def apply(self, block: Block, *, check_signatures: bool = True) -> BlockResult:
        """Validate, execute, certify and (with a store) persist a block already built."""
        validate_block(
            block,
            self.genesis,
            self.head,
            app_hash=self.state.root,
            check_signatures=check_signatures,
        )
        result = apply_block(self.state, block, self.executor)
        if self.store is not None:
            self.store.append(block, result, self.certify(block))
        self.head = block.header
        self.results.append(result)
        return result

    def commit_block(self, txs: Sequence[Tx] = (), **header: Any) -> BlockResult:
        """Build the next block from `txs` and commit it (see `apply`)."""
        return self.apply(self.make_block(txs, **header))

    def advance(self, blocks: int) -> None:
        """Commit `blocks` empty blocks (lets deadlines pass)."""
        for _ in range(blocks):
            self.commit_block()

    # ----------------------------------------------------------------------- jobs and tensors

    def put_tensor(self, tensor: Tensor) -> str:
        if self.tensors is None:
            raise LedgerError("this harness has no tensor store (pass tensor_dir)")
        return self.tensors.put(tensor)

    def job(self, job_id: str) -> Job:
        return self.state.jobs[job_id]

    def inputs_of(self, job_id: str) -> list[Tensor]:
        """A job's input tensors (inputs from other jobs must have settled)."""
        if self.tensors is None:
            raise LedgerError("this harness has no tensor store (pass tensor_dir)")
        job = self.job(job_id)
        out = []
        for ref in job.inputs:
            if "tensor" in ref:
                out.append(self.tensors.get(ref["tensor"]))
            else:
                parent = self.job(ref["job"])
                if parent.outputs is None:
                    raise LedgerError(f"input job {ref['job']} has not settled")
                out.append(self.tensors.get(parent.outputs[ref["output"]]))
        return out

    def compute(self, job_id: str) -> list[str]:
        """What an honest miner does: run the kernels on the inputs, upload the outputs."""
        job = self.job(job_id)
        outputs = kernels.execute(job.op, job.params, self.inputs_of(job_id))
        return [self.put_tensor(t) for t in outputs]

    def receipt(self, tx: Tx) -> Receipt:
        """The receipt of the most recent execution of `tx`."""
        for result in reversed(self.results):
            for receipt in result.receipts:
                if receipt.tx_hash == tx.hash:
                    return receipt
        raise LedgerError(f"tx {tx.hash} is in no committed block")

    def settle(
        self,
        job_id: str,
        miners: Sequence[str | Keypair],
        outputs: dict[str, list[str]] | None = None,
    ) -> Job:
        """Commit-then-reveal by `miners` in two blocks. `outputs` maps a miner (by name) to the
        outputs it reveals instead of the honest ones (a liar); the others compute honestly."""
        lies = outputs or {}
        honest = self.compute(job_id) if len(lies) < len(miners) else []
        chosen = {
            self.address(m): lies.get(m, honest) if isinstance(m, str) else honest for m in miners
        }
        self.commit_block([self.commit(m, job_id, chosen[self.address(m)]) for m in miners])
        self.commit_block([self.reveal(m, job_id, chosen[self.address(m)]) for m in miners])
        return self.job(job_id)
