"""Merging a miner's queued result txs into batches keeps order, limits and every item."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ledger.errors import InvalidTransaction
from ledger.genesis import Params
from ledger.harness import actor_key
from ledger.transactions import (
    COMMIT_RESULT,
    COMMIT_RESULTS,
    MAX_BATCH_RESULTS,
    REVEAL_RESULT,
    REVEAL_RESULTS,
    TRANSFER,
    check_tx,
    commit_body,
    reveal_body,
    sign_tx,
)
from miner.merging import merge

MINER = actor_key("miner")


def _commit(i: int) -> tuple[str, dict, int]:
    return COMMIT_RESULT, commit_body(f"{i:064x}", MINER.address, [f"{i + 1:064x}"], "ab" * 32), i


def _reveal(i: int, outputs: int = 1) -> tuple[str, dict, int]:
    body = reveal_body(f"{i:064x}", [f"{i + k:064x}" for k in range(outputs)], "ab" * 32)
    return REVEAL_RESULT, body, i


def test_runs_become_batches_in_order() -> None:
    items = [
        _commit(0),
        _commit(1),
        _reveal(7),
        _reveal(8),
        (TRANSFER, {"to": "cd" * 32, "amount": 1}, 99),
        _commit(2),
    ]
    merged = merge(items)
    assert [m.tx_type for m in merged] == [COMMIT_RESULTS, REVEAL_RESULTS, TRANSFER, COMMIT_RESULT]
    assert [m.tags for m in merged] == [[0, 1], [7, 8], [99], [2]]
    assert [c["job_id"] for c in merged[0].body["commits"]] == [f"{i:064x}" for i in (0, 1)]
    assert merged[3].body == items[5][1]  # a lone result goes out as it is


def test_batches_respect_the_item_limit_and_the_byte_budget() -> None:
    merged = merge([_commit(i) for i in range(150)])
    assert [len(m.tags) for m in merged] == [MAX_BATCH_RESULTS, MAX_BATCH_RESULTS, 22]
    big = merge([_reveal(i, outputs=9) for i in range(64)])  # ~700 bytes per item
    assert len(big) > 1 and sum(len(m.tags) for m in big) == 64
    for m in big:  # every merged tx is valid and fits the chain's default size limit
        tx = sign_tx(MINER, "layerchain-test", m.tx_type, 0, m.body)
        check_tx(tx, "layerchain-test", Params())


def test_a_job_named_twice_starts_a_new_batch() -> None:
    merged = merge([_commit(1), _commit(2), _commit(1)])
    assert [m.tags for m in merged] == [[1, 2], [1]]


def test_an_oversized_single_item_is_left_for_the_chain_to_refuse() -> None:
    (only,) = merge([_reveal(0, outputs=16)], budget=100)
    tx = sign_tx(MINER, "layerchain-test", only.tx_type, 0, only.body)
    with pytest.raises(InvalidTransaction, match="bytes; the limit is 1024"):
        check_tx(tx, "layerchain-test", Params(max_tx_bytes=1024))


def test_a_sender_signs_concurrent_results_as_one_batch_tx_that_settles(tmp_path: Path) -> None:
    """Through a real (in-process) node: five commits queued at once go out as one
    commit_results, five reveals as one reveal_results, and all five jobs settle."""
    from inprocess_chain import BASE, in_process_chain

    from ledger import kernels
    from ledger.tensor import Tensor
    from ledger.transactions import (
        POST_JOBS,
        post_job_body,
        post_jobs_body,
        posted_jobs,
        tensor_input,
    )
    from miner.client import NodeClient
    from miner.txsender import TxSender

    async def scenario() -> None:
        async with in_process_chain(tmp_path) as chain:
            client = NodeClient([BASE], transport=chain.transport)
            chain_id = chain.node.genesis.chain_id
            params = {"act": "relu", "out_frac": 8}
            bodies, outputs = [], []
            for seed in range(5):
                inputs = [Tensor(np.full((2, 2), seed + 1, dtype=np.int64), 8)] * 2 + [
                    Tensor(np.zeros(2, dtype=np.int64), 16)
                ]
                for t in inputs:
                    await client.put_tensor(t)
                bodies.append(
                    post_job_body(
                        op="dense_forward",
                        kernel_version=kernels.KERNEL_VERSION,
                        inputs=[tensor_input(t) for t in inputs],
                        params=params,
                        replication=2,
                        reward=10,
                        deadline=100,
                    )
                )
                outputs.append([t.hash for t in kernels.execute("dense_forward", params, inputs)])
                for t in kernels.execute("dense_forward", params, inputs):
                    await client.put_tensor(t)
            poster = TxSender(client, chain.client_key, chain_id)
            batch = await poster.send(POST_JOBS, post_jobs_body(bodies))
            ids = [job_id for job_id, _ in posted_jobs(batch)]
            await _wait(client, ids, "open")
            for key in chain.miner_keys[:2]:
                sender = TxSender(client, key, chain_id)
                commits = await asyncio.gather(
                    *(
                        sender.send(COMMIT_RESULT, commit_body(j, key.address, out, "ab" * 32))
                        for j, out in zip(ids, outputs, strict=True)
                    )
                )
                assert {tx.type for tx in commits} == {COMMIT_RESULTS}
                assert len({tx.hash for tx in commits}) == 1  # one signed tx for five jobs
                await sender.stop()
            await _wait(client, ids, "revealing")
            for key in chain.miner_keys[:2]:
                sender = TxSender(client, key, chain_id)
                reveals = await asyncio.gather(
                    *(
                        sender.send(REVEAL_RESULT, reveal_body(j, out, "ab" * 32))
                        for j, out in zip(ids, outputs, strict=True)
                    )
                )
                assert len({tx.hash for tx in reveals}) == 1 and reveals[0].type == REVEAL_RESULTS
                await sender.stop()
            await _wait(client, ids, "settled")
            await poster.stop()
            await client.aclose()

    asyncio.run(scenario())


async def _wait(client: Any, ids: list[str], status: str) -> None:
    for _ in range(100):
        answer = await client.results(ids, wait=0)
        if all(j["status"] == status for j in answer["jobs"]):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"jobs did not reach {status}: {answer['jobs']}")
