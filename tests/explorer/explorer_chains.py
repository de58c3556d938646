"""Ledgers with every kind of record the explorer shows, and a node home folder to serve one.

`build_demo_chain` uses `ledger.harness.ChainHarness` (real txs, blocks, certificates and the
production state machine, no consensus): transfers, a failed tx, jobs settled by agreement, a
disputed job re-executed with a lying miner slashed, audited jobs, a DAG edge, an expired job,
and a training run with loss/accuracy checkpoints. `node_home` writes genesis, a validator key
and config so `layerchain node --home` serves that ledger (its peers are down; reads work).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ledger import kernels
from ledger.genesis import Genesis, Params, Validator
from ledger.harness import ChainHarness, actor_key, validator_keys_for
from ledger.tensor import Tensor
from ledger.transactions import job_input, tensor_input

RUN = "mlp-digits"
MINERS = ("miner-a", "miner-b", "miner-c")


@dataclass
class DemoChain:
    harness: ChainHarness
    db: Path
    tensor_dir: Path
    agreed_job: str
    disputed_job: str
    dag_job: str
    expired_job: str
    failed_tx: str
    transfer_tx: str
    liar: str
    """Address of the miner that lied on the disputed job."""


def demo_genesis(ports: list[int], params: Params | None = None) -> Genesis:
    keys = validator_keys_for(len(ports))
    balances = {actor_key(n).address: 10**9 for n in ("alice", "bob", *MINERS)}
    return Genesis(
        chain_id="layerchain-explorer-test",
        validators=tuple(
            Validator(k.address, f"node{i}", f"http://127.0.0.1:{port}")
            for i, (k, port) in enumerate(zip(keys, ports, strict=True))
        ),
        params=params or Params(audit_rate_ppm=250_000, commit_blocks=3, reveal_blocks=3),
        balances=balances,
        genesis_time_ms=1_760_000_000_000,
    )


def _tensor(seed: int, shape: tuple[int, ...], frac: int = 8) -> Tensor:
    rng = np.random.default_rng(seed)
    return Tensor(rng.integers(-300, 300, size=shape, dtype=np.int64), frac)


def build_demo_chain(root: Path, ports: list[int], filler_blocks: int = 0) -> DemoChain:
    """Build the demo ledger under `root` (ledger.db, tensors/); `filler_blocks` empty blocks
    with a transfer each are appended at the end (a longer chain)."""
    genesis = demo_genesis(ports)
    db, tensor_dir = root / "ledger.db", root / "tensors"
    c = ChainHarness(
        genesis=genesis,
        validator_keys=validator_keys_for(len(ports)),
        tensor_dir=tensor_dir,
        db_url=str(db),
    )
    c.commit_block([c.transfer("alice", "bob", 1_000)])
    transfer_tx = c.results[-1].receipts[0].tx_hash
    bad = c.sign("bob", "transfer", {"to": c.address("alice"), "amount": 10**12})
    c.commit_block([bad])  # fails statefully: kept with a failure receipt
    x, w, b = _tensor(1, (4, 3)), _tensor(2, (3, 2)), _tensor(3, (2,), 16)
    for t in (x, w, b):
        c.put_tensor(t)
    inputs = [tensor_input(x), tensor_input(w), tensor_input(b)]
    params = {"act": "relu", "out_frac": 8}

    agreed = None
    for i in range(4):  # audit_rate 25%: some are audited, most agreed
        post = c.post_job(
            "alice",
            op="dense_forward",
            inputs=inputs,
            params={**params},
            run=RUN,
            label=f"layer1/batch{i}",
        )
        c.commit_block([post])
        settled = c.settle(post.hash, MINERS[:2])
        if settled.settlement == "agreed" and agreed is None:
            agreed = post.hash
    assert agreed is not None, "no job settled by plain agreement; change the seeds"

    post = c.post_job(
        "alice",
        op="dense_forward",
        inputs=inputs,
        params={**params},
        run=RUN,
        label="layer1/disputed",
    )
    c.commit_block([post])
    honest = c.compute(post.hash)
    lie = list(honest)
    fake = _tensor(99, (4, 2))
    lie[0] = c.put_tensor(fake)
    disputed = c.settle(post.hash, ["miner-a", "miner-c"], outputs={"miner-c": lie})
    assert disputed.settlement == "reexecuted", disputed.settlement

    dag = c.post_job(
        "alice",
        op="dense_forward",
        inputs=[
            job_input(agreed, 0),
            tensor_input(_tensor(4, (2, 2))),
            tensor_input(_tensor(5, (2,), 16)),
        ],
        params={**params},
        run=RUN,
        label="layer2/batch0",
    )
    c.put_tensor(_tensor(4, (2, 2)))
    c.put_tensor(_tensor(5, (2,), 16))
    c.commit_block([dag])
    c.settle(dag.hash, MINERS[1:])

    expired = c.post_job("bob", op="dense_forward", inputs=inputs, params={**params})
    c.commit_block([expired])
    c.advance(genesis.params.commit_blocks + 2)

    for epoch, (loss, acc) in enumerate(
        [
            (2_302_585, 112_000),
            (1_412_000, 611_000),
            (802_000, 842_000),
            (511_000, 905_000),
            (384_000, 931_000),
        ]
    ):
        model = hashlib.sha256(f"model-{epoch}".encode()).hexdigest()
        c.commit_block(
            [c.checkpoint("alice", RUN, epoch, model, {"loss_ppm": loss, "accuracy_ppm": acc})]
        )
    for i in range(filler_blocks):
        c.commit_block([c.transfer("alice", "bob", 1 + i % 7)])
    assert c.store is not None
    c.store.close()
    return DemoChain(
        harness=c,
        db=db,
        tensor_dir=tensor_dir,
        agreed_job=agreed,
        disputed_job=post.hash,
        dag_job=dag.hash,
        expired_job=expired.hash,
        failed_tx=bad.hash,
        transfer_tx=transfer_tx,
        liar=c.address("miner-c"),
    )


def node_home(root: Path, genesis: Genesis, db: Path, tensor_dir: Path, port: int) -> Path:
    """A home folder for validator 0 of `genesis` serving the ledger at `db`."""
    home = root / "node0"
    home.mkdir(parents=True, exist_ok=True)
    genesis.save(home / "genesis.json")
    validator_keys_for(genesis.n)[0].save(home / "node_key.pem")
    (home / "config.toml").write_text(
        f'name = "node0"\nhost = "127.0.0.1"\nport = {port}\n'
        f'database_url = "sqlite:///{db}"\ntensor_dir = "{tensor_dir}"\n'
    )
    return home


__all__ = ["DemoChain", "build_demo_chain", "node_home", "demo_genesis", "kernels"]
