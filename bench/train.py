"""Benchmark: training through the chain (4 validator processes on loopback) against the local run.

    .venv/bin/python bench/train.py [--skip epoch,latency,scaling,saturation] [--rounds 50]

Four measurements, each on a fresh devnet (`driver.devnet.start_devnet`: 4 `layerchain node`
processes, PBFT over HTTP, SQLite ledgers):

1. **epoch**: one epoch of digits with the devnet's default model (batch 64, hidden 32, 4 shards,
   r = 2, 3 miner processes), wall time against `--local` of the same config (ratio).
2. **latency**: job round latency — one small dense_forward job (r = 2) posted, settled by two
   miners (commit block, reveal block), and its output read back and hash-checked by the client:
   p50 / p99 over `--rounds` sequential rounds, after `WARMUP_ROUNDS` unmeasured ones.
3. **scaling**: 16 simulated miners (one worker each; in `--scaling-processes` (4) processes of
   4 miners, so that one busy event loop does not stretch every 100 ms sleep, as it did to
   140-160 ms with all 16 in the bench process) whose compute is a fixed 100 ms sleep;
   `--scaling-jobs` (1600) independent r = 2 jobs; coordination efficiency = achieved settled
   jobs/s / ideal (16 miners / (0.1 s × r) = 80 jobs/s). The ideal is what the miners can
   possibly do: one worker computes back to back, and a miner's input downloads, uploads,
   commits and reveals overlap its sleeps (prefetch, off-slot publishing), so the 100 ms is the
   whole per-job cost of a slot. The run is 1600 jobs (20 s ideal), not 160 (2 s): with
   160, the first block (~30 ms before any job opens) and the tail (the last job's compute,
   commit block and reveal block, ~200 ms) were 10-15% of the measurement on their own.
4. **saturation**: small dense jobs, r = 2, 8 fast miners × 4 workers (in the bench process
   unless `--saturation-processes`): settled jobs/s.

Posting (scaling, saturation) is paced by what the chain takes, not by a timer: chunks of `CHUNK`
jobs, as `post_jobs` txs of `POST_BATCH` jobs each, go out while fewer than `WINDOW` post txs wait
uncommitted (the poster's committed nonce is read back from the node). One huge block of jobs
stalls the primary past its view-change timeout; a timer-paced chunk either caps the offered load
or outruns the chain.

The machine is shared; the load average is printed with the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import queue
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
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
from ledger.gcpolicy import tune_gc  # noqa: E402
from ledger.identity import Keypair  # noqa: E402
from ledger.tensor import Tensor  # noqa: E402
from ledger.transactions import (  # noqa: E402
    POST_JOB,
    POST_JOBS,
    Tx,
    post_job_body,
    post_jobs_body,
    posted_jobs,
    sign_tx,
    tensor_input,
)
from miner.client import NodeClient  # noqa: E402
from miner.worker import Miner, MinerConfig  # noqa: E402

PARAMS: dict[str, Any] = {"act": "relu", "out_frac": 12}
#: Jobs are posted in chunks this size while fewer than WINDOW post txs wait uncommitted: a
#: single block of thousands of jobs takes the primary longer than the view-change timeout.
CHUNK = 48
WINDOW = 12
#: How often the poster reads its committed nonce back while the window is full. The window
#: holds ~0.7 s of saturation load; reading every 5 ms cost the bench process a tenth of its
#: CPU and node 0 ~5 % of a core in requests, on a machine whose CPU is the limit.
WINDOW_POLL_S = 0.02
#: Jobs per post_jobs tx (PROTOCOL §5.3; ~500 bytes each, under the 16 KiB tx limit).
POST_BATCH = 24
#: Most jobs one `GET /work/results` answers (the node's MAX_RESULT_JOBS, api/routes/work.py).
RESULTS_MAX = 5000


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
        self.txs: dict[str, Tx] = {}
        self.uploaded: set[tuple[str, str]] = set()
        """(node URL, tensor hash) already uploaded: a round does not upload its inputs again."""
        self.reposted = 0
        self.resubmitted = 0

    async def upload(self, tensors: list[Tensor]) -> None:
        """Upload what this node lacks, 64 tensors per `POST /tensors/batch`, 4 at a time."""
        url = self.client.url
        todo = list({t.hash: t for t in tensors if (url, t.hash) not in self.uploaded}.values())
        semaphore = asyncio.Semaphore(4)

        async def upload(part: list[Tensor]) -> None:
            async with semaphore:
                await self.client.put_tensors(part)

        await asyncio.gather(*(upload(todo[i : i + 64]) for i in range(0, len(todo), 64)))
        self.uploaded.update((url, t.hash) for t in todo)

    async def post(self, jobs: list[list[Tensor]], replication: int = 2) -> list[str]:
        if self.nonce < 0:
            account = await self.client.account(self.key.address)
            self.nonce = int(account["nonce"]) + int(account.get("pending_txs", 0))
        await self.upload([t for inputs in jobs for t in inputs])
        bodies = [
            post_job_body(
                op="dense_forward",
                kernel_version=kernels.KERNEL_VERSION,
                inputs=[tensor_input(t) for t in inputs],
                params=PARAMS,
                replication=replication,
                reward=10,
                deadline=10_000,
            )
            for inputs in jobs
        ]
        txs: list[Tx] = []
        ids: list[str] = []
        for start in range(0, len(bodies), POST_BATCH):  # one post_jobs per POST_BATCH jobs
            part = bodies[start : start + POST_BATCH]
            nonce = self.nonce + len(txs)
            if len(part) == 1:
                tx = sign_tx(self.key, self.chain_id, POST_JOB, nonce, part[0])
            else:
                tx = sign_tx(self.key, self.chain_id, POST_JOBS, nonce, post_jobs_body(part))
            txs.append(tx)
            for job_id, _ in posted_jobs(tx):
                ids.append(job_id)
                self.txs[job_id] = tx
        results = await self.client.submit_batch(txs)
        refused = [r for r in results if not r["accepted"]]
        if refused:
            raise RuntimeError(f"post refused: {refused[0]['error']}")
        self.nonce += len(txs)
        for job_id, inputs in zip(ids, jobs, strict=True):
            self.inputs[job_id] = inputs
        return ids

    async def paced(self, batch: list[list[Tensor]]) -> list[str]:
        """Post `batch` in chunks, each once fewer than WINDOW post txs wait uncommitted."""
        ids: list[str] = []
        for start in range(0, len(batch), CHUNK):
            while True:
                committed = await self.client.next_nonce(self.key.address)
                if self.nonce - committed < WINDOW:
                    break
                await asyncio.sleep(WINDOW_POLL_S)
            ids += await self.post(batch[start : start + CHUNK])
        return ids

    async def settle(self, ids: list[str], timeout: float = 900) -> dict[str, Any]:
        """Wait until every job settled.

        A post_job the chain does not know yet is not lost: it may still be pending (on another
        node, or behind a full block). It is submitted again as the same signed tx, which is
        harmless (`pending`/`committed`) and brings it back if a mempool dropped it. Only a
        post_job committed with a failure receipt (`bad_nonce`, when a node ordered the txs out
        of nonce order during a view change) is posted again, with a fresh nonce.
        """
        deadline = time.monotonic() + timeout
        settled: dict[str, Any] = {}
        for start in range(0, len(ids), RESULTS_MAX):  # the node answers this many at a time
            settled.update(await self._settle(list(ids[start : start + RESULTS_MAX]), deadline))
        return settled

    async def _settle(self, ids: list[str], deadline: float) -> dict[str, Any]:
        """`settle` for at most `RESULTS_MAX` jobs."""
        while time.monotonic() < deadline:
            answer = await self.client.results(ids, wait=5)
            if answer["done"]:
                bad = [j for j in answer["jobs"] if j["status"] != "settled"]
                if bad:
                    raise RuntimeError(f"{len(bad)} jobs ended {bad[0]['status']}")
                return {j["id"]: j for j in answer["jobs"]}
            unknown = [j["id"] for j in answer["jobs"] if j["status"] == "unknown"]
            failed, lost = [], []
            status: dict[str, dict[str, Any] | None] = {}  # per post tx
            for job_id in unknown:
                tx_hash = self.txs[job_id].hash
                if tx_hash not in status:
                    status[tx_hash] = await self.client.tx(tx_hash)
                found = status[tx_hash]
                if found is None:
                    lost.append(job_id)
                elif found["status"] == "committed" and not (found.get("receipt") or {}).get("ok"):
                    failed.append(job_id)
            if lost:
                await self.upload([t for j in lost for t in self.inputs[j]])
                again = list({self.txs[j].hash: self.txs[j] for j in lost}.values())
                results = await self.client.submit_batch(again)
                self.resubmitted += sum(1 for r in results if r.get("accepted"))
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


#: Rounds run before the measured ones: the first round pays for the miners' first poll, the
#: peers' first tensor push connections and cold caches (~280 ms, once).
WARMUP_ROUNDS = 2


async def _latency(net: Devnet, rounds: int) -> list[float]:
    async with NodeClient(net.urls) as client:
        status = await client.status()
        poster = Poster(client, net.client_key, status["chain_id"])
        times = []
        for i in range(WARMUP_ROUNDS + rounds):
            inputs = dense_job(10_000 + i)
            await poster.upload(inputs)  # uploads are part of posting, but not of the job round
            started = time.perf_counter()
            (job_id,) = await poster.post([inputs])
            settled = await poster.settle([job_id])
            (record,) = settled.values()
            await client.get_tensor(record["outputs"][0])
            if i >= WARMUP_ROUNDS:
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
        f"latency: job round (post -> settled with r=2 -> output read back), {rounds} rounds "
        f"after {WARMUP_ROUNDS} unmeasured: "
        f"p50 {p50:.0f} ms, p99 {p99:.0f} ms; load {load()}"
    )


# ----------------------------------------------------------------------------- 3-4. throughput


@dataclass
class FleetStats:
    """What a fleet of miners did (summed over its miners, and over processes)."""

    computed: int = 0
    lost: int = 0
    txs: int = 0
    """Txs the miners' senders got accepted (a batch tx counts once)."""
    uploads: int = 0
    """Output upload requests."""
    requests: int = 0
    """HTTP requests of the miners (all kinds)."""
    seconds_computing: float = 0.0
    cpu_s: float = 0.0
    """CPU time of the miner processes (0 when the miners ran in the bench process)."""

    def add(self, other: FleetStats) -> None:
        self.computed += other.computed
        self.lost += other.lost
        self.txs += other.txs
        self.uploads += other.uploads
        self.requests += other.requests
        self.seconds_computing += other.seconds_computing
        self.cpu_s += other.cpu_s


