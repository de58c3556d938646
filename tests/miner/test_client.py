"""NodeClient: fail-over past a dead or failing node, 4xx not retried, tensors checked by hash."""

from __future__ import annotations

import asyncio
import base64
import socket

import httpx
import numpy as np
import pytest

from ledger.errors import TensorError
from ledger.tensor import Tensor
from miner.client import NodeClient, NodeRequestError, NodeUnavailable

GOOD = "http://good.test"
DEAD = "http://dead.test"
BROKEN = "http://broken.test"


def _transport(calls: list[str], tensor: Tensor | None = None) -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        host = f"http://{request.url.host}"
        calls.append(host)
        if host == DEAD:
            raise httpx.ConnectError("connection refused", request=request)
        if host == BROKEN:
            return httpx.Response(503, json={"detail": "overloaded"})
        if request.url.path == "/api/v1/status":
            return httpx.Response(200, json={"chain_id": "c", "height": 7})
        if request.url.path == "/api/v1/txs":
            return httpx.Response(422, json={"detail": "signature is not the sender's"})
        if request.url.path.startswith("/api/v1/tensors/") and tensor is not None:
            return httpx.Response(200, content=tensor.to_bytes())
        return httpx.Response(404, json={"detail": "nope"})

    return httpx.MockTransport(handler)


def test_fails_over_from_a_dead_node_and_a_5xx_node_to_a_good_one() -> None:
    calls: list[str] = []

    async def scenario() -> dict[str, object]:
        async with NodeClient(
            [DEAD, BROKEN, GOOD], transport=_transport(calls), backoff_s=0.001
        ) as client:
            status = await client.status()
            assert client.url == GOOD and client.failovers == 2
            return status

    assert asyncio.run(scenario())["height"] == 7
    assert calls == [DEAD, BROKEN, GOOD]


def test_gives_up_with_node_unavailable_when_every_node_fails() -> None:
    calls: list[str] = []

    async def scenario() -> None:
        async with NodeClient(
            [DEAD, BROKEN], transport=_transport(calls), attempts=4, backoff_s=0.001
        ) as client:
            await client.status()

    with pytest.raises(NodeUnavailable, match="no node answered"):
        asyncio.run(scenario())
    assert calls == [DEAD, BROKEN, DEAD, BROKEN]


def test_a_4xx_is_the_request_s_fault_and_is_not_retried_elsewhere() -> None:
    calls: list[str] = []

    async def scenario() -> None:
        async with NodeClient([GOOD, BROKEN], transport=_transport(calls)) as client:
            await client.request("POST", "/api/v1/txs", json={})

    with pytest.raises(NodeRequestError, match="signature is not the sender's") as info:
        asyncio.run(scenario())
    assert info.value.status == 422
    assert calls == [GOOD]


def test_a_downloaded_tensor_must_hash_to_what_was_asked() -> None:
    served = Tensor(np.arange(6, dtype=np.int64).reshape(2, 3), 4)
    other = Tensor(np.zeros((2, 3), dtype=np.int64), 4)

    async def fetch(tensor_hash: str) -> Tensor:
        async with NodeClient([GOOD], transport=_transport([], served)) as client:
            return await client.get_tensor(tensor_hash)

    assert asyncio.run(fetch(served.hash)) == served
    with pytest.raises(TensorError, match="does not match"):
        asyncio.run(fetch(other.hash))


