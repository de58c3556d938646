"""Tensor replication by push: a tensor uploaded to one validator is sent on to the others.

A validator votes for a block only when it holds every tensor the block's txs name (PROTOCOL.md
§8.4). Fetching them on demand puts a peer round trip (one GET per tensor) on the critical path
of every block that carries a `post_job` or a reveal: the proposer's peers answer WAIT, fetch,
then vote. Pushing instead moves that work off the critical path: when a client uploads a tensor
the node did not hold, the node queues it for every peer, and one sender task per peer posts what
is queued as one signed batch:

    POST /p2p/tensors
    X-Layerchain-From: <sender address>
    X-Layerchain-Signature: sign("p2p-batch", chain_id, {"body_sha256": SHA-256(body)})
    body: (u32 big-endian length || tensor wire bytes)*      (PROTOCOL.md §8.4)

The receiver checks the sender is another genesis validator and the signature, parses every
tensor (its hash is computed from its bytes, so a peer cannot store one tensor under another's
name) and stores them. Delivery is best effort: the on-demand fetch stays as the fallback.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections import deque
from typing import TYPE_CHECKING

import httpx

from api.p2p.transport import (
    FROM_HEADER,
    SIG_HEADER,
    batch_signature,
    nodelay_transport,
)
from ledger.errors import EncodingError

if TYPE_CHECKING:
    from api.core.node import Node

log = logging.getLogger(__name__)

PATH = "/p2p/tensors"
BATCH_BYTES = 4 << 20
"""A push batch stops growing past this many bytes (a larger single tensor goes alone)."""
QUEUE_LIMIT = 100_000
LENGTH = struct.Struct(">I")


def encode_tensor_batch(blobs: list[bytes]) -> bytes:
    """Length-prefixed concatenation of tensor wire blobs."""
    return b"".join(LENGTH.pack(len(blob)) + blob for blob in blobs)


def decode_tensor_batch(body: bytes) -> list[bytes]:
    """The blobs of `encode_tensor_batch`; EncodingError when the framing is broken."""
    blobs: list[bytes] = []
    at = 0
    while at < len(body):
        if at + LENGTH.size > len(body):
            raise EncodingError(f"tensor batch: truncated length prefix at byte {at}")
        (size,) = LENGTH.unpack_from(body, at)
        at += LENGTH.size
        if at + size > len(body):
            raise EncodingError(
                f"tensor batch: item at byte {at} claims {size} bytes, past the end"
            )
        blobs.append(body[at : at + size])
        at += size
    return blobs


class TensorPusher:
    """One queue and one sender task per peer (see the module docstring)."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.queues: dict[str, deque[str]] = {url: deque() for url in self._urls()}
        self.wake: dict[str, asyncio.Event] = {}
        self.pushed = 0
        self.dropped = 0
        self._tasks: list[asyncio.Task[None]] = []
        self._client: httpx.AsyncClient | None = None

    def _urls(self) -> list[str]:
        return [link.url for link in self.node.peers.links.values()]

    def start(self) -> None:
        self._client = httpx.AsyncClient(
            timeout=self.node.settings.p2p_timeout_s * 4, transport=nodelay_transport()
        )
        for url in self.queues:
            self.wake[url] = asyncio.Event()
            self._tasks.append(asyncio.create_task(self._run(url), name=f"tensor-push-{url}"))

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            try:
                await task
            except (asyncio.CancelledError, Exception):  # shutting down
                pass
        if self._client is not None:
            await self._client.aclose()

    def push(self, tensor_hash: str) -> None:
        """Queue a tensor this node stores for every peer (no-op before `start`)."""
        if self.node.peers.isolated:
            return
        for url, queue in self.queues.items():
            if len(queue) >= QUEUE_LIMIT:
                queue.popleft()
                self.dropped += 1
            queue.append(tensor_hash)
            event = self.wake.get(url)
            if event is not None:
                event.set()

    def _take(self, queue: deque[str]) -> list[bytes]:
        blobs: list[bytes] = []
        size = 0
        while queue and (not blobs or size < BATCH_BYTES):
            blob = self.node.tensors.get_unverified_bytes(queue.popleft())  # peers verify
            if blob is not None:
                blobs.append(blob)
                size += len(blob)
        return blobs

    async def _run(self, url: str) -> None:
        queue, wake = self.queues[url], self.wake[url]
        node = self.node
        backoff = 0.05
        while True:
            if not queue:
                wake.clear()
                await wake.wait()
            blobs = self._take(queue)
            if not blobs or node.peers.isolated:
                continue
            body = encode_tensor_batch(blobs)
            headers = {
                FROM_HEADER: node.key.address,
                SIG_HEADER: batch_signature(node.key, node.genesis.chain_id, body),
                "Content-Type": "application/octet-stream",
            }
            assert self._client is not None
            try:
                response = await self._client.post(url + PATH, content=body, headers=headers)
                ok = response.status_code < 300
                if not ok:
                    log.warning("peer %s refused a tensor push: %s", url, response.text[:200])
            except httpx.HTTPError as exc:
                ok = False
                log.debug("tensor push to %s failed: %s", url, exc)
            if ok:
                self.pushed += len(blobs)
                backoff = 0.05
                continue
            self.dropped += len(blobs)  # the peer fetches on demand when it needs them
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 1.0)