def _fleet(urls: list[str], indexes: list[int], workers: int, simulate_ms: int) -> list[Miner]:
    """Miners `indexes` of the fleet, each with a fresh identity, miner i first polling node
    i mod n (and failing over round the others)."""
    return [
        Miner(
            NodeClient(urls[i % len(urls) :] + urls[: i % len(urls)]),
            Keypair.generate(),
            MinerConfig(workers=workers, poll_wait_s=5, simulate_ms=simulate_ms),
        )
        for i in indexes
    ]


async def _run_fleet(fleet: list[Miner], stop: asyncio.Event) -> FleetStats:
    """Run miners until `stop`, then wind them down and sum their counters."""
    await asyncio.gather(*(m.run(stop) for m in fleet), return_exceptions=True)
    for m in fleet:
        await m.client.aclose()
    return FleetStats(
        computed=sum(m.stats.computed for m in fleet),
        lost=sum(m.stats.lost for m in fleet),
        txs=sum(m.sender.sent for m in fleet if m.sender is not None),
        uploads=sum(m.uploader.requests for m in fleet),
        requests=sum(m.client.requests for m in fleet),
        seconds_computing=sum(m.stats.seconds_computing for m in fleet),
    )


def _miner_process(
    urls: list[str], indexes: list[int], workers: int, simulate_ms: int, stop: Any, out: Any
) -> None:
    """Entry point of a miner process (multiprocessing, spawn): run miners `indexes` until the
    `stop` event is set, then put their `FleetStats` (with this process's CPU time) on `out`."""
    tune_gc()  # as `layerchain miner` does

    async def main() -> FleetStats:
        fleet = _fleet(urls, indexes, workers, simulate_ms)
        done = asyncio.Event()
        running = asyncio.create_task(_run_fleet(fleet, done))
        out.put(("ready", os.getpid()))
        while not stop.is_set():
            await asyncio.sleep(0.05)
        done.set()
        return await running

    started = time.process_time()  # imports and start-up are not the miners' work
    stats = asyncio.run(main())
    stats.cpu_s = time.process_time() - started
    out.put(("stats", stats))


