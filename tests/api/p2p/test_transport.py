"""Peer batches: signed over the exact bytes, drained in batches, dropped when the peer is down."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

import httpx

from api.p2p.transport import (
    FROM_HEADER,
    SIG_HEADER,
    Encoded,
    PeerLink,
    batch_signature,
    check_batch_signature,
)
from ledger.identity import Keypair

A = Keypair.from_seed(b"A" * 32)
B = Keypair.from_seed(b"B" * 32)


def _link(handler: Callable[[httpx.Request], httpx.Response], batch_max: int) -> PeerLink:
    """A link from A to B whose lanes talk to `handler` (the peer's side of the wire)."""
    link = PeerLink(
        address=B.address, url="http://peer", key=A, chain_id="c", batch_max=batch_max, timeout_s=1
    )
    for lane in link.lanes:
        lane.client = httpx.AsyncClient(
            base_url="http://peer", transport=httpx.MockTransport(handler)
        )
    return link


def test_batch_signature_binds_sender_chain_and_bytes() -> None:
    body = b'{"from":"a","to":"b","consensus":[],"txs":[]}'
    sig = batch_signature(A, "chain", body)
    assert check_batch_signature(A.address, "chain", body, sig)
    assert not check_batch_signature(B.address, "chain", body, sig)
    assert not check_batch_signature(A.address, "other", body, sig)
    assert not check_batch_signature(A.address, "chain", body + b" ", sig)


def test_link_batches_queued_items_into_posts_signing_those_with_txs() -> None:
    received: list[dict] = []

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/p2p/batch"
        assert request.headers[FROM_HEADER] == A.address
        batch = json.loads(request.content)
        if batch["txs"]:
            sig = request.headers[SIG_HEADER]
            assert check_batch_signature(A.address, "c", request.content, sig)
        else:  # consensus messages are signed one by one: no second signature per batch
            assert SIG_HEADER not in request.headers
        received.append(batch)
        return httpx.Response(200, json={"consensus": 0, "txs": 0})

    async def run() -> None:
        link = _link(handler, batch_max=3)
        for i in range(4):
            link.send_tx({"n": i})
        link.send_consensus({"type": "prepare"})
        link.start()
        await asyncio.sleep(0.05)
        await link.close()

    asyncio.run(run())
    consensus = [b for b in received if b["consensus"]]
    txs = [b["txs"] for b in received if b["txs"]]
    assert [b["consensus"] for b in consensus] == [[{"type": "prepare"}]]
    assert all(not b["txs"] for b in consensus)  # its own lane, never mixed with bulk txs
    assert txs == [[{"n": 0}, {"n": 1}, {"n": 2}], [{"n": 3}]]
    assert all(b["from"] == A.address and b["to"] == B.address for b in received)


def test_dead_peer_is_marked_down_and_its_queue_dropped() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    async def run() -> PeerLink:
        link = _link(handler, batch_max=1)
        for i in range(5):
            link.send_tx({"n": i})
        link.start()
        await asyncio.sleep(0.05)
        await link.close()
        return link

    link = asyncio.run(run())
    assert not link.up
    assert link.dropped == 5


def test_pre_encoded_items_are_spliced_into_the_same_json() -> None:
    link = PeerLink(
        address=B.address, url="http://peer", key=A, chain_id="c", batch_max=9, timeout_s=1
    )
    message = {"type": "pre-prepare", "block": {"txs": [{"a": 1}, "é\\u2028"]}}
    tx = {"sig": "ab", "n": [1, 2]}
    spliced = json.loads(link.body([Encoded.of(message)], [Encoded.of(tx), tx]))
    plain = json.loads(link.body([message], [tx, tx]))
    assert (
        spliced
        == plain
        == {"from": A.address, "to": B.address, "consensus": [message], "txs": [tx, tx]}
    )
