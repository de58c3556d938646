"""The miner against a real (in-process, one-validator) node: compute, commit, reveal, get paid."""

from __future__ import annotations

import asyncio
import base64
import json
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from inprocess_chain import BASE, InProcessChain, in_process_chain

from ledger import kernels
from ledger.identity import Keypair
from ledger.tensor import Tensor
from ledger.transactions import POST_JOB, post_job_body, tensor_input
from miner.client import NodeClient
from miner.txsender import TxSender
from miner.worker import PREFETCH_MAX, PREFETCH_MIN, Miner, MinerConfig, MinerStats, _Committed


def _dense_inputs(seed: int) -> list[Tensor]:
    rng = np.random.default_rng(seed)
    x = Tensor(rng.integers(-4096, 4096, size=(4, 6), dtype=np.int64), 12)
    w = Tensor(rng.integers(-(1 << 18), 1 << 18, size=(6, 3), dtype=np.int64), 20)
    b = Tensor(rng.integers(-(1 << 18), 1 << 18, size=(3,), dtype=np.int64), 20)
    return [x, w, b]


async def _post_jobs(
    chain: InProcessChain, client: NodeClient, count: int, replication: int
) -> tuple[list[str], list[list[str]]]:
    """Post `count` dense_forward jobs; return their ids and the honest output hashes."""
    sender = TxSender(client, chain.client_key, chain.node.genesis.chain_id)
    params: dict[str, Any] = {"act": "relu", "out_frac": 12}
    ids, expected = [], []
    for seed in range(count):
        inputs = _dense_inputs(seed)
        for t in inputs:
            await client.put_tensor(t)
        body = post_job_body(
            op="dense_forward",
            kernel_version=kernels.KERNEL_VERSION,
            inputs=[tensor_input(t) for t in inputs],
            params=params,
            replication=replication,
            reward=10,
            deadline=1000,
        )
        tx = await sender.send(POST_JOB, body)
        ids.append(tx.hash)
        expected.append([t.hash for t in kernels.execute("dense_forward", params, inputs)])
    await sender.stop()
    return ids, expected


async def _wait_settled(client: NodeClient, ids: list[str]) -> dict[str, Any]:
    for _ in range(40):
        answer = await client.results(ids, wait=2.0)
        if answer["done"]:
            return {j["id"]: j for j in answer["jobs"]}
    raise AssertionError("jobs did not settle")


async def _run_miners(
    chain: InProcessChain,
    configs: list[MinerConfig],
    count: int,
    replication: int,
    transport: httpx.AsyncBaseTransport | None = None,
) -> tuple[list[str], list[list[str]], dict[str, Any], list[MinerStats], dict[str, Any]]:
    """Run miners (through `transport`, the node's own by default) until `count` jobs settle."""
    client = NodeClient([BASE], transport=chain.transport)
    stop = asyncio.Event()
    miners = [
        Miner(
            NodeClient([BASE], transport=transport or chain.transport), chain.miner_keys[i], config
        )
        for i, config in enumerate(configs)
    ]
    tasks = [asyncio.create_task(m.run(stop)) for m in miners]
    ids, expected = await _post_jobs(chain, client, count, replication)
    settled = await _wait_settled(client, ids)
    stop.set()
    stats = await asyncio.gather(*tasks)
    accounts = {m.address: await client.account(m.address) for m in miners}
    for m in miners:
        await m.client.aclose()
    await client.aclose()
    return ids, expected, settled, list(stats), accounts