class MinerProcesses:
    """The fleet split over `processes` OS processes (so one busy event loop does not stretch
    every miner's sleeps and requests), started and stopped together."""

    def __init__(
        self, urls: list[str], miners: int, workers: int, simulate_ms: int, processes: int
    ) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.stop = ctx.Event()
        self.out: Any = ctx.Queue()
        self.procs = [
            ctx.Process(
                target=_miner_process,
                args=(urls, list(range(p, miners, processes)), workers, simulate_ms),
                kwargs={"stop": self.stop, "out": self.out},
                daemon=True,
            )
            for p in range(processes)
        ]
        for proc in self.procs:
            proc.start()

    def _get(self, kind: str, timeout: float) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            try:
                got, value = self.out.get(timeout=1.0)
            except queue.Empty:
                dead = {p.pid: p.exitcode for p in self.procs if p.exitcode not in (None, 0)}
                if dead or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"miner processes: no {kind!r} (pid: exit code of the dead: {dead})"
                    ) from None
                continue
            if got == kind:
                return value

    def wait_ready(self, timeout: float = 120.0) -> None:
        for _ in self.procs:
            self._get("ready", timeout)

    def finish(self, timeout: float = 120.0) -> FleetStats:
        """Stop the miners (they finish and reveal what they started) and sum their stats."""
        self.stop.set()
        total = FleetStats()
        try:
            for _ in self.procs:
                total.add(self._get("stats", timeout))
        finally:
            for proc in self.procs:
                proc.join(timeout=10)
                if proc.is_alive():
                    proc.kill()
                    proc.join()
        return total


