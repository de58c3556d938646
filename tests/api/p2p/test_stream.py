"""The streaming peer lane: frames, the authenticated opening, and a real uvicorn receiver.

The receiver tests serve node0 of a two-validator genesis with uvicorn on a loopback port in
the test's own event loop (a stream is only a stream over a real socket: TestClient would
buffer the whole body), and talk to it as node1 would.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI, Request

from api.commands import write_testnet
from api.core.config import load_settings
from api.core.node import Node
from api.main import create_app
from api.p2p.stream import (
    MAX_SKEW_MS,
    OPENING_HEADER,
    STREAM_PATH,
    FrameReader,
    OpeningGuard,
    encode_frame,
    sign_opening,
)
from api.p2p.transport import FROM_HEADER, SIG_HEADER, PeerLink, batch_signature
from api.testing import LocalTestnet, free_ports
from ledger.errors import EncodingError
from ledger.identity import Keypair

A = Keypair.from_seed(b"A" * 32)
B = Keypair.from_seed(b"B" * 32)

# ------------------------------------------------------------------------------- frames


def test_frames_split_across_chunks_are_reassembled_in_order() -> None:
    one, two = b'{"n":1}', b'{"n":2,"x":"' + b"y" * 300 + b'"}'
    signature = batch_signature(A, "c", two)
    wire = encode_frame(one) + encode_frame(two, signature)
    byte_by_byte = FrameReader(1 << 20)
    frames = [f for i in range(len(wire)) for f in byte_by_byte.feed(wire[i : i + 1])]
    assert frames == [(None, one), (signature, two)]
    assert byte_by_byte.pending == 0
    at_once = FrameReader(1 << 20)
    assert at_once.feed(wire + wire[:7]) == [(None, one), (signature, two)]
    assert at_once.pending == 7  # the start of a third frame waits for its rest


def test_broken_framing_is_refused() -> None:
    with pytest.raises(EncodingError, match="exceeds the limit"):
        FrameReader(10).feed(encode_frame(b"x" * 11))
    with pytest.raises(EncodingError, match="signature length"):
        FrameReader(100).feed(b"\x00\x00\x00\x01\x05" + b"x" * 6)
    with pytest.raises(EncodingError):
        encode_frame(b"{}", "abcd")


# ------------------------------------------------------------------------------ opening


def test_an_opening_is_bound_to_chain_sender_recipient_and_used_once() -> None:
    guard = OpeningGuard("c", B.address)
    opening, sig = sign_opening(A, "c", B.address)
    assert guard.check(A.address, opening, sig) == ""
    assert "used before" in guard.check(A.address, opening, sig)  # a replay to this node
    for_c, sig_c = sign_opening(A, "c", Keypair.generate().address)
    assert "signature" in guard.check(A.address, for_c, sig_c)  # recorded for another node
    other_chain, sig_o = sign_opening(A, "other", B.address)
    assert "signature" in guard.check(A.address, other_chain, sig_o)
    fresh, sig_f = sign_opening(A, "c", B.address)
    assert "signature" in guard.check(B.address, fresh, sig_f)  # claims another sender
    stamp = int(fresh.split(":")[0])
    assert "away from this node's clock" in guard.check(
        A.address, fresh, sig_f, now_ms=stamp + MAX_SKEW_MS + 1
    )
    assert "<time_ms>:<nonce>" in guard.check(A.address, "garbage", sig_f)


# ----------------------------------------------------------------------- real receiver


class Served:
    """node0 served by uvicorn on loopback, with the batches its node receives recorded."""

    def __init__(self, root: Path) -> None:
        self.ports = free_ports(2)
        self.genesis = write_testnet(root, validators=2, miners=0, ports=self.ports)
        self.app = create_app(load_settings(root / "node0"))
        self.node: Node = self.app.state.node
        self.peer = Keypair.load(root / "node1" / "node_key.pem")
        self.url = f"http://127.0.0.1:{self.ports[0]}"
        self.received: list[dict[str, Any]] = []
        receive_batch = self.node.receive_batch

        def recording(sender: str, body: bytes, *, signed: bool = True) -> Any:
            result = receive_batch(sender, body, signed=signed)
            self.received.append(json.loads(body))
            return result

        self.node.receive_batch = recording  # type: ignore[method-assign]

    def batch(self, txs: list[Any]) -> bytes:
        return json.dumps(
            {"from": self.peer.address, "to": self.node.key.address, "consensus": [], "txs": txs}
        ).encode()

    def link(self, url: str | None = None) -> PeerLink:
        return PeerLink(
            address=self.node.key.address,
            url=url or self.url,
            key=self.peer,
            chain_id=self.genesis.chain_id,
            batch_max=100,
            timeout_s=2,
            stream=True,
        )


def serve(app: FastAPI, port: int, body: Callable[[], Awaitable[None]]) -> None:
    """Run `body` while `app` is served on `port` (lifespan included)."""

    async def run() -> None:
        config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
        server = uvicorn.Server(config)
        task = asyncio.create_task(server.serve())
        while not server.started:
            await asyncio.sleep(0.01)
        try:
            await body()
        finally:
            server.should_exit = True
            await task

    asyncio.run(run())


async def until(condition: Callable[[], bool], timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def open_raw(served: Served, headers: dict[str, str]) -> tuple[Any, Any, bytes]:
    """A hand-written stream opening: (reader, writer, the answer's head)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", served.ports[0])
    head = [f"POST {STREAM_PATH} HTTP/1.1", "Host: x", "Transfer-Encoding: chunked"]
    head += [f"{k}: {v}" for k, v in headers.items()]
    writer.write(("\r\n".join(head) + "\r\n\r\n").encode())
    return reader, writer, await reader.readuntil(b"\r\n\r\n")


def opening_headers(served: Served, key: Keypair | None = None) -> dict[str, str]:
    key = key or served.peer
    opening, signature = sign_opening(key, served.genesis.chain_id, served.node.key.address)
    return {FROM_HEADER: key.address, OPENING_HEADER: opening, SIG_HEADER: signature}


def test_frames_are_handled_as_they_arrive_even_split_across_chunks(tmp_path: Path) -> None:
    served = Served(tmp_path)

    async def body() -> None:
        reader, writer, head = await open_raw(served, opening_headers(served))
        assert head.startswith(b"HTTP/1.1 200")
        first = served.batch([{"n": 1}])
        frame = encode_frame(first, batch_signature(served.peer, served.genesis.chain_id, first))
        for piece in (frame[:3], frame[3:40], frame[40:]):  # one frame over three chunks
            writer.write(b"%x\r\n%b\r\n" % (len(piece), piece))
            await writer.drain()
            await asyncio.sleep(0.02)
        await until(lambda: len(served.received) == 1)  # handled while the body goes on
        assert served.received[0]["txs"] == [{"n": 1}]
        # An unsigned frame with txs is refused like an unsigned /p2p/batch: the stream ends.
        writer.write(b"%x\r\n%b\r\n" % (len(encode_frame(first)), encode_frame(first)))
        await writer.drain()
        assert await asyncio.wait_for(reader.read(), 3) == b"0\r\n\r\n"  # answer ended, closed
        writer.close()

    serve(served.app, served.ports[0], body)


def test_a_forged_or_replayed_opening_is_refused(tmp_path: Path) -> None:
    served = Served(tmp_path)

    async def body() -> None:
        forged = opening_headers(served)
        forged[SIG_HEADER] = opening_headers(served, Keypair.generate())[SIG_HEADER]
        _, writer, head = await open_raw(served, forged)
        assert head.startswith(b"HTTP/1.1 401")
        writer.close()
        stranger = opening_headers(served, Keypair.generate())
        _, writer, head = await open_raw(served, stranger)
        assert head.startswith(b"HTTP/1.1 403")
        writer.close()
        good = opening_headers(served)
        _, first, head = await open_raw(served, good)
        assert head.startswith(b"HTTP/1.1 200")
        _, replay, head = await open_raw(served, good)
        assert head.startswith(b"HTTP/1.1 401")
        first.close()
        replay.close()

    serve(served.app, served.ports[0], body)


def test_a_broken_stream_is_reopened_and_delivery_goes_on(tmp_path: Path) -> None:
    served = Served(tmp_path)

    async def body() -> None:
        link = served.link()
        link.start()
        lane = link.txs
        await until(lambda: lane.stream is not None)
        link.send_tx({"n": 1})
        await until(lambda: len(served.received) == 1)
        # The receiver drops the stream (its partition switch): the frame is lost ...
        served.node.peers.isolated = True
        link.send_tx({"n": 2})
        await until(lambda: lane.stream is None or lane.stream.broken)
        served.node.peers.isolated = False
        # ... and the lane opens a new stream (with backoff), over which delivery goes on.
        await until(lambda: lane.opened >= 2 and lane.stream is not None)
        link.send_tx({"n": 3})
        await until(lambda: len(served.received) == 2)
        assert [b["txs"] for b in served.received] == [[{"n": 1}], [{"n": 3}]]
        await link.close()

    serve(served.app, served.ports[0], body)


def test_a_peer_without_streams_gets_batches(tmp_path: Path) -> None:
    served = Served(tmp_path)
    older = FastAPI()  # a node from before /p2p/stream: only POST /p2p/batch
    posted: list[dict[str, Any]] = []

    @older.post("/p2p/batch")
    async def batch(request: Request) -> dict[str, int]:
        posted.append(json.loads(await request.body()))
        return {"consensus": 0, "txs": len(posted[-1]["txs"])}

    port = free_ports(1)[0]

    async def body() -> None:
        link = served.link(f"http://127.0.0.1:{port}")
        link.start()
        await until(lambda: link.txs.batch_until > 0)  # refused (404): batches for a while
        link.send_tx({"n": 1})
        await until(lambda: len(posted) == 1)
        assert posted[0]["txs"] == [{"n": 1}] and link.txs.stream is None
        await link.close()

    serve(older, port, body)


def test_a_stopping_node_ends_its_inbound_streams_at_once(tmp_path: Path) -> None:
    """uvicorn would wait its graceful timeout (3 s) for streams that never end by themselves."""
    with LocalTestnet(tmp_path, validators=2, miners=0) as net:
        net.start_all()
        net.wait_healthy(timeout=60)
        time.sleep(0.5)  # both nodes' lanes have opened their streams
        started = time.monotonic()
        net.stop(0)
        assert time.monotonic() - started < 2.5
        log = (net.home(0) / "node.log").read_text()
        assert "timeout graceful shutdown exceeded" not in log
    shutil.rmtree(tmp_path, ignore_errors=True)
