"""The lean HTTP client (the peer lanes', and through `ConnectionPool` the miners') against a real
socket server: keep-alive, re-connect, errors, pooling."""

from __future__ import annotations

import asyncio
import socket

import httpx
import pytest

from rawhttp.client import RawHttpClient
from rawhttp.pool import ConnectionPool


async def _server(
    answers: list[bytes], close_after: int | None = None
) -> tuple[asyncio.Server, list[bytes], list[int]]:
    """Answers requests in turn; closes each connection after `close_after` requests."""
    seen: list[bytes] = []
    connections: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        served = 0
        try:
            while close_after is None or served < close_after:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    (
                        int(line.split(b":")[1])
                        for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-length")
                    ),
                    0,  # a GET without a body
                )
                seen.append(head + await reader.readexactly(length))
                writer.write(answers[min(len(seen), len(answers)) - 1])
                await writer.drain()
                served += 1
        except asyncio.IncompleteReadError:
            pass
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, seen, connections


OK = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}"


def test_posts_share_one_kept_alive_connection() -> None:
    async def run() -> None:
        server, seen, connections = await _server([OK])
        port = server.sockets[0].getsockname()[1]
        client = RawHttpClient(f"http://127.0.0.1:{port}", 2.0, 1.0)
        for i in range(3):
            response = await client.post("/p2p/batch", content=b"x" * i, headers={"X-A": "b"})
            assert response.status_code == 200 and response.text == "{}"
        await client.aclose()
        server.close()
        assert len(seen) == 3 and len(connections) == 1
        assert seen[2].startswith(b"POST /p2p/batch HTTP/1.1\r\n")
        assert b"X-A: b\r\n" in seen[2] and seen[2].endswith(b"\r\n\r\nxx")

    asyncio.run(run())


def test_reconnects_when_the_peer_closed_an_idle_connection() -> None:
    async def run() -> None:
        server, seen, connections = await _server([OK], close_after=1)
        port = server.sockets[0].getsockname()[1]
        client = RawHttpClient(f"http://127.0.0.1:{port}", 2.0, 1.0)
        for _ in range(3):
            assert (await client.post("/p", content=b"{}", headers={})).status_code == 200
            await asyncio.sleep(0.01)
        await client.aclose()
        server.close()
        assert len(seen) == 3 and len(connections) == 3

    asyncio.run(run())


def test_chunked_answer_and_error_status() -> None:
    chunked = (
        b"HTTP/1.1 401 Unauthorized\r\ntransfer-encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    )

    async def run() -> None:
        server, _, _ = await _server([chunked, OK])
        port = server.sockets[0].getsockname()[1]
        client = RawHttpClient(f"http://127.0.0.1:{port}", 2.0, 1.0)
        first = await client.post("/p", content=b"", headers={})
        assert (first.status_code, first.text) == (401, "hello world")
        assert (await client.post("/p", content=b"", headers={})).status_code == 200
        await client.aclose()
        server.close()

    asyncio.run(run())


def test_refused_connection_is_an_httpx_connect_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound but not listening: connections are refused

        async def run() -> None:
            client = RawHttpClient(f"http://127.0.0.1:{port}", 1.0, 0.5)
            with pytest.raises(httpx.ConnectError):
                await client.post("/p", content=b"", headers={})

        asyncio.run(run())


def test_silent_peer_times_out_as_read_timeout() -> None:
    async def run() -> None:
        async def mute(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await asyncio.sleep(1)
            writer.close()

        server = await asyncio.start_server(mute, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        client = RawHttpClient(f"http://127.0.0.1:{port}", 0.1, 0.5)
        with pytest.raises(httpx.ReadTimeout):
            await client.post("/p", content=b"{}", headers={})
        server.close()

    asyncio.run(run())


def test_refuses_a_non_http_url() -> None:
    with pytest.raises(ValueError, match="http://host:port"):
        RawHttpClient("https://example.org", 1.0, 1.0)


def test_a_body_bigger_than_the_socket_buffers_goes_through() -> None:
    async def run() -> None:
        server, seen, _ = await _server([OK])
        port = server.sockets[0].getsockname()[1]
        client = RawHttpClient(f"http://127.0.0.1:{port}", 5.0, 1.0)
        body = bytes(range(256)) * 20_000  # ~5 MB: a PRE-PREPARE with a big block
        assert (await client.post("/p", content=body, headers={})).status_code == 200
        await client.aclose()
        server.close()
        assert seen[0].endswith(body)

    asyncio.run(run())


def test_pool_keeps_one_connection_per_concurrent_request_and_reuses_them() -> None:
    async def run() -> None:
        server, seen, connections = await _server([OK])
        port = server.sockets[0].getsockname()[1]
        url = f"http://127.0.0.1:{port}/api/v1/work"
        pool = ConnectionPool(2.0, 1.0, max_response=1 << 20, keepalive=2)
        answers = await asyncio.gather(
            *(pool.request("GET", url, params={"miner": "m", "wait": i}) for i in range(3))
        )
        assert [a.json() for a in answers] == [{}, {}, {}]
        assert len(connections) == 3  # three at once: three connections, two kept idle
        await pool.request("GET", url + "?a=1", params=[("hash", "x"), ("hash", "y")])
        await pool.request("POST", url, content=b"{}", headers={"connection": "close"})
        await pool.request("GET", url)
        await pool.aclose()
        server.close()
        assert len(connections) == 3  # the later requests reused the idle connections
        assert seen[3].startswith(b"GET /api/v1/work?a=1&hash=x&hash=y HTTP/1.1\r\n")
        lines = {head.split(b"\r\n")[0] for head in seen[:3]}
        assert lines == {b"GET /api/v1/work?miner=m&wait=%d HTTP/1.1" % i for i in range(3)}
        assert b"content-length" not in seen[0].lower()
        assert seen[4].endswith(b"\r\n\r\n{}")

    asyncio.run(run())


def test_pool_drops_a_connection_the_server_closes() -> None:
    closing = b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\n{}"

    async def run() -> None:
        server, seen, connections = await _server([closing])
        port = server.sockets[0].getsockname()[1]
        pool = ConnectionPool(2.0, 1.0, max_response=1 << 20)
        for _ in range(3):
            assert (await pool.request("GET", f"http://127.0.0.1:{port}/x")).status_code == 200
        await pool.aclose()
        server.close()
        assert len(seen) == 3 and len(connections) == 3

    asyncio.run(run())


def test_answer_over_the_size_cap_is_a_protocol_error() -> None:
    big = b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n" + b"x" * 100

    async def run() -> None:
        server, _, _ = await _server([big])
        port = server.sockets[0].getsockname()[1]
        pool = ConnectionPool(2.0, 1.0, max_response=99)
        with pytest.raises(httpx.RemoteProtocolError, match="too large"):
            await pool.request("GET", f"http://127.0.0.1:{port}/x")
        await pool.aclose()
        server.close()

    asyncio.run(run())
