"""The streaming peer lane's wire format: the authenticated opening and the frames.

A lane opens one long-lived `POST /p2p/stream` (`Transfer-Encoding: chunked`) to a peer and
keeps writing frames into its body; the receiver handles each frame as soon as it is complete
(docs/PROTOCOL.md §8.1). A frame carries exactly the JSON batch `POST /p2p/batch` takes, so
both paths end in `Node.receive_batch`; what one request per batch cost in HTTP parsing,
routing and answering is paid once per stream instead.

    frame = u32 big-endian body length || u8 signature length (0 or 128)
            || signature (ASCII hex, `batch_signature` over the body) || body

HTTP chunk boundaries mean nothing here: a frame may span chunks and a chunk may hold many
frames (`FrameReader` reassembles them).

The opening request names its sender and carries
`sign("p2p-stream", chain_id, {"from", "to", "time_ms", "nonce"})`: the recipient checks that it
is addressed to itself, fresh (within `MAX_SKEW_MS` of its clock) and not seen before
(`OpeningGuard`), so a recorded stream can neither be replayed to this node nor to another.
"""

from __future__ import annotations

import secrets
import struct
import time
from collections import deque

from ledger.errors import EncodingError
from ledger.identity import Keypair, verify

STREAM_PATH = "/p2p/stream"
STREAM_KIND = "p2p-stream"
#: `<time_ms>:<nonce>` of the opening request (the signature is in X-Layerchain-Signature).
OPENING_HEADER = "X-Layerchain-Stream"
#: How far an opening's timestamp may be from the receiver's clock.
MAX_SKEW_MS = 30_000
SIGNATURE_LEN = 128
_HEAD = struct.Struct(">IB")


def encode_frame(body: bytes, signature: str | None = None) -> bytes:
    """One frame: `body` (a JSON batch), with the sender's batch signature when given."""
    sig = b"" if signature is None else signature.encode("ascii")
    if len(sig) not in (0, SIGNATURE_LEN):
        raise EncodingError(f"a frame signature must be {SIGNATURE_LEN} hex characters")
    return _HEAD.pack(len(body), len(sig)) + sig + body


class FrameReader:
    """Reassembles frames from the body chunks of a stream, in order.

    `feed` returns every frame completed by the new bytes; broken framing (an unknown
    signature length, a frame above `limit`) raises `EncodingError`, after which the stream
    is unusable: the receiver ends it and the sender opens a new one.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._buffer = bytearray()

    @property
    def pending(self) -> int:
        """Bytes of an incomplete frame held back."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[tuple[str | None, bytes]]:
        buffer = self._buffer
        buffer += data
        frames: list[tuple[str | None, bytes]] = []
        start = 0
        while len(buffer) - start >= _HEAD.size:
            length, sig_len = _HEAD.unpack_from(buffer, start)
            if sig_len not in (0, SIGNATURE_LEN):
                raise EncodingError(f"frame signature length {sig_len} is neither 0 nor 128")
            if length > self.limit:
                raise EncodingError(f"a frame of {length} bytes exceeds the limit {self.limit}")
            end = start + _HEAD.size + sig_len + length
            if len(buffer) < end:
                break
            sig_start = start + _HEAD.size
            signature = bytes(buffer[sig_start : sig_start + sig_len]).decode("ascii", "replace")
            frames.append((signature or None, bytes(buffer[sig_start + sig_len : end])))
            start = end
        if start:
            del buffer[:start]
        return frames


def opening_payload(sender: str, recipient: str, time_ms: int, nonce: str) -> dict[str, object]:
    return {"from": sender, "nonce": nonce, "time_ms": time_ms, "to": recipient}


def sign_opening(key: Keypair, chain_id: str, recipient: str) -> tuple[str, str]:
    """A fresh opening for a stream to `recipient`: (OPENING_HEADER value, signature)."""
    time_ms, nonce = int(time.time() * 1000), secrets.token_hex(16)
    payload = opening_payload(key.address, recipient, time_ms, nonce)
    return f"{time_ms}:{nonce}", key.sign(STREAM_KIND, chain_id, payload)


class OpeningGuard:
    """Checks stream openings addressed to one node: signature, freshness, no replay.

    Nonces are remembered for as long as their timestamp is acceptable (2 × MAX_SKEW_MS), so
    a replayed opening is refused either as seen or as stale.
    """

    def __init__(self, chain_id: str, address: str, skew_ms: int = MAX_SKEW_MS) -> None:
        self.chain_id = chain_id
        self.address = address
        self.skew_ms = skew_ms
        self._seen: set[str] = set()
        self._expiry: deque[tuple[int, str]] = deque()

    def check(self, sender: str, opening: str, signature: str, now_ms: int | None = None) -> str:
        """ "" when the opening is acceptable (and records its nonce), else why it is not."""
        now = int(time.time() * 1000) if now_ms is None else now_ms
        stamp, _, nonce = opening.partition(":")
        if not (stamp.isascii() and stamp.isdigit() and 16 <= len(nonce) <= 64 and nonce.isalnum()):
            return "the stream opening must be <time_ms>:<nonce>"
        time_ms = int(stamp)
        if abs(now - time_ms) > self.skew_ms:
            return f"the stream opening is {abs(now - time_ms)} ms away from this node's clock"
        payload = opening_payload(sender, self.address, time_ms, nonce)
        if not verify(sender, STREAM_KIND, self.chain_id, payload, signature):
            return "the stream opening's signature is not the sender's (or not for this node)"
        while self._expiry and self._expiry[0][0] < now:
            self._seen.discard(self._expiry.popleft()[1])
        if nonce in self._seen:
            return "this stream opening was used before"
        self._seen.add(nonce)
        self._expiry.append((now + 2 * self.skew_ms, nonce))
        return ""
