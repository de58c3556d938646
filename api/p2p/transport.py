"""Outbound peer-to-peer: two lanes per peer, each a queue, a sender task and a connection.

Consensus messages and gossiped txs are queued per peer in two lanes (so votes never wait
behind a bulk of txs). A lane's task drains its queue (up to `batch_max` items) into one JSON
batch and either writes it as a frame into the lane's long-lived `POST /p2p/stream`
(`api.p2p.stream`, `api.p2p.streamclient`: no request, routing or answer per batch) or, when
streaming is off or the peer refuses streams (an older node), POSTs it to /p2p/batch through
the lean `rawhttp.client` and waits for the answer. Delivery is best effort: PBFT
tolerates lost messages (timers, retransmission by view change, state transfer), so a batch
that cannot be delivered is dropped, a broken stream is reopened with backoff, a peer that
refuses connections is backed off with its queue cleared, and the queue is bounded (oldest
dropped first) so a dead peer cannot exhaust memory.

Batch wire format (see docs/PROTOCOL.md §8)::

    POST /p2p/batch                         (or one frame of POST /p2p/stream)
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
from urllib.parse import urlsplit

import httpx

from api.core.trace import trace
from api.p2p.stream import OPENING_HEADER, STREAM_PATH, encode_frame, sign_opening
from api.p2p.streamclient import PeerStream, StreamRefused
from ledger.encoding import sha256_hex
from ledger.identity import Keypair, verify
from rawhttp.client import RawHttpClient

log = logging.getLogger(__name__)

BATCH_KIND = "p2p-batch"
FROM_HEADER = "X-Layerchain-From"
SIG_HEADER = "X-Layerchain-Signature"
QUEUE_LIMIT = 200_000
BACKOFF_MIN_S = 0.05
BACKOFF_MAX_S = 1.0
#: How long a lane sends batches to a peer that refused a stream before trying again.
FALLBACK_S = 30.0


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
        self.timeout_s = timeout_s
        self.client: RawHttpClient | httpx.AsyncClient = RawHttpClient(
            link.url, timeout_s, connect_timeout_s=min(timeout_s, 1.0)
        )
        self.task: asyncio.Task[None] | None = None
        self.stream: PeerStream | None = None
        """The open stream (None: not open yet, broken, or the lane sends batches)."""
        self.batch_until = 0.0
        """Loop time until which the lane sends batches (the peer refused a stream)."""
        self.opened = 0
        """Streams opened so far (tests, diagnostics)."""
        self.opened_at = 0.0

    def push(self, item: Any) -> None:
        if len(self.queue) >= QUEUE_LIMIT:
            self.queue.popleft()
            self.link.dropped += 1
        self.queue.append(item)
        self.wake.set()

    def take(self) -> list[Any]:
        return [self.queue.popleft() for _ in range(min(self.link.batch_max, len(self.queue)))]

    async def run(self) -> None:
        backoff = BACKOFF_MIN_S
        link = self.link
        loop = asyncio.get_running_loop()
        while True:
            if self.stream is not None and self.stream.broken:
                lived = loop.time() - self.opened_at
                await self._drop_stream()
                if lived < 1.0:  # a peer ending every stream at once: do not spin
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, BACKOFF_MAX_S)
            if self.stream is None and link.stream and loop.time() >= self.batch_until:
                # Open eagerly (not on the first message), so a message does not wait for it.
                if not await self._open_stream():
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, BACKOFF_MAX_S)
                    continue
            if not self.queue:
                self.wake.clear()
                await self.wake.wait()
                if self.stream is not None and self.stream.broken:
                    continue  # woken by the stream breaking: open a new one first
            items = self.take()
            consensus, txs = (items, []) if self.kind == "consensus" else ([], items)
            body = link.body(consensus, txs)
            # Consensus messages carry their own signatures (checked by the receiver), so only
            # a batch of txs is signed as a whole (see docs/PROTOCOL.md §8.1).
            signature = batch_signature(link.key, link.chain_id, body) if txs else None
            started = loop.time()
            down = False
            if self.stream is not None:
                trace("frame", to=link.address[:6], lane=self.kind, n=len(items))
                try:
                    await self.stream.send(encode_frame(body, signature))
                    ok = True
                except httpx.TransportError as exc:
                    ok = False
                    log.debug("stream to %s broke: %s", link.url, exc)
            else:
                ok, down = await self._post(body, signature, len(items))
            if link.on_sent is not None:
                link.on_sent(link.address, len(items), loop.time() - started)
            if ok:
                link.up, backoff = True, BACKOFF_MIN_S
                continue
            # The batch is lost (PBFT recovers lost messages by retransmission and view change).
            link.dropped += len(items)
            link.up = not down
            if down:
                # A peer that refuses connections is down: what is queued would be stale on
                # arrival, so it goes too; wait before trying again.
                link.dropped += len(self.queue)
                self.queue.clear()
            await asyncio.sleep(backoff if down or self.stream is not None else 0)
            if down or self.stream is not None:
                backoff = min(backoff * 2, BACKOFF_MAX_S)

    async def _post(self, body: bytes, signature: str | None, n: int) -> tuple[bool, bool]:
        """One POST /p2p/batch: (delivered, peer down)."""
        link = self.link
        headers = {FROM_HEADER: link.key.address, "Content-Type": "application/json"}
        if signature is not None:
            headers[SIG_HEADER] = signature
        trace("post", to=link.address[:6], lane=self.kind, n=n)
        try:
            response = await self.client.post("/p2p/batch", content=body, headers=headers)
        except httpx.TransportError as exc:
            log.debug("peer %s unreachable: %s", link.url, exc)
            return False, isinstance(exc, httpx.ConnectError)
        finally:
            trace("post_done", to=link.address[:6], lane=self.kind)
        if response.status_code >= 300:
            log.warning("peer %s refused a batch: %s", link.url, response.text[:200])
            return False, False
        return True, False

    async def _open_stream(self) -> bool:
        """Open the lane's stream; False (and the reason logged) when that failed.

        A peer without /p2p/stream (404/405: an older node) or refusing this node's opening
        (401/403) is sent batches instead for `FALLBACK_S` before the next try.
        """
        link = self.link
        opening, signature = sign_opening(link.key, link.chain_id, link.address)
        headers = {
            FROM_HEADER: link.key.address,
            OPENING_HEADER: opening,
            SIG_HEADER: signature,
            "Content-Type": "application/octet-stream",
        }
        stream = PeerStream(link.host, link.port, link.netloc, self.timeout_s)
        try:
            await stream.open(STREAM_PATH, headers, on_break=self.wake.set)
        except StreamRefused as exc:
            if exc.status in (401, 403, 404, 405):
                log.warning(
                    "peer %s refused a stream (%s); sending it batches for %d s",
                    link.url,
                    exc,
                    FALLBACK_S,
                )
                self.batch_until = asyncio.get_running_loop().time() + FALLBACK_S
                return True
            log.debug("peer %s refused a stream for now: %s", link.url, exc)
        except httpx.TransportError as exc:
            log.debug("cannot open a stream to %s: %s", link.url, exc)
            link.up = not isinstance(exc, httpx.ConnectError)
        else:
            self.stream = stream
            self.opened += 1
            self.opened_at = asyncio.get_running_loop().time()
            link.up = True
            return True
        # What is queued would be stale when the peer takes a stream again (as a refused
        # POST /p2p/batch loses its batch).
        link.dropped += len(self.queue)
        self.queue.clear()
        return False

    async def _drop_stream(self) -> None:
        stream, self.stream = self.stream, None
        if stream is not None:
            await stream.aclose()

    async def aclose(self) -> None:
        await self._drop_stream()
        await self.client.aclose()


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
        stream: bool = False,
    ) -> None:
        self.address = address
        self.url = url.rstrip("/")
        parts = urlsplit(self.url)
        self.host, self.port, self.netloc = parts.hostname or "", parts.port or 80, parts.netloc
        self.stream = stream
        """Send over one long-lived POST /p2p/stream per lane (else one POST per batch)."""
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
            await lane.aclose()

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