def test_concurrent_requests_failing_on_one_dead_node_fail_over_once() -> None:
    """Eight requests in flight against a dead node: the client moves on once, not eight times
    (eight advances over four nodes would wrap round onto the dead node again)."""
    calls: list[str] = []
    nodes = [DEAD, GOOD, "http://good2.test", "http://good3.test"]
    sync_handler = _transport(calls).handler  # type: ignore[attr-defined]

    async def handler(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(0.01)  # every request is in flight before the first one fails
        return sync_handler(request)  # type: ignore[no-any-return]

    async def scenario() -> list[int]:
        transport = httpx.MockTransport(handler)
        async with NodeClient(nodes, transport=transport, backoff_s=0.001) as client:
            statuses = await asyncio.gather(*(client.status() for _ in range(8)))
            assert client.failovers == 1 and client.url == GOOD
            return [s["height"] for s in statuses]

    assert asyncio.run(scenario()) == [7] * 8
    assert calls.count(DEAD) == 8 and calls.count(GOOD) == 8 and len(calls) == 16


def test_a_tensor_batch_is_checked_tensor_by_tensor_and_frame_by_frame() -> None:
    a = Tensor(np.arange(3, dtype=np.int64), 2)
    b = Tensor(np.arange(4, dtype=np.int64), 2)

    def framed(*tensors: Tensor, tail: bytes = b"") -> bytes:
        return b"".join(len(t.to_bytes()).to_bytes(4, "big") + t.to_bytes() for t in tensors) + tail

    async def fetch(body: bytes, hashes: list[str]) -> list[Tensor]:
        def handler(request: httpx.Request) -> httpx.Response:
            assert request.url.path == "/api/v1/work/tensors"
            assert request.url.params.get_list("hash") == hashes
            return httpx.Response(200, content=body)

        async with NodeClient([GOOD], transport=httpx.MockTransport(handler)) as client:
            return await client.get_tensors(hashes)

    assert asyncio.run(fetch(framed(b, a), [b.hash, a.hash])) == [b, a]
    with pytest.raises(TensorError, match="does not match"):
        asyncio.run(fetch(framed(a, a), [a.hash, b.hash]))
    with pytest.raises(TensorError, match="ended before"):
        asyncio.run(fetch(framed(a), [a.hash, b.hash]))
    with pytest.raises(TensorError, match="unexpected bytes"):
        asyncio.run(fetch(framed(a, tail=b"xx"), [a.hash]))


def test_inline_work_tensors_are_kept_only_when_they_hash_to_a_listed_job_s_input() -> None:
    """A lying node: one tensor's bytes do not match its name, one is no listed job's input,
    one is not base64. Only the honest one is handed to the miner."""
    good, other, stray = (Tensor(np.arange(n, dtype=np.int64), 2) for n in (3, 4, 5))
    lie = Tensor(np.arange(3, dtype=np.int64) + 1, 2)
    bad_b64 = "ab" * 32
    sent = {
        good.hash: base64.b64encode(good.to_bytes()).decode(),
        other.hash: base64.b64encode(lie.to_bytes()).decode(),
        stray.hash: base64.b64encode(stray.to_bytes()).decode(),
        bad_b64: "not base64!",
    }
    asked: list[httpx.QueryParams] = []

    def handler(request: httpx.Request) -> httpx.Response:
        asked.append(request.url.params)
        job = {"id": "11" * 32, "input_hashes": [good.hash, other.hash, bad_b64, None]}
        return httpx.Response(
            200, json={"height": 3, "commit": [job], "reveal": [], "stolen": [], "tensors": sent}
        )

    async def scenario() -> None:
        async with NodeClient([GOOD], transport=httpx.MockTransport(handler)) as client:
            work = await client.work("aa" * 32, wait=0, limit=4, inline_bytes=1000)
            assert work["tensors"] == {good.hash: good}
            plain = await client.work("aa" * 32, wait=0, limit=4)
            assert "inline_bytes" not in asked[1] and asked[0]["inline_bytes"] == "1000"
            assert list(plain["tensors"]) == [good.hash]  # still checked, whatever was asked
            held = await client.work(
                "aa" * 32, wait=0, limit=4, inline_bytes=1000, known={good.hash}
            )
            assert held["tensors"] == {}  # the caller holds it: not decoded again

    asyncio.run(scenario())


async def _http_server(answers: dict[str, tuple[int, bytes]]) -> tuple[asyncio.Server, list[str]]:
    """A real HTTP/1.1 server on loopback: answers each path's (status, JSON body), kept alive."""
    seen: list[str] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
                line, *fields = head.split("\r\n")
                sizes = [int(f.split(":")[1]) for f in fields if f.lower().startswith("content-l")]
                length = sizes[0] if sizes else 0
                body = await reader.readexactly(length)
                target = line.split(" ")[1]
                seen.append(f"{line.split(' ')[0]} {target} {body.decode()}".strip())
                status, content = answers.get(target.split("?")[0], (404, b'{"detail":"nope"}'))
                writer.write(
                    f"HTTP/1.1 {status} X\r\ncontent-length: {len(content)}\r\n\r\n".encode()
                    + content
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0), seen


def test_the_raw_wire_fails_over_keeps_4xx_answers_and_sends_json_and_queries() -> None:
    """Without a transport the client speaks raw HTTP/1.1 (`rawhttp`); the same fail-over and
    error rules hold as over httpx."""

    async def run() -> None:
        server, seen = await _http_server(
            {
                "/api/v1/status": (200, b'{"chain_id":"c","height":7}'),
                "/api/v1/txs/batch": (422, b'{"detail":"body must be..."}'),
                "/api/v1/work": (200, b'{"height":7,"commit":[],"reveal":[]}'),
            }
        )
        port = server.sockets[0].getsockname()[1]
        with socket.socket() as closed:
            closed.bind(("127.0.0.1", 0))  # bound, not listening: connections are refused
            dead = f"http://127.0.0.1:{closed.getsockname()[1]}"
            async with NodeClient([dead, f"http://127.0.0.1:{port}"], backoff_s=0.001) as client:
                assert client._pool is not None  # the raw wire
                assert (await client.status())["height"] == 7
                assert client.failovers == 1
                with pytest.raises(NodeRequestError) as refused:
                    await client.request("POST", "/api/v1/txs/batch", json={"txs": []})
                assert refused.value.status == 422 and "body must be" in refused.value.detail
                work = await client.work("ab" * 32, wait=0.5, since=3, limit=2)
                assert work["height"] == 7 and work["tensors"] == {}
        server.close()
        assert seen == [
            "GET /api/v1/status",
            'POST /api/v1/txs/batch {"txs":[]}',
            f"GET /api/v1/work?miner={'ab' * 32}&wait=0.5&since=3&limit=2",
        ]

    asyncio.run(run())


def test_https_nodes_and_given_transports_go_through_httpx() -> None:
    async def run() -> None:
        async with NodeClient(["https://node.example"]) as client:
            assert client._pool is None and client._client is not None
        async with NodeClient([GOOD], transport=_transport([])) as client:
            assert client._pool is None

    asyncio.run(run())
