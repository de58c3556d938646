"""Benchmark: training through the chain (4 validator processes on loopback) against the local run.

    .venv/bin/python bench/train.py [--skip epoch,latency,scaling,saturation] [--rounds 50]

Four measurements, each on a fresh devnet (`driver.devnet.start_devnet`: 4 `layerchain node`
processes, PBFT over HTTP, SQLite ledgers):

1. **epoch**: one epoch of digits with the devnet's default model (batch 64, hidden 32, 4 shards,
   r = 2, 3 miner processes), wall time against `--local` of the same config (ratio).
2. **latency**: job round latency — one small dense_forward job (r = 2) posted, settled by two
   miners (commit block, reveal block), and its output read back and hash-checked by the client:
   p50 / p99 over `--rounds` sequential rounds.
3. **scaling**: 16 simulated miners (in one process, asyncio) whose compute is a fixed 100 ms
   sleep; a batch of independent r = 2 jobs; coordination efficiency = achieved settled jobs/s /
   ideal (16 miners / (0.1 s × r) = 80 jobs/s).
4. **saturation**: small dense jobs, r = 2, 8 fast in-process miners, a batch posted in paced
   chunks (`CHUNK` jobs every `CHUNK_GAP_S`): settled jobs/s.

The machine is shared; the load average is printed with the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

# This file is named like nothing it imports, but keep bench/ off the import path all the same.
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path.pop(0)

from driver.devnet import DEVNET_PARAMS, Devnet, devnet_config, start_devnet  # noqa: E402
from driver.local import LocalRunner  # noqa: E402
from driver.network_training import train_network  # noqa: E402
from driver.training import train  # noqa: E402
from ledger import kernels  # noqa: E402
from ledger.identity import Keypair  # noqa: E402
from ledger.tensor import Tensor  # noqa: E402
from ledger.transactions import POST_JOB, Tx, post_job_body, sign_tx, tensor_input  # noqa: E402
from miner.client import NodeClient  # noqa: E402
from miner.worker import Miner, MinerConfig  # noqa: E402

PARAMS: dict[str, Any] = {"act": "relu", "out_frac": 12}
#: Jobs are posted in chunks this size, this far apart: a single block of several hundred
#: post_jobs takes the primary longer than the view-change timeout on a loaded machine.
CHUNK = 40
CHUNK_GAP_S = 0.1


def dense_job(seed: int, rows: int = 8, k: int = 16, n: int = 8) -> list[Tensor]:
    rng = np.random.default_rng(seed)
    return [
        Tensor(rng.integers(-4096, 4096, size=(rows, k), dtype=np.int64), 12),
        Tensor(rng.integers(-(1 << 18), 1 << 18, size=(k, n), dtype=np.int64), 20),
        Tensor(rng.integers(-(1 << 18), 1 << 18, size=(n,), dtype=np.int64), 20),
    ]


class Poster:
    """Posts r = 2 dense jobs as the devnet's funded client, with consecutive nonces."""

    def __init__(self, client: NodeClient, key: Keypair, chain_id: str) -> None:
        self.client, self.key, self.chain_id = client, key, chain_id
        self.nonce = -1
        self.inputs: dict[str, list[Tensor]] = {}
        self.reposted = 0

    async def post(self, jobs: list[list[Tensor]], replication: int = 2) -> list[str]:
        if self.nonce < 0:
            self.nonce = await self.client.next_nonce(self.key.address)
        tensors = {t.hash: t for inputs in jobs for t in inputs}
        semaphore = asyncio.Semaphore(8)

        async def upload(t: Tensor) -> None:
            async with semaphore:
                await self.client.put_tensor(t)

        await asyncio.gather(*(upload(t) for t in tensors.values()))
        txs: list[Tx] = []
        for inputs in jobs:
            body = post_job_body(
                op="dense_forward",
                kernel_version=kernels.KERNEL_VERSION,
                inputs=[tensor_input(t) for t in inputs],
                params=PARAMS,
                replication=replication,
                reward=10,
                deadline=10_000,
            )
            txs.append(sign_tx(self.key, self.chain_id, POST_JOB, self.nonce + len(txs), body))
        for start in range(0, len(txs), 500):
            results = await self.client.submit_batch(txs[start : start + 500])
            refused = [r for r in results if not r["accepted"]]
            if refused:
                raise RuntimeError(f"post refused: {refused[0]['error']}")
        self.nonce += len(txs)
        for tx, inputs in zip(txs, jobs, strict=True):
            self.inputs[tx.hash] = inputs
        return [tx.hash for tx in txs]

    async def settle(self, ids: list[str], timeout: float = 900) -> dict[str, Any]:
        """Wait until every job settled; post again any post_job the chain committed as failed
        (`bad_nonce` when a node ordered the txs out of nonce order during a view change) or
        that no node knows any more (dropped from the mempools during a view change)."""
        ids = list(ids)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            answer = await self.client.results(ids, wait=5)
            if answer["done"]:
                bad = [j for j in answer["jobs"] if j["status"] != "settled"]
                if bad:
                    raise RuntimeError(f"{len(bad)} jobs ended {bad[0]['status']}")
                return {j["id"]: j for j in answer["jobs"]}
            unknown = [j["id"] for j in answer["jobs"] if j["status"] == "unknown"]
            failed = []
            for job_id in unknown:
                found = await self.client.tx(job_id)
                if found is None or (
                    found["status"] == "committed" and not (found.get("receipt") or {}).get("ok")
                ):
                    failed.append(job_id)  # failed on chain, or dropped by every mempool
            if failed:
                self.nonce = -1
                fresh = await self.post([self.inputs[j] for j in failed])
                self.reposted += len(failed)
                ids = [i for i in ids if i not in set(failed)] + fresh
        raise RuntimeError("jobs did not settle in time")