def test_two_honest_miners_settle_jobs_by_agreement_and_are_paid(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with in_process_chain(tmp_path) as chain:
            ids, expected, settled, stats, accounts = await _run_miners(
                chain, [MinerConfig(workers=2, poll_wait_s=1), MinerConfig(poll_wait_s=1)], 4, 2
            )
            for job_id, outputs in zip(ids, expected, strict=True):
                assert settled[job_id]["status"] == "settled"
                assert settled[job_id]["outputs"] == outputs
            for s in stats:
                assert s.revealed + s.lost == s.committed
                assert s.abandoned == 0
            for account in accounts.values():
                assert account["miner"]["accepted"] == 4
                assert account["miner"]["rejected"] == 0
                assert account["miner"]["earned"] == 4 * 5

    asyncio.run(scenario())


def test_replication_one_is_submitted_directly(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with in_process_chain(tmp_path) as chain:
            ids, expected, settled, stats, accounts = await _run_miners(
                chain, [MinerConfig(poll_wait_s=1)], 3, 1
            )
            assert [settled[i]["outputs"] for i in ids] == expected
            assert stats[0].submitted == 3 and stats[0].committed == 0
            (account,) = accounts.values()
            assert account["miner"]["earned"] == 30

    asyncio.run(scenario())


def test_a_lying_miner_is_slashed_and_its_result_never_settles(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with in_process_chain(tmp_path) as chain:
            ids, expected, settled, _, accounts = await _run_miners(
                chain,
                [MinerConfig(poll_wait_s=1), MinerConfig(poll_wait_s=1, byzantine="lie")],
                3,
                2,
            )
            assert [settled[i]["outputs"] for i in ids] == expected
            honest, liar = (accounts[k.address] for k in chain.miner_keys[:2])
            assert liar["miner"]["rejected"] == 3 and liar["miner"]["earned"] == 0
            assert liar["miner"]["slashed"] > 0
            assert honest["miner"]["accepted"] == 3 and honest["miner"]["rejected"] == 0

    asyncio.run(scenario())


def test_stopping_finishes_started_jobs_and_reveals_what_was_committed(tmp_path: Path) -> None:
    """Stop one miner as soon as it has committed: it must still reveal (never `missed`)."""

    async def scenario() -> None:
        async with in_process_chain(tmp_path) as chain:
            client = NodeClient([BASE], transport=chain.transport)
            stop_a, stop_b = asyncio.Event(), asyncio.Event()
            a = Miner(
                NodeClient([BASE], transport=chain.transport),
                chain.miner_keys[0],
                MinerConfig(poll_wait_s=1, grace_s=20),
            )
            others = [  # two more miners, so every job still finds two committers
                Miner(
                    NodeClient([BASE], transport=chain.transport),
                    chain.miner_keys[i],
                    MinerConfig(poll_wait_s=1),
                )
                for i in (1, 2)
            ]
            task_a = asyncio.create_task(a.run(stop_a))
            task_b = [asyncio.create_task(m.run(stop_b)) for m in others]
            # 12 jobs: each is assigned to 2 of the 3 miners, so `a` surely gets some.
            ids, expected = await _post_jobs(chain, client, 12, 2)
            while a.stats.committed == 0:
                await asyncio.sleep(0.005)
            stop_a.set()
            stats_a = await task_a
            settled = await _wait_settled(client, ids)
            stop_b.set()
            await asyncio.gather(*task_b)
            assert [settled[i]["outputs"] for i in ids] == expected
            assert stats_a.abandoned == 0
            assert stats_a.revealed + stats_a.lost == stats_a.committed >= 1
            record = (await client.account(a.address))["miner"]
            assert record["missed"] == 0 and record["rejected"] == 0
            assert record["accepted"] == stats_a.revealed
            for m in (a, *others):
                await m.client.aclose()
            await client.aclose()

    asyncio.run(scenario())


class _Watching(httpx.AsyncBaseTransport):
    """The node's transport, counting requests by method and path; with `lie`, a node that sends
    every inline tensor of `GET /work` with its content changed (+1 in its first element)."""

    def __init__(self, inner: httpx.AsyncBaseTransport, lie: bool = False) -> None:
        self.inner = inner
        self.lie = lie
        self.paths: Counter[str] = Counter()
        self.limits: list[int] = []
        """The `limit` of each `GET /work` asking for jobs, in order."""
        self.lies = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.paths[f"{request.method} {request.url.path}"] += 1
        limit = int(request.url.params.get("limit", 0))
        if request.url.path == "/api/v1/work" and limit:
            self.limits.append(limit)
        response = await self.inner.handle_async_request(request)
        if not self.lie or request.url.path != "/api/v1/work" or response.status_code != 200:
            return response
        body = json.loads(await response.aread())
        for tensor_hash, encoded in body["tensors"].items():
            tensor = Tensor.from_bytes(base64.b64decode(encoded))
            data = np.array(tensor.data, copy=True)
            data.flat[0] += 1
            wrong = Tensor(data, tensor.frac_bits).to_bytes()
            body["tensors"][tensor_hash] = base64.b64encode(wrong).decode()
            self.lies += 1
        return httpx.Response(200, json=body)


def test_miners_compute_from_the_inputs_inlined_in_their_work_without_downloading(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        async with in_process_chain(tmp_path) as chain:
            watching = _Watching(chain.transport)
            ids, expected, settled, stats, _ = await _run_miners(
                chain, [MinerConfig(poll_wait_s=1), MinerConfig(poll_wait_s=1)], 4, 2, watching
            )
            assert [settled[i]["outputs"] for i in ids] == expected
            assert sum(s.computed for s in stats) >= 8
            assert watching.paths["GET /api/v1/work"] > 0
            downloads = [p for p in watching.paths if p.startswith("GET /api/v1/work/tensors")]
            downloads += [p for p in watching.paths if p.startswith("GET /api/v1/tensors/")]
            assert downloads == [], watching.paths

    asyncio.run(scenario())


def test_miners_refuse_inline_inputs_that_do_not_match_their_hash_and_download_them(
    tmp_path: Path,
) -> None:
    """A lying node changes every inline tensor: the miners compute from the downloaded, true
    inputs, so the honest outputs settle and no miner is rejected."""

    async def scenario() -> None:
        async with in_process_chain(tmp_path) as chain:
            lying = _Watching(chain.transport, lie=True)
            ids, expected, settled, _, accounts = await _run_miners(
                chain, [MinerConfig(poll_wait_s=1), MinerConfig(poll_wait_s=1)], 4, 2, lying
            )
            assert lying.lies > 0 and lying.paths["GET /api/v1/work/tensors"] > 0
            assert [settled[i]["outputs"] for i in ids] == expected
            for account in accounts.values():
                assert account["miner"]["rejected"] == 0 and account["miner"]["accepted"] == 4

    asyncio.run(scenario())


def test_a_commitment_that_never_reached_the_chain_is_forgotten_and_the_job_taken_again(
    tmp_path: Path,
) -> None:
    """A commit tx can be accepted by a node and still never be ordered (lost with the node, or
    a twin of it took its nonce). The miner must not hold such a job for ever: while the job is
    open and the chain lists no commitment of this miner, the job is forgotten (and counted as
    lost), so the next offer of it is taken and computed again."""

    async def scenario() -> None:
        async with in_process_chain(tmp_path) as chain:
            client = NodeClient([BASE], transport=chain.transport)
            (job_id,), _ = await _post_jobs(chain, client, 1, 2)
            miner = Miner(
                NodeClient([BASE], transport=chain.transport),
                chain.miner_keys[0],
                MinerConfig(poll_wait_s=1),
            )
            miner._taken.add(job_id)
            miner._committed[job_id] = _Committed(["ab" * 32], "cd" * 32, [], at=-1e9)
            for _ in range(200):  # until the post is in a block
                if (await client.tx(job_id) or {}).get("status") == "committed":
                    break
                await asyncio.sleep(0.02)
            assert (await client.job(job_id))["status"] == "open"
            await miner._prune(min_age_s=0.0)
            assert job_id not in miner._taken and job_id not in miner._committed
            assert miner.stats.lost == 1
            work = await miner.client.work(miner.address, 0, -1, limit=4)
            assert job_id in [j["id"] for j in work["commit"]]  # offered again: it can be taken
            await miner.client.aclose()
            await client.aclose()

    asyncio.run(scenario())


def test_quick_jobs_deepen_the_prefetch_and_slow_ones_keep_it_short(tmp_path: Path) -> None:
    """A miner asks for its free workers plus a prefetch sized to a poll's round trip of
    computing: tiny jobs (microseconds) are asked for many at a time, so a burst costs one
    poll, one upload and one commitment tx instead of one each per few jobs; jobs that take
    50 ms keep it at the minimum, so they stay stealable by idle miners."""

    async def scenario(simulate_ms: int) -> list[int]:
        async with in_process_chain(tmp_path / str(simulate_ms)) as chain:
            watching = _Watching(chain.transport)
            config = MinerConfig(workers=1, poll_wait_s=1, simulate_ms=simulate_ms)
            ids, expected, settled, _, _ = await _run_miners(chain, [config], 3, 1, watching)
            assert [settled[i]["outputs"] for i in ids] == expected
            return watching.limits

    quick = asyncio.run(scenario(0))
    assert quick[0] == 1 + PREFETCH_MIN  # nothing timed yet
    # A limit also counts the jobs taken and not committed yet (at most one here).
    assert max(quick) > 2 + PREFETCH_MIN, quick
    slow = asyncio.run(scenario(50))
    assert max(slow) <= 2 + PREFETCH_MIN, slow

    miner = Miner(NodeClient([BASE]), Keypair.generate(), MinerConfig(workers=4))
    for job_s, prefetch in [(None, PREFETCH_MIN), (0.1, PREFETCH_MIN), (1e-6, PREFETCH_MAX)]:
        miner._job_s = job_s
        assert miner._prefetch() == prefetch
    miner._job_s = 0.002  # 4 workers x 20 ms / 2 ms
    assert miner._prefetch() == 40
