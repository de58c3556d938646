"""Outbound peer-to-peer: one kept-alive connection pair and batching senders per peer.

Consensus messages and gossiped txs are queued per peer in two lanes (each its own kept-alive
connection, spoken to by the lean `api.p2p.rawhttp` client, and its own sender task, so votes
never wait behind a bulk of txs); a lane's task drains its queue into one signed POST /p2p/batch
(up to `batch_max` items), so under load many messages share one request and one signature.
Delivery is best effort: PBFT tolerates lost messages (timers, retransmission
by view change, state transfer), so a batch that cannot be delivered is dropped, the peer is
backed off, and the queue is bounded (oldest dropped first) so a dead peer cannot exhaust memory.

Batch wire format (see docs/PROTOCOL.md §8)::

    POST /p2p/batch
    X-Layerchain-From: <sender address>
    X-Layerchain-Signature: sign("p2p-batch", chain_id, {"body_sha256": SHA-256(body)})
                            (only on a batch of txs; consensus messages are signed one by one)
    body: {"from": <addr>, "to": <addr>, "consensus": [<msg>, ...], "txs": [<tx>, ...]}
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections import deque
from collections.abc import Callable
from typing import Any

import httpx

from api.core.trace import trace
from api.p2p.rawhttp import RawHttpClient
from ledger.encoding import sha256_hex
from ledger.identity import Keypair, verify

log = logging.getLogger(__name__)

BATCH_KIND = "p2p-batch"
FROM_HEADER = "X-Layerchain-From"
SIG_HEADER = "X-Layerchain-Signature"
QUEUE_LIMIT = 200_000


def nodelay_transport(max_connections: int = 10) -> httpx.AsyncHTTPTransport:
    """Kept-alive connections with TCP_NODELAY.

    Without it a request written as headers then body waits for the delayed ACK of the first
    segment (Nagle), adding ~40 ms to every round trip on Linux loopback.
    """
    return httpx.AsyncHTTPTransport(
        limits=httpx.Limits(
            max_connections=max_connections, max_keepalive_connections=max_connections
        ),
        socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
    )


def batch_signature(key: Keypair, chain_id: str, body: bytes) -> str:
    """The sender's signature over a batch body (binds sender, recipient and contents)."""
    return key.sign(BATCH_KIND, chain_id, {"body_sha256": sha256_hex(body)})


def check_batch_signature(address: str, chain_id: str, body: bytes, signature: str) -> bool:
    """True when `signature` is `address`'s batch signature over `body`."""
    return verify(address, BATCH_KIND, chain_id, {"body_sha256": sha256_hex(body)}, signature)


class _Lane:
    """One queue, one kept-alive connection pool and one sender task towards a peer."""

    def __init__(self, link: PeerLink, kind: str, timeout_s: float) -> None:
        self.link = link
        self.kind = kind
        self.queue: deque[Any] = deque()
        self.wake = asyncio.Event()
        self.client: RawHttpClient | httpx.AsyncClient = RawHttpClient(
            link.url, timeout_s, connect_timeout_s=min(timeout_s, 1.0)
        )
        self.task: asyncio.Task[None] | None = None

    def push(self, item: Any) -> None:
        if len(self.queue) >= QUEUE_LIMIT:
            self.queue.popleft()
            self.link.dropped += 1
        self.queue.append(item)
        self.wake.set()

    def take(self) -> list[Any]:
        return [self.queue.popleft() for _ in range(min(self.link.batch_max, len(self.queue)))]

    async def run(self) -> None:
        backoff = 0.05
        link = self.link
        loop = asyncio.get_running_loop()
        while True:
            if not self.queue:
                self.wake.clear()
                await self.wake.wait()
            items = self.take()
            consensus, txs = (items, []) if self.kind == "consensus" else ([], items)
            body = link.body(consensus, txs)
            headers = {FROM_HEADER: link.key.address, "Content-Type": "application/json"}
            if txs:
                # Consensus messages carry their own signatures (checked by the receiver),
                # so only a batch of txs is signed as a whole (see docs/PROTOCOL.md §8.1).
                headers[SIG_HEADER] = batch_signature(link.key, link.chain_id, body)
            started = loop.time()
            trace("post", to=link.address[:6], lane=self.kind, n=len(items))
            down = False
            try:
                response = await self.client.post("/p2p/batch", content=body, headers=headers)
                ok = response.status_code < 300
                if not ok:
                    log.warning("peer %s refused a batch: %s", link.url, response.text[:200])
            except httpx.TransportError as exc:
                ok = False
                down = isinstance(exc, httpx.ConnectError)
                log.debug("peer %s unreachable: %s", link.url, exc)
            trace("post_done", to=link.address[:6], lane=self.kind)
            if link.on_sent is not None:
                link.on_sent(link.address, len(items), loop.time() - started)
            if ok:
                link.up, backoff = True, 0.05
                continue
            # The batch is lost (PBFT recovers lost messages by retransmission and view change).
            link.dropped += len(items)
            link.up = not down
            if down:
                # A peer that refuses connections is down: what is queued would be stale on
                # arrival, so it goes too; wait before trying again.
                link.dropped += len(self.queue)
                self.queue.clear()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 1.0)


class PeerLink:
    """The outbound half of the connection to one peer.

    Two lanes, each with its own connection and sender task: consensus messages (small,
    latency-critical) never wait behind a bulk batch of gossiped txs to a busy peer.
    """

    def __init__(
        self,
        *,
        address: str,
        url: str,
        key: Keypair,
        chain_id: str,
        batch_max: int,
        timeout_s: float,
        on_sent: Callable[[str, int, float], None] | None = None,
    ) -> None:
        self.address = address
        self.url = url.rstrip("/")
        self.key = key
        self.chain_id = chain_id
        self.batch_max = batch_max
        self.on_sent = on_sent
        self.up = True
        self.dropped = 0
        self.consensus = _Lane(self, "consensus", timeout_s)
        self.txs = _Lane(self, "txs", timeout_s)

    @property
    def lanes(self) -> tuple[_Lane, _Lane]:
        return self.consensus, self.txs

    def start(self) -> None:
        for lane in self.lanes:
            lane.task = asyncio.create_task(lane.run(), name=f"p2p-{lane.kind}-{self.address[:8]}")

    async def close(self) -> None:
        for lane in self.lanes:
            if lane.task is not None:
                lane.task.cancel()
                try:
                    await lane.task
                except (asyncio.CancelledError, Exception):
                    pass
            await lane.client.aclose()

    def send_consensus(self, message: Any) -> None:
        self.consensus.push(message)

    def send_tx(self, tx: Any) -> None:
        self.txs.push(tx)

    def body(self, consensus: list[Any], txs: list[Any]) -> bytes:
        """The batch as JSON bytes; items already `Encoded` are spliced in as they are."""
        return b"".join(
            (
                b'{"from":',
                _dumps(self.key.address),
                b',"to":',
                _dumps(self.address),
                b',"consensus":[',
                b",".join(map(_item_bytes, consensus)),
                b'],"txs":[',
                b",".join(map(_item_bytes, txs)),
                b"]}",
            )
        )


class Encoded(bytes):
    """A JSON value already serialised (compact), queued to several peers but encoded once.

    A PRE-PREPARE carries a whole block (hundreds of KB at saturation) and every gossiped tx
    goes to every peer: encoding each once instead of once per peer saves that CPU n - 2 times.
    """

    @classmethod
    def of(cls, value: Any) -> Encoded:
        return cls(_dumps(value))


def _dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def _item_bytes(item: Any) -> bytes:
    return item if isinstance(item, Encoded) else _dumps(item)