async def _throughput(
    net: Devnet, miners: int, workers: int, simulate_ms: int, jobs: int, processes: int = 1
) -> tuple[float, int]:
    """Post `jobs` small r = 2 jobs to a fleet of miners; (seconds until all settled, lost
    commitments). `processes` > 1 runs the miners in that many processes (round robin)."""
    stop = asyncio.Event()
    group: MinerProcesses | None = None
    running: asyncio.Task[FleetStats] | None = None
    if processes > 1:
        group = MinerProcesses(net.urls, miners, workers, simulate_ms, processes)
        await asyncio.to_thread(group.wait_ready)
    else:
        tune_gc()  # the bench process hosts the miners: as `layerchain miner` does
        running = asyncio.create_task(
            _run_fleet(_fleet(net.urls, list(range(miners)), workers, simulate_ms), stop)
        )
    try:
        async with NodeClient(net.urls) as client:
            status = await client.status()
            poster = Poster(client, net.client_key, status["chain_id"])
            batch = [dense_job(i, rows=4, k=8, n=4) for i in range(jobs)]
            # Upload first: measure the chain, not the uploads.
            await poster.upload([t for inputs in batch for t in inputs])
            await asyncio.sleep(1.0)  # miners polling
            started = time.perf_counter()
            cpu_before = _cpu_seconds(net.processes.pids()), time.process_time()
            ids = await poster.paced(batch)
            await poster.settle(ids)
            elapsed = time.perf_counter() - started
            cpu_after = _cpu_seconds(net.processes.pids()), time.process_time()
            if poster.reposted or poster.resubmitted:
                print(
                    f"  ({poster.reposted} post_jobs failed with bad_nonce and were posted "
                    f"again; {poster.resubmitted} unknown ones were submitted again)"
                )
    finally:
        stop.set()
        if group is not None:
            stats = await asyncio.to_thread(group.finish)
        else:
            assert running is not None
            stats = await running
    busy = stats.seconds_computing / (miners * workers * elapsed)
    per = max(1, stats.computed)
    where = (
        f"{processes} miner processes, {stats.cpu_s:.1f} s CPU"
        if processes > 1
        else "miners in the bench process"
    )
    print(
        f"  (miners computed {busy:.0%} of the time; {stats.computed} computations for {jobs} "
        f"jobs; per computation {stats.requests / per:.2f} requests, {stats.txs / per:.2f} txs, "
        f"{stats.uploads / per:.2f} uploads; {where})"
    )
    nodes_s = cpu_after[0] - cpu_before[0]
    bench_s = cpu_after[1] - cpu_before[1]
    print(
        f"  (CPU while posting and settling, per settled job: "
        f"validators {1000 * nodes_s / jobs:.2f} ms, bench process {1000 * bench_s / jobs:.2f} ms; "
        f"{(nodes_s + bench_s) / elapsed:.2f} cores busy without the miner processes)"
    )
    return elapsed, stats.lost


