"""Outbound peer-to-peer: one kept-alive httpx client and one batching sender per peer.

Consensus messages and gossiped txs are queued per peer; a sender task drains the queue into one
signed POST /p2p/batch (up to `batch_max` items), so under load many messages share one request
and one signature. Delivery is best effort: PBFT tolerates lost messages (timers, retransmission
by view change, state transfer), so a batch that cannot be delivered is dropped, the peer is
backed off, and the queue is bounded (oldest dropped first) so a dead peer cannot exhaust memory.

Batch wire format (see docs/PROTOCOL.md §8)::

    POST /p2p/batch
    X-Layerchain-From: <sender address>
    X-Layerchain-Signature: sign("p2p-batch", chain_id, {"body_sha256": SHA-256(body)})
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


class PeerLink:
    """The outbound half of the connection to one peer: a queue and a batching sender task."""

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
        self._key = key
        self._chain_id = chain_id
        self._batch_max = batch_max
        self._consensus: deque[Any] = deque()
        self._txs: deque[Any] = deque()
        self._wake = asyncio.Event()
        self._on_sent = on_sent
        self.client = httpx.AsyncClient(
            base_url=self.url,
            timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, 1.0)),
            transport=nodelay_transport(max_connections=4),
        )
        self.up = True
        self.dropped = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"p2p-send-{self.address[:8]}")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
        await self.client.aclose()

    def send_consensus(self, message: Any) -> None:
        self._push(self._consensus, message)

    def send_tx(self, tx: Any) -> None:
        self._push(self._txs, tx)

    def _push(self, queue: deque[Any], item: Any) -> None:
        if len(queue) >= QUEUE_LIMIT:
            queue.popleft()
            self.dropped += 1
        queue.append(item)
        self._wake.set()

    def _take(self) -> tuple[list[Any], list[Any]]:
        """Drain up to `batch_max` items, consensus messages first (they are latency-critical)."""
        room = self._batch_max
        consensus = [self._consensus.popleft() for _ in range(min(room, len(self._consensus)))]
        room -= len(consensus)
        txs = [self._txs.popleft() for _ in range(min(room, len(self._txs)))]
        return consensus, txs

    def body(self, consensus: list[Any], txs: list[Any]) -> bytes:
        return json.dumps(
            {"from": self._key.address, "to": self.address, "consensus": consensus, "txs": txs},
            separators=(",", ":"),
        ).encode()

    async def _run(self) -> None:
        backoff = 0.05
        loop = asyncio.get_running_loop()
        while True:
            if not self._consensus and not self._txs:
                self._wake.clear()
                await self._wake.wait()
            consensus, txs = self._take()
            body = self.body(consensus, txs)
            headers = {
                FROM_HEADER: self._key.address,
                SIG_HEADER: batch_signature(self._key, self._chain_id, body),
                "Content-Type": "application/json",
            }
            started = loop.time()
            down = False
            try:
                response = await self.client.post("/p2p/batch", content=body, headers=headers)
                ok = response.status_code < 300
                if not ok:
                    log.warning("peer %s refused a batch: %s", self.url, response.text[:200])
            except httpx.TransportError as exc:
                ok = False
                down = isinstance(exc, httpx.ConnectError)
                log.debug("peer %s unreachable: %s", self.url, exc)
            if self._on_sent is not None:
                self._on_sent(self.address, len(consensus) + len(txs), loop.time() - started)
            if ok:
                self.up, backoff = True, 0.05
                continue
            # The batch is lost (PBFT recovers lost messages by retransmission and view change).
            self.dropped += len(consensus) + len(txs)
            self.up = not down
            if down:
                # A peer that refuses connections is down: what is queued would be stale on
                # arrival, so it goes too; wait before trying again.
                self.dropped += len(self._consensus) + len(self._txs)
                self._consensus.clear()
                self._txs.clear()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 1.0)
