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

As primary, the node does not propose a tx naming a tensor still on its way to the peers
(`replicating`): a block the backups can check at once commits sooner than one each backup must
first fetch for (a GET per tensor and peer after the PRE-PREPARE arrives), and the push is under
way anyway. The wait ends when a quorum of the validators holds the tensor (this node and
quorum − 1 peers answered the push, or a push failed: that peer fetches), or after
`REPLICATION_WAIT_S` at most; the pusher then nudges the proposer (`Node.tensors_replicated`).
"""

from __future__ import annotations

import asyncio
import logging
import struct
import time
from collections import deque
from typing import TYPE_CHECKING

import httpx

from api.core.trace import trace
from api.p2p.transport import (
    FROM_HEADER,
    SIG_HEADER,
    batch_signature,
)
from ledger.errors import EncodingError
from rawhttp.client import RawHttpClient

if TYPE_CHECKING:
    from api.core.node import Node

log = logging.getLogger(__name__)

PATH = "/p2p/tensors"
BATCH_BYTES = 4 << 20
"""A push batch stops growing past this many bytes (a larger single tensor goes alone)."""
QUEUE_LIMIT = 100_000
REPLICATION_WAIT_S = 0.2
"""The longest a proposal waits for a tensor's push (then backups fetch what they lack)."""
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
        self._clients: dict[str, RawHttpClient] = {}
        self._unacked: dict[str, tuple[float, set[str]]] = {}
        """tensor hash -> (when queued, peers whose push of it has not ended yet)."""
        self._needed = max(0, node.genesis.quorum - 1)
        """Peers that must hold a tensor before a block may name it: with this node, a quorum."""

    def _urls(self) -> list[str]:
        return [link.url for link in self.node.peers.links.values()]

    def start(self) -> None:
        timeout = self.node.settings.p2p_timeout_s * 4
        for url in self.queues:
            # One kept-alive raw connection per peer, like the message lanes: httpx's
            # per-request cost put ~5-8 ms between an upload and its arrival at the peers.
            self._clients[url] = RawHttpClient(url, timeout, connect_timeout_s=1.0)
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
        for client in self._clients.values():
            await client.aclose()

    def push(self, tensor_hash: str) -> None:
        """Queue a tensor this node stores for every peer (no-op before `start`)."""
        if self.node.peers.isolated:
            return
        if self.queues:
            self._unacked[tensor_hash] = (time.monotonic(), set(self.queues))
        for url, queue in self.queues.items():
            if len(queue) >= QUEUE_LIMIT:
                queue.popleft()
                self.dropped += 1
            queue.append(tensor_hash)
            event = self.wake.get(url)
            if event is not None:
                event.set()

    def replicating(self, tensor_hash: str) -> bool:
        """Is this tensor still being pushed to the peers a quorum needs?"""
        entry = self._unacked.get(tensor_hash)
        if entry is None:
            return False
        queued_at, waiting = entry
        if len(self.queues) - len(waiting) >= self._needed or (
            time.monotonic() - queued_at > REPLICATION_WAIT_S
        ):
            del self._unacked[tensor_hash]
            return False
        return True

    def _ended(self, url: str, hashes: list[str]) -> None:
        """The push of `hashes` to `url` ended (answered or failed): note it, and nudge the
        proposer when a tensor just reached a quorum."""
        reached = False
        for tensor_hash in hashes:
            entry = self._unacked.get(tensor_hash)
            if entry is None:
                continue
            entry[1].discard(url)
            if len(self.queues) - len(entry[1]) >= self._needed:
                del self._unacked[tensor_hash]
                reached = True
        if reached:
            self.node.tensors_replicated()

    def _take(self, queue: deque[str]) -> tuple[list[str], list[bytes]]:
        hashes: list[str] = []
        blobs: list[bytes] = []
        size = 0
        while queue and (not blobs or size < BATCH_BYTES):
            tensor_hash = queue.popleft()
            blob = self.node.tensors.get_unverified_bytes(tensor_hash)  # peers verify
            if blob is not None:
                hashes.append(tensor_hash)
                blobs.append(blob)
                size += len(blob)
        return hashes, blobs

    async def _run(self, url: str) -> None:
        queue, wake = self.queues[url], self.wake[url]
        node = self.node
        backoff = 0.05
        while True:
            if not queue:
                wake.clear()
                await wake.wait()
            hashes, blobs = self._take(queue)
            if not blobs or node.peers.isolated:
                self._ended(url, hashes)
                continue
            body = encode_tensor_batch(blobs)
            headers = {
                FROM_HEADER: node.key.address,
                SIG_HEADER: batch_signature(node.key, node.genesis.chain_id, body),
                "Content-Type": "application/octet-stream",
            }
            trace("push", to=url.rsplit(":", 1)[-1], n=len(blobs))
            try:
                response = await self._clients[url].post(PATH, content=body, headers=headers)
                trace("push_done", to=url.rsplit(":", 1)[-1])
                ok = response.status_code < 300
                if not ok:
                    log.warning("peer %s refused a tensor push: %s", url, response.text[:200])
            except httpx.HTTPError as exc:
                ok = False
                log.debug("tensor push to %s failed: %s", url, exc)
            self._ended(url, hashes)
            if ok:
                self.pushed += len(blobs)
                backoff = 0.05
                continue
            self.dropped += len(blobs)  # the peer fetches on demand when it needs them
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 1.0)