def _cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds of these processes so far (Linux `/proc`; 0 elsewhere)."""
    total = 0.0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def bench_scaling(root: Path, miners: int = 16, jobs: int = 1600, processes: int = 4) -> None:
    net = start_devnet(root / "scaling", miners=0, params=DEVNET_PARAMS)
    try:
        elapsed, wasted = asyncio.run(_throughput(net, miners, 1, 100, jobs, processes))
    finally:
        net.processes.close()
    ideal = miners / (0.1 * 2)
    achieved = jobs / elapsed
    print(
        f"scaling: {miners} simulated miners in {max(1, processes)} process(es) (100 ms per job, "
        f"1 job each at a time), {jobs} jobs, "
        f"r=2: {achieved:.1f} settled jobs/s vs ideal {ideal:.0f} -> efficiency "
        f"{achieved / ideal:.0%}; {wasted} commitments lost the race; load {load()}"
    )


def bench_saturation(root: Path, miners: int = 8, jobs: int = 2000, processes: int = 1) -> None:
    net = start_devnet(root / "saturation", miners=0, params=DEVNET_PARAMS)
    try:
        elapsed, wasted = asyncio.run(_throughput(net, miners, 4, 0, jobs, processes))
    finally:
        net.processes.close()
    where = "in-process miners" if processes <= 1 else f"miners in {processes} processes"
    print(
        f"saturation: {jobs} small dense jobs (4x8 @ 8x4), r=2, {miners} {where}: "
        f"{jobs / elapsed:.0f} settled jobs/s ({elapsed:.1f} s); {wasted} lost commitments; "
        f"load {load()}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip", default="", help="comma-separated: epoch,latency,scaling,...")
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--jobs", type=int, default=2000, help="saturation batch size")
    parser.add_argument("--scaling-jobs", type=int, default=1600, help="scaling batch size")
    parser.add_argument(
        "--scaling-processes", type=int, default=4, help="processes the 16 scaling miners run in"
    )
    parser.add_argument(
        "--saturation-processes",
        type=int,
        default=1,
        help="processes the saturation miners run in (1: the bench process)",
    )
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
            bench_scaling(root, jobs=args.scaling_jobs, processes=args.scaling_processes)
        if "saturation" not in skip:
            bench_saturation(root, jobs=args.jobs, processes=args.saturation_processes)


if __name__ == "__main__":
    main()
