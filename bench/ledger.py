"""Benchmark: state-machine apply + store throughput, and offline verify speed.

    .venv/bin/python bench/ledger.py [--txs N] [--sizes 1,100,1000]

For each block size it builds, from pre-signed transactions, a chain on a fresh SQLite file (WAL,
synchronous=FULL) through the production path — `validate_block` (tx root and every Ed25519
signature checked), `apply_block`, `Store.append` (block, txs, receipts, certificate, diff and
projections in one transaction, fsync'd) — and times exactly that; signing the txs and the commit
certificates (client and consensus work) is done outside the timer. Two workloads:

- `transfer`: payments among 1,000 accounts.
- `jobs`: the job lifecycle — post_job (kernel shape inference, escrow), two commit_result,
  two reveal_result (settlement by agreement, payments) — 5 txs per job.
- `batched`: the same lifecycle with each miner's results sent as `commit_results` /
  `reveal_results` of up to 64 jobs — 1 + 4/64 txs per job.

The `jobs/s cpu` column counts settled jobs for the two job workloads.

Then it runs `verify_ledger` over each ledger (hash links, tx roots, signatures, certificates,
full replay) and reports blocks/s and txs/s.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

# This file is named like the package it measures: keep its own directory off the import path.
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path.pop(0)

from ledger import kernels  # noqa: E402
from ledger.blocks import validate_block  # noqa: E402
from ledger.execution import apply_block  # noqa: E402
from ledger.genesis import Params  # noqa: E402
from ledger.harness import ChainHarness  # noqa: E402
from ledger.store import Store  # noqa: E402
from ledger.tensor import Tensor  # noqa: E402
from ledger.transactions import Tx, tensor_input  # noqa: E402
from ledger.verify import verify_ledger  # noqa: E402


def transfer_txs(c: ChainHarness, n: int) -> list[Tx]:
    names = [f"acct-{i}" for i in range(1000)]
    return [c.transfer(names[i % 1000], names[(i * 7 + 1) % 1000], 1) for i in range(n)]


def run(workload: str, total: int, block_size: int, workdir: Path) -> tuple[float, float, Path]:
    """Build one ledger; return (tx/s by wall clock, tx/s per CPU-second, database path)."""
    balances = {f"acct-{i}": 10**9 for i in range(1000)}
    balances.update({f"poster-{i}": 10**9 for i in range(100)})
    params = Params(audit_rate_ppm=0, max_block_txs=max(2000, block_size))
    db = workdir / f"{workload}-{block_size}.db"
    c = ChainHarness(balances=balances, params=params, db_url=str(db))
    if workload == "transfer":
        txs = transfer_txs(c, total)
        blocks = [txs[i : i + block_size] for i in range(0, len(txs), block_size)]
    elif workload == "jobs":
        blocks = _job_blocks(c, total, block_size)
    else:
        blocks = _job_blocks(c, total, block_size, batched=True)
    assert c.store is not None
    wall = cpu = 0.0
    n_txs = 0
    for txs in blocks:
        block = c.make_block(txs)
        wall_start, cpu_start = time.perf_counter(), time.process_time()
        validate_block(block, c.genesis, c.head, app_hash=c.state.root)
        result = apply_block(c.state, block, c.executor)
        wall_mid, cpu_mid = time.perf_counter(), time.process_time()
        cert = c.certify(block)  # consensus work, not timed
        wall_cert, cpu_cert = time.perf_counter() - wall_mid, time.process_time() - cpu_mid
        c.store.append(block, result, cert)
        wall += time.perf_counter() - wall_start - wall_cert
        cpu += time.process_time() - cpu_start - cpu_cert
        c.head = block.header
        n_txs += len(txs)
        if workload != "transfer":
            assert all(r.ok for r in result.receipts), [r for r in result.receipts if not r.ok][:1]
    c.store.close()
    return n_txs / wall, n_txs / cpu, db


def _job_blocks(
    c: ChainHarness, total: int, block_size: int, batched: bool = False
) -> list[list[Tx]]:
    """Pipelined job lifecycle: block i holds new posts, commits for block i-1's posts and
    reveals for block i-2's posts (so the commit phase has closed). `batched`: each block's jobs
    are posted as single txs but committed and revealed by two miners in batches of 64."""
    x = Tensor(np.arange(12, dtype=np.int64).reshape(4, 3), 8)
    w = Tensor(np.arange(6, dtype=np.int64).reshape(3, 2), 8)
    b = Tensor(np.arange(2, dtype=np.int64), 16)
    inputs = [tensor_input(x), tensor_input(w), tensor_input(b)]
    params = {"act": "relu", "out_frac": 8}
    outputs = [t.hash for t in kernels.execute("dense_forward", params, [x, w, b])]
    per_block = max(1, block_size // 5) if not batched else max(1, block_size)
    n_jobs = max(1, total // 5)
    stages: list[tuple[list[Tx], list[Tx], list[Tx]]] = []
    for number, start in enumerate(range(0, n_jobs, per_block)):
        posts, commits, reveals = [], [], []
        for j in range(start, min(n_jobs, start + per_block)):
            post = c.post_job(f"poster-{j % 100}", op="dense_forward", inputs=inputs, params=params)
            posts.append(post)
            if batched:
                continue
            for k in (0, 1):
                miner = f"miner-{j % 200}-{k}"
                commits.append(c.commit(miner, post.hash, outputs))
                reveals.append(c.reveal(miner, post.hash, outputs))
        for chunk in range(0, len(posts), 64) if batched else ():
            results = {post.hash: outputs for post in posts[chunk : chunk + 64]}
            for k in (0, 1):
                miner = f"batcher-{number % 50}-{chunk}-{k}"
                commits.append(c.commit_many(miner, results))
                reveals.append(c.reveal_many(miner, results))
        stages.append((posts, commits, reveals))
    if block_size < 5 and not batched:  # one job at a time: post, commit, commit, reveal, reveal
        flat = [tx for posts, commits, reveals in stages for tx in posts + commits + reveals]
        return [flat[i : i + block_size] for i in range(0, len(flat), block_size)]
    blocks: list[list[Tx]] = []
    for i in range(len(stages) + 2):
        block: list[Tx] = []
        if i - 2 >= 0:
            block += stages[i - 2][2]
        if 0 <= i - 1 < len(stages):
            block += stages[i - 1][1]
        if i < len(stages):
            block += stages[i][0]
        blocks.append(block)
    # nonces: a miner's commit (stage i) precedes its reveal (stage i) in signing order, and
    # blocks are executed in stage order, so each sender's txs arrive in nonce order
    return blocks


def verify_baseline(n: int = 2000) -> float:
    """Ed25519 verifications per second on this machine right now (the floor of any tx/s)."""
    from ledger.harness import actor_key
    from ledger.identity import verify_raw

    key = actor_key("baseline")
    message = b"x" * 200
    signature = key.sign_raw(message)
    start = time.perf_counter()
    for _ in range(n):
        verify_raw(key.address, message, signature)
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--txs", type=int, default=20_000, help="transactions per run")
    parser.add_argument("--sizes", default="1,100,1000", help="block sizes")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    baseline = verify_baseline()
    print(
        f"baseline: Ed25519 verify alone {baseline:,.0f}/s; wall = by the clock (includes fsync "
        "and time lost to other processes), cpu = per CPU-second of this process"
    )
    print(
        f"{'workload':<9} {'block':>6} {'txs':>6} {'apply+store tx/s wall':>22} {'cpu':>7} "
        f"{'verify blocks/s wall':>21} {'cpu':>7} {'verify tx/s cpu':>16} {'jobs/s cpu':>11}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for workload in ("transfer", "jobs", "batched"):
            for size in sizes:
                if workload == "batched" and size < 100:
                    continue  # batches need many jobs per block
                total = min(args.txs, 500) if size == 1 else args.txs
                wall_rate, cpu_rate, db = run(workload, total, size, Path(tmp))
                store = Store(str(db), create=False)
                cpu_start = time.process_time()
                report = verify_ledger(store)
                verify_cpu = time.process_time() - cpu_start
                store.close()
                assert report.ok, report.summary()
                # apply+store CPU-seconds = txs / cpu_rate; settled jobs = total // 5
                jobs_per_cpu_s = (
                    0.0 if workload == "transfer" else total // 5 * cpu_rate / report.txs
                )
                print(
                    f"{workload:<9} {size:>6} {report.txs:>6} {wall_rate:>22,.0f} "
                    f"{cpu_rate:>7,.0f} {report.blocks / report.seconds:>21,.1f} "
                    f"{report.blocks / verify_cpu:>7,.1f} {report.txs / verify_cpu:>16,.0f} "
                    f"{jobs_per_cpu_s:>11,.0f}"
                )


if __name__ == "__main__":
    main()
