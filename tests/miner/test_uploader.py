"""The miner's `Uploader` (outputs queued together go out as one batch upload) and its batched
input downloads, against a real in-process node; a node without the batch route still works."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import numpy as np
from inprocess_chain import BASE, in_process_chain

from ledger.tensor import Tensor
from miner.client import NodeClient
from miner.uploader import MAX_TENSORS, Uploader
from miner.worker import Miner, MinerConfig


class Counting(httpx.AsyncBaseTransport):
    """Passes requests on, counting them per (method, path)."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.calls: list[tuple[str, str]] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.calls.append((request.method, request.url.path))
        return await self.inner.handle_async_request(request)

    def count(self, method: str, path: str) -> int:
        return self.calls.count((method, path))


def _tensors(count: int, seed: int = 0) -> list[Tensor]:
    rng = np.random.default_rng(seed)
    return [Tensor(rng.integers(-99, 99, size=(3, 2), dtype=np.int64), 4) for _ in range(count)]


def test_outputs_queued_together_share_one_request(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with in_process_chain(tmp_path) as chain:
            transport = Counting(chain.transport)
            async with NodeClient([BASE], transport=transport) as client:
                uploader = Uploader(client)
                groups = [_tensors(2, seed) for seed in range(10)]
                urls = await asyncio.gather(*(uploader.upload(g) for g in groups))
                await uploader.stop()
            assert urls == [BASE] * 10
            assert all(chain.node.tensors.has(t.hash) for g in groups for t in g)
            # All ten queued before the uploader's loop first ran: they go out together.
            assert transport.count("POST", "/api/v1/tensors/batch") == uploader.requests == 1
            assert transport.count("PUT", "/api/v1/tensors") == 0

    asyncio.run(scenario())


def test_a_batch_never_exceeds_the_node_s_tensor_limit(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with in_process_chain(tmp_path) as chain:
            async with NodeClient([BASE], transport=chain.transport) as client:
                uploader = Uploader(client)
                many = _tensors(MAX_TENSORS * 2 + 1, seed=7)
                await uploader.upload(many)
                await uploader.stop()
            assert uploader.requests == 3
            assert all(chain.node.tensors.has(t.hash) for t in many)

    asyncio.run(scenario())


def test_a_node_without_batch_uploads_gets_one_put_per_tensor(tmp_path: Path) -> None:
    stored: set[str] = set()

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/v1/tensors/batch":
            return httpx.Response(405, json={"detail": "Method Not Allowed"})
        tensor = Tensor.from_bytes(request.content, expected_hash=request.url.params["hash"])
        stored.add(tensor.hash)
        return httpx.Response(201, json={"hash": tensor.hash})

    async def scenario() -> None:
        async with NodeClient([BASE], transport=httpx.MockTransport(handler)) as client:
            uploader = Uploader(client)
            first, second = _tensors(3, 1), _tensors(2, 2)
            assert await uploader.upload(first) == BASE
            assert await uploader.upload(second) == BASE
            await uploader.stop()
        assert stored == {t.hash for t in first + second}
        assert not uploader.batched and uploader.requests == 1 + 3 + 2

    asyncio.run(scenario())


def test_inputs_of_several_jobs_come_in_one_download(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with in_process_chain(tmp_path) as chain:
            transport = Counting(chain.transport)
            async with NodeClient([BASE], transport=transport) as client:
                jobs = [{"id": f"{i:064x}", "input_hashes": []} for i in range(5)]
                inputs = [_tensors(3, seed) for seed in range(5)]
                for job, tensors in zip(jobs, inputs, strict=True):
                    await client.put_tensors(tensors)
                    job["input_hashes"] = [t.hash for t in tensors]
                miner = Miner(client, chain.miner_keys[0], MinerConfig(workers=2))
                miner._fetch(h for job in jobs for h in job["input_hashes"])
                got = await asyncio.gather(*(miner._inputs(job) for job in jobs))
            assert got == inputs
            assert transport.count("GET", "/api/v1/work/tensors") == 1
            # A missing tensor fails the shared download; each job then tries on its own.
            lost = _tensors(1, seed=99)[0]
            async with NodeClient([BASE], transport=transport) as client:
                miner = Miner(client, chain.miner_keys[0], MinerConfig(workers=2))
                fine = {"id": "ab" * 32, "input_hashes": [t.hash for t in _tensors(1, seed=0)]}
                bad = {"id": "cd" * 32, "input_hashes": [lost.hash]}
                miner._fetch([*fine["input_hashes"], *bad["input_hashes"]])
                results = await asyncio.gather(
                    miner._inputs(fine), miner._inputs(bad), return_exceptions=True
                )
            assert results[0] == _tensors(1, seed=0)
            assert "not stored" in str(results[1])

    asyncio.run(scenario())
