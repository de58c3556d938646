"""Validator network benchmark: 4 `layerchain node` processes on loopback and a load generator.

    python -m bench.consensus [--txs 20000] [--batch 500] [--clients 8] [--latency-samples 200]

1. **Saturation**: signed transfers from many senders (each sender's nonces in order), submitted
   in batches (POST /api/v1/txs/batch) round-robin to all four nodes by several concurrent
   clients; committed txs/s = txs / (time from the first submit until every node has committed
   them all).
2. **Light load**: one tx at a time to a rotating node; commit latency = submit until the block
   holding it arrives on that node's server-sent event stream; p50 / p99.

Signing happens before the clock starts (it is the clients' cost, not the network's).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import httpx

from api.p2p.transport import nodelay_transport
from api.testing import LocalTestnet
from bench import consensus_trace
from ledger.genesis import Params
from ledger.identity import Keypair
from ledger.transactions import TRANSFER, sign_tx, transfer_body

#: Light load: how long to wait for a block event before calling the network stalled.
STALL_S = 30.0


def make_txs(net: LocalTestnet, count: int, senders: list[Keypair]) -> list[dict]:
    """`count` transfers spread over `senders`, nonces from 0, interleaved by sender."""
    chain = net.genesis.chain_id
    to = "ab" * 32
    per = -(-count // len(senders))
    txs: list[dict] = []
    for nonce in range(per):
        for key in senders:
            if len(txs) < count:
                txs.append(sign_tx(key, chain, TRANSFER, nonce, transfer_body(to, 1)).to_dict())
    return txs


def fund(net: LocalTestnet, senders: list[Keypair]) -> None:
    """Give each sender credits from the client key (one block), and wait for it."""
    chain = net.genesis.chain_id
    txs = [
        sign_tx(net.client, chain, TRANSFER, i, transfer_body(k.address, 10**9)).to_dict()
        for i, k in enumerate(senders)
    ]
    httpx.post(f"{net.url(0)}/api/v1/txs/batch", json={"txs": txs}, timeout=30).raise_for_status()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        nonce = httpx.get(f"{net.url(0)}/api/v1/accounts/{net.client.address}").json()["nonce"]
        if nonce >= len(senders):
            return
        time.sleep(0.1)
    raise TimeoutError("funding did not commit")


async def saturation(net: LocalTestnet, txs: list[dict], batch: int, clients: int) -> dict:
    batches = [txs[i : i + batch] for i in range(0, len(txs), batch)]
    queue: asyncio.Queue[tuple[int, list[dict]]] = asyncio.Queue()
    for i, item in enumerate(batches):
        queue.put_nowait((i, item))
    start_heights = [net.height(i) for i in range(net.n)]
    committed_before = await committed_txs(net)

    async def client(worker: int) -> None:
        async with httpx.AsyncClient(timeout=60, transport=nodelay_transport()) as http:
            while not queue.empty():
                i, item = queue.get_nowait()
                node = i % net.n
                while True:
                    response = await http.post(
                        f"{net.url(node)}/api/v1/txs/batch", json={"txs": item}
                    )
                    if response.status_code != 503:  # 503: the node's backlog is full
                        break
                    await asyncio.sleep(0.05)
                response.raise_for_status()

    started = time.perf_counter()
    await asyncio.gather(*(client(w) for w in range(clients)))
    submitted = time.perf_counter() - started
    target = committed_before + len(txs)
    while True:
        counts = await committed_txs(net)
        if counts >= target:
            break
        if time.perf_counter() - started > 600:
            raise TimeoutError(f"only {counts - committed_before} of {len(txs)} committed")
        await asyncio.sleep(0.05)
    elapsed = time.perf_counter() - started
    blocks = min(net.height(i) for i in range(net.n)) - min(start_heights)
    return {
        "txs": len(txs),
        "seconds": elapsed,
        "submit_seconds": submitted,
        "txs_per_s": len(txs) / elapsed,
        "blocks": blocks,
        "txs_per_block": len(txs) / max(blocks, 1),
    }


async def committed_txs(net: LocalTestnet) -> int:
    """Fewest committed txs over all nodes (from their Prometheus counters)."""
    counts = []
    async with httpx.AsyncClient(timeout=10) as http:
        for i in range(net.n):
            text = (await http.get(f"{net.url(i)}/metrics")).text
            for line in text.splitlines():
                if line.startswith("layerchain_txs_committed_total "):
                    counts.append(int(float(line.split()[1])))
    return min(counts) if len(counts) == net.n else 0


async def light_load(
    net: LocalTestnet, samples: int, key: Keypair, record: list[tuple] | None = None
) -> dict:
    chain = net.genesis.chain_id
    nonce = httpx.get(f"{net.url(0)}/api/v1/accounts/{key.address}").json()["nonce"]
    txs = [
        sign_tx(key, chain, TRANSFER, nonce + i, transfer_body("cd" * 32, 1)).to_dict()
        for i in range(samples)
    ]
    latencies = []
    async with httpx.AsyncClient(timeout=30, transport=nodelay_transport()) as http:
        streams = [
            http.stream("GET", f"{net.url(i)}/api/v1/events", timeout=None) for i in range(net.n)
        ]
        responses = [await s.__aenter__() for s in streams]
        lines = [r.aiter_lines() for r in responses]
        for i in range(net.n):  # the stream opens with a "head" event
            while not (await lines[i].__anext__()).startswith("data:"):
                pass

        async def next_block(i: int, with_txs: bool) -> None:
            while True:
                line = await lines[i].__anext__()
                if line.startswith("data:") and (not with_txs or json.loads(line[5:])["n_txs"]):
                    return

        for n, tx in enumerate(txs):
            node = n % net.n
            started = time.perf_counter()
            started_ns = time.monotonic_ns()
            response = await http.post(f"{net.url(node)}/api/v1/txs", json=tx)
            response.raise_for_status()
            # A bounded wait, so a tx that never commits is reported rather than hanging here.
            try:
                await asyncio.wait_for(next_block(node, True), STALL_S)
                latencies.append(time.perf_counter() - started)
                if record is not None:
                    tx_hash = response.json()["tx_hash"]
                    record.append((node, tx_hash, started_ns, time.monotonic_ns()))
                # Drain the other nodes' streams so they do not fall behind.
                for other in range(net.n):
                    if other != node:
                        await asyncio.wait_for(next_block(other, False), STALL_S)
            except TimeoutError:
                raise TimeoutError(
                    f"light load: tx {n} ({response.json()['tx_hash'][:16]}…) sent to node{node}: "
                    f"no block event within {STALL_S} s; see the nodes' logs (--keep DIR)"
                ) from None
        for s in streams:
            await s.__aexit__(None, None, None)
    latencies.sort()
    return {
        "samples": samples,
        "p50_ms": 1000 * statistics.median(latencies),
        "p99_ms": 1000 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))],
        "mean_ms": 1000 * statistics.fmean(latencies),
    }


def node_env(args: argparse.Namespace) -> dict[str, str]:
    env = {}
    if args.no_fsync:
        env["LAYERCHAIN_FSYNC"] = "false"
    if args.view_timeout_ms:
        env["LAYERCHAIN_VIEW_TIMEOUT_MS"] = str(args.view_timeout_ms)
    return env


def nodes_cpu_s(net: LocalTestnet) -> float:
    """CPU seconds (user + system) the running validator processes have used so far."""
    total = 0
    for proc in net.procs.values():
        fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return total / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--txs", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--senders", type=int, default=50)
    parser.add_argument("--latency-samples", type=int, default=200)
    parser.add_argument(
        "--max-block-txs", type=int, default=2000, help="Genesis max_block_txs of the testnet."
    )
    parser.add_argument(
        "--no-fsync", action="store_true", help="UNSAFE mode: nodes skip fsync (see Settings)."
    )
    parser.add_argument(
        "--view-timeout-ms",
        type=int,
        help="The nodes' base view timeout (default: the node's); small values provoke view "
        "changes under load.",
    )
    parser.add_argument("--keep", type=Path, help="Write the testnet here and keep it (logs).")
    parser.add_argument("--profile", type=Path, help="cProfile node0 (the primary) into FILE.")
    parser.add_argument(
        "--trace",
        action="store_true",
        help="Nodes write LAYERCHAIN_TRACE files; print where light-load latency goes.",
    )
    args = parser.parse_args()
    if args.profile is not None:
        args.profile = args.profile.resolve()
    with (
        tempfile.TemporaryDirectory() as tmp,
        LocalTestnet(
            args.keep or Path(tmp),
            validators=4,
            miners=1,
            params=Params(max_block_txs=args.max_block_txs),
            env=node_env(args),
        ) as net,
    ):
        traces = [net.home(i) / "trace.log" for i in range(net.n)]
        for i in range(net.n):
            env = {"LAYERCHAIN_TRACE": str(traces[i])} if args.trace else {}
            if args.profile is not None and i == 0:
                env["LAYERCHAIN_PROFILE"] = str(args.profile)
            net.start(i, extra_env=env)
        net.wait_healthy(timeout=60)
        senders = [Keypair.generate() for _ in range(args.senders)]
        fund(net, senders)
        t0 = time.perf_counter()
        txs = make_txs(net, args.txs, senders)
        print(f"signed {len(txs)} txs in {time.perf_counter() - t0:.1f} s (not timed below)")
        sat = asyncio.run(saturation(net, txs, args.batch, args.clients))
        succeeded = sum(
            httpx.get(f"{net.url(0)}/api/v1/accounts/{k.address}").json()["nonce"] for k in senders
        )
        print(
            f"saturation: {sat['txs']} txs committed on all 4 nodes in {sat['seconds']:.2f} s "
            f"= {sat['txs_per_s']:,.0f} txs/s ({sat['blocks']} blocks, "
            f"{sat['txs_per_block']:.0f} txs/block; submission took {sat['submit_seconds']:.2f} s; "
            f"{len(txs) - succeeded} failed receipts)"
        )
        record: list[tuple] = []
        cpu_before = nodes_cpu_s(net)
        lat = asyncio.run(light_load(net, args.latency_samples, net.miners[0], record))
        cpu_per_tx = 1000 * (nodes_cpu_s(net) - cpu_before) / args.latency_samples
        print(
            f"light load: commit latency p50 {lat['p50_ms']:.1f} ms, p99 {lat['p99_ms']:.1f} ms, "
            f"mean {lat['mean_ms']:.1f} ms over {lat['samples']} txs (submit -> block event); "
            f"the four nodes used {cpu_per_tx:.1f} ms of CPU per tx"
        )
        if args.trace:
            consensus_trace.report(traces, record)
        if args.profile:
            net.stop(0)  # SIGTERM: a clean exit writes the profile


if __name__ == "__main__":
    main()
