"""Benchmark: server time of every explorer page on a 10,000-block ledger.

    .venv/bin/python bench/explorer.py [--blocks 10000] [--requests 60]

Builds a ledger with `ledger.harness.ChainHarness` (real signed txs, the production state machine
and store, real certificates): every block holds a transfer and one stage of a pipelined job
lifecycle (post, two commits, two reveals: about 6 txs per block, one job per block), and every
100th block a checkpoint of a training run. Then it serves that ledger with the real app
(`api.main.create_app` around a `Node`; consensus not running) in process through
`httpx.ASGITransport`, so the time measured is the server's: routing, queries, checks, template
rendering. Each page is requested `--requests` times (after warm-up) on targets spread over the
whole chain, and p50 / p99 are printed. The target is p50 <= 50 ms per page.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

# Keep this file's directory off the import path (bench/ holds modules named like packages).
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path.pop(0)

from api.core.config import load_settings  # noqa: E402
from api.main import create_app  # noqa: E402
from api.testing import free_ports  # noqa: E402
from ledger import kernels  # noqa: E402
from ledger.genesis import Genesis, Params, Validator  # noqa: E402
from ledger.harness import ChainHarness, actor_key, validator_keys_for  # noqa: E402
from ledger.tensor import Tensor  # noqa: E402
from ledger.transactions import Tx, tensor_input  # noqa: E402

RUN = "bench-run"
ACCOUNTS = [f"acct-{i}" for i in range(20)]
MINERS = [f"miner-{i}" for i in range(6)]


def build(root: Path, n_blocks: int) -> tuple[ChainHarness, dict[str, list[str]]]:
    """The ledger under `root`; returns the harness and sample ids (txs, jobs, miners)."""
    ports = free_ports(4)
    keys = validator_keys_for(4)
    names = ["client", *ACCOUNTS, *MINERS]
    genesis = Genesis(
        chain_id="layerchain-bench",
        validators=tuple(
            Validator(k.address, f"node{i}", f"http://127.0.0.1:{p}")
            for i, (k, p) in enumerate(zip(keys, ports, strict=True))
        ),
        params=Params(commit_blocks=5, reveal_blocks=5),
        balances={actor_key(n).address: 10**12 for n in names},
        genesis_time_ms=1_760_000_000_000,
    )
    c = ChainHarness(
        genesis=genesis, validator_keys=keys, tensor_dir=root / "tensors", db_url=str(root / "db")
    )
    x = Tensor(np.arange(12, dtype=np.int64).reshape(4, 3), 8)
    w = Tensor(np.arange(6, dtype=np.int64).reshape(3, 2), 8)
    b = Tensor(np.arange(2, dtype=np.int64), 16)
    for t in (x, w, b):
        c.put_tensor(t)
    inputs = [tensor_input(x), tensor_input(w), tensor_input(b)]
    params = {"act": "relu", "out_frac": 8}
    outputs = [c.put_tensor(t) for t in kernels.execute("dense_forward", params, [x, w, b])]
    posted: list[str] = []
    samples: dict[str, list[str]] = {"txs": [], "jobs": [], "miners": []}
    started = time.perf_counter()
    for i in range(1, n_blocks + 1):
        txs: list[Tx] = [c.transfer(ACCOUNTS[i % 20], ACCOUNTS[(i * 7 + 1) % 20], 1)]
        if len(posted) >= 2:  # reveals for the job posted two blocks ago
            job = posted[-2]
            txs += [c.reveal(m, job, outputs) for m in _miners_of(len(posted) - 2)]
        if posted:  # commits for the job posted in the previous block
            job = posted[-1]
            txs += [c.commit(m, job, outputs) for m in _miners_of(len(posted) - 1)]
        post = c.post_job(
            "client",
            op="dense_forward",
            inputs=inputs,
            params=params,
            run=RUN,
            label=f"layer1/batch{i}",
        )
        txs.append(post)
        if i % 100 == 0:
            epoch = i // 100 - 1
            model = hashlib.sha256(f"model-{epoch}".encode()).hexdigest()
            loss, acc = 2_300_000 * 100 // (100 + 4 * epoch), min(990_000, 100_000 + 9_000 * epoch)
            txs.append(
                c.checkpoint("client", RUN, epoch, model, {"loss_ppm": loss, "accuracy_ppm": acc})
            )
        c.commit_block(txs)
        posted.append(post.hash)
        if i % 1000 == 0:
            rate = i / (time.perf_counter() - started)
            print(f"  built {i} blocks ({rate:,.0f} blocks/s)", flush=True)
    # Empty the pipeline so the last jobs settle too.
    c.commit_block(
        [c.reveal(m, posted[-2], outputs) for m in _miners_of(len(posted) - 2)]
        + [c.commit(m, posted[-1], outputs) for m in _miners_of(len(posted) - 1)]
    )
    c.commit_block([c.reveal(m, posted[-1], outputs) for m in _miners_of(len(posted) - 1)])
    rng = random.Random(7)
    samples["jobs"] = rng.sample(posted, 50)
    samples["txs"] = [r.receipts[0].tx_hash for r in rng.sample(c.results, 50)]
    samples["miners"] = [c.address(m) for m in MINERS]
    assert c.store is not None
    c.store.close()
    return c, samples


def _miners_of(job_index: int) -> list[str]:
    return [MINERS[job_index % 6], MINERS[(job_index + 1) % 6]]


def node_home(root: Path, c: ChainHarness) -> Path:
    home = root / "node0"
    home.mkdir(parents=True, exist_ok=True)
    c.genesis.save(home / "genesis.json")
    c.validator_keys[0].save(home / "node_key.pem")
    (home / "config.toml").write_text(
        f'name = "node0"\nport = {free_ports(1)[0]}\n'
        f'database_url = "sqlite:///{root / "db"}"\ntensor_dir = "{root / "tensors"}"\n'
    )
    return home


def pages(height: int, samples: dict[str, list[str]], rng: random.Random) -> dict[str, list[str]]:
    """Page name -> the URLs to request (targets spread over the chain)."""
    heights = [rng.randint(1, height) for _ in range(50)]
    return {
        "home /": ["/"],
        "blocks /blocks": ["/blocks"],
        "blocks, older page": [f"/blocks?before={h}" for h in heights],
        "block /blocks/{h}": [f"/blocks/{h}" for h in heights],
        "tx /txs/{hash}": [f"/txs/{t}" for t in samples["txs"]],
        "jobs /jobs": ["/jobs"],
        "job /jobs/{id}": [f"/jobs/{j}" for j in samples["jobs"]],
        "miner /accounts/{a}": [f"/accounts/{m}" for m in samples["miners"]],
        "validators": ["/validators"],
        "runs": ["/runs"],
        "run /runs/{name}": [f"/runs/{RUN}"],
        "search (height)": [f"/search?q={h}" for h in heights],
        "search (job id)": [f"/search?q={j}" for j in samples["jobs"]],
        "verify (form)": ["/verify"],
        "JSON /api/v1/stats/overview": ["/api/v1/stats/overview"],
        "JSON /api/v1/certificates/{h}": [f"/api/v1/certificates/{h}" for h in heights],
    }


async def measure(home: Path, height: int, samples: dict[str, list[str]], n: int) -> None:
    app = create_app(load_settings(home))
    transport = httpx.ASGITransport(app=app)
    rng = random.Random(11)
    async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
        started = time.perf_counter()
        first = await client.get("/validators")
        assert first.status_code == 200
        print(
            f"\nfirst /validators (counts all {height} certificates once): "
            f"{(time.perf_counter() - started) * 1000:.1f} ms\n"
        )
        print(f"{'page':<32} {'p50 ms':>8} {'p99 ms':>8} {'KiB':>6}")
        for name, urls in pages(height, samples, rng).items():
            for url in urls[:3]:  # warm-up
                await client.get(url)
            times, size = [], 0
            for i in range(n):
                url = urls[i % len(urls)]
                t0 = time.perf_counter()
                response = await client.get(url)
                times.append((time.perf_counter() - t0) * 1000)
                assert response.status_code in (200, 303), (url, response.status_code)
                size = len(response.content)
            times.sort()
            p99 = times[min(len(times) - 1, int(len(times) * 0.99))]
            print(f"{name:<32} {statistics.median(times):>8.1f} {p99:>8.1f} {size / 1024:>6.1f}")
        for label, params in (
            ("verify last 100 blocks", {"from": height - 99, "to": height}),
            ("verify whole chain", {"from": 1, "to": height}),
        ):
            t0 = time.perf_counter()
            report = (await client.get("/api/v1/verify", params=params)).json()
            took = time.perf_counter() - t0
            assert report["ok"], report
            print(
                f"{label:<32} {took:>8.2f} s  ({report['replayed']:,} blocks replayed, "
                f"{report['txs']:,} txs checked)"
            )
    app.state.node.chain.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--blocks", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=60, help="requests per page")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        print(f"building a {args.blocks:,}-block ledger with ledger.harness ...", flush=True)
        t0 = time.perf_counter()
        c, samples = build(root, args.blocks)
        print(
            f"built {c.height:,} blocks, {sum(len(r.receipts) for r in c.results):,} txs, "
            f"{len(c.state.jobs):,} jobs in {time.perf_counter() - t0:.0f} s; "
            f"db {(root / 'db').stat().st_size / 2**20:.0f} MiB"
        )
        asyncio.run(measure(node_home(root, c), c.height, samples, args.requests))


if __name__ == "__main__":
    main()