def load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


# ----------------------------------------------------------------------------- 1. epoch


def bench_epoch(root: Path) -> None:
    config = devnet_config(epochs=1)
    started = time.monotonic()
    local = train(config, LocalRunner())
    local_s = time.monotonic() - started
    net = start_devnet(root / "epoch")
    try:
        started = time.monotonic()
        result = train_network(config, net.urls, net.client_key)
        network_s = time.monotonic() - started
    finally:
        net.processes.close()
    same = result.result.weights_hash == local.weights_hash
    print(
        f"epoch: digits 1 epoch (batch 64, hidden 32, 4 shards, r=2, 3 miners): "
        f"{result.jobs} jobs; devnet {network_s:.1f} s vs --local {local_s:.2f} s "
        f"(ratio {network_s / local_s:.0f}x); {result.jobs / network_s:.1f} jobs/s; "
        f"weights identical: {same}; load {load()}"
    )


# ----------------------------------------------------------------------------- 2. latency


async def _latency(net: Devnet, rounds: int) -> list[float]:
    async with NodeClient(net.urls) as client:
        status = await client.status()
        poster = Poster(client, net.client_key, status["chain_id"])
        times = []
        for i in range(rounds):
            inputs = dense_job(10_000 + i)
            for t in inputs:  # uploads are part of posting, but not of the job round
                await client.put_tensor(t)
            started = time.perf_counter()
            (job_id,) = await poster.post([inputs])
            settled = await poster.settle([job_id])
            (record,) = settled.values()
            await client.get_tensor(record["outputs"][0])
            times.append(time.perf_counter() - started)
        return times


def bench_latency(root: Path, rounds: int) -> None:
    net = start_devnet(root / "latency", miners=2)
    try:
        times = sorted(asyncio.run(_latency(net, rounds)))
    finally:
        net.processes.close()
    p50 = statistics.median(times) * 1000
    p99 = times[min(len(times) - 1, int(0.99 * len(times)))] * 1000
    print(
        f"latency: job round (post -> settled with r=2 -> output read back), {rounds} rounds: "
        f"p50 {p50:.0f} ms, p99 {p99:.0f} ms; load {load()}"
    )


# ----------------------------------------------------------------------------- 3-4. throughput


async def _throughput(
    net: Devnet, miners: int, workers: int, simulate_ms: int, jobs: int
) -> tuple[float, int]:
    stop = asyncio.Event()
    fleet = [
        Miner(
            NodeClient(net.urls[i % len(net.urls) :] + net.urls[: i % len(net.urls)]),
            Keypair.generate(),
            MinerConfig(workers=workers, poll_wait_s=5, simulate_ms=simulate_ms),
        )
        for i in range(miners)
    ]
    tasks = [asyncio.create_task(m.run(stop)) for m in fleet]
    async with NodeClient(net.urls) as client:
        status = await client.status()
        poster = Poster(client, net.client_key, status["chain_id"])
        batch = [dense_job(i, rows=4, k=8, n=4) for i in range(jobs)]
        for inputs in batch:  # upload first: measure the chain, not the uploads
            for t in inputs:
                await client.put_tensor(t)
        await asyncio.sleep(1.0)  # miners polling
        started = time.perf_counter()
        ids: list[str] = []
        for start in range(0, len(batch), CHUNK):  # paced: one huge block stalls the primary
            ids += await poster.post(batch[start : start + CHUNK])
            await asyncio.sleep(CHUNK_GAP_S)
        await poster.settle(ids)
        elapsed = time.perf_counter() - started
        if poster.reposted:
            print(f"  ({poster.reposted} post_jobs failed with bad_nonce and were posted again)")
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    wasted = sum(m.stats.lost for m in fleet)
    for m in fleet:
        await m.client.aclose()
    return elapsed, wasted


def bench_scaling(root: Path, miners: int = 16, jobs: int = 160) -> None:
    net = start_devnet(root / "scaling", miners=0, params=DEVNET_PARAMS)
    try:
        elapsed, wasted = asyncio.run(_throughput(net, miners, 1, 100, jobs))
    finally:
        net.processes.close()
    ideal = miners / (0.1 * 2)
    achieved = jobs / elapsed
    print(
        f"scaling: {miners} simulated miners (100 ms per job, 1 job each at a time), {jobs} jobs, "
        f"r=2: {achieved:.1f} settled jobs/s vs ideal {ideal:.0f} -> efficiency "
        f"{achieved / ideal:.0%}; {wasted} commitments lost the race; load {load()}"
    )


def bench_saturation(root: Path, miners: int = 8, jobs: int = 2000) -> None:
    net = start_devnet(root / "saturation", miners=0, params=DEVNET_PARAMS)
    try:
        elapsed, wasted = asyncio.run(_throughput(net, miners, 4, 0, jobs))
    finally:
        net.processes.close()
    print(
        f"saturation: {jobs} small dense jobs (4x8 @ 8x4), r=2, {miners} in-process miners: "
        f"{jobs / elapsed:.0f} settled jobs/s ({elapsed:.1f} s); {wasted} lost commitments; "
        f"load {load()}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip", default="", help="comma-separated: epoch,latency,scaling,...")
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--jobs", type=int, default=400, help="saturation batch size")
    args = parser.parse_args()
    skip = set(args.skip.split(",")) if args.skip else set()
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cpus, load {load()}")
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        root = Path(tmp)
        if "epoch" not in skip:
            bench_epoch(root)
        if "latency" not in skip:
            bench_latency(root, args.rounds)
        if "scaling" not in skip:
            bench_scaling(root)
        if "saturation" not in skip:
            bench_saturation(root, jobs=args.jobs)


if __name__ == "__main__":
    main()
