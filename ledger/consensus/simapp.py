"""A stand-in block and application for the simulator and tests (the node uses ledger blocks).

`SimBlock` has what the core needs plus the header fields a real block has (view, proposer, time)
and carries its txs; its hash is computed from the content, so it cannot be forged. `SimApp`
checks txs against a client secret (standing in for client signatures) and against the host's
committed txs, and is always ready unless told to lag (to exercise WAIT).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ledger.consensus.app import OK, WAIT, Verdict, invalid
from ledger.encoding import digest
from ledger.errors import EncodingError

CLIENT_SECRET = b"layerchain-sim-client"


def make_tx(n: int, secret: bytes = CLIENT_SECRET) -> tuple[str, dict[str, Any]]:
    """The n-th simulated client tx: (tx_hash, body), authenticated by the client secret."""
    mac = hmac.new(secret, str(n).encode(), hashlib.sha256).hexdigest()[:32]
    body = {"n": n, "mac": mac}
    return digest(body), body


def tx_valid(tx_hash: str, body: Any, secret: bytes = CLIENT_SECRET) -> bool:
    if not isinstance(body, dict) or set(body) != {"n", "mac"} or not isinstance(body["n"], int):
        return False
    return make_tx(body["n"], secret) == (tx_hash, body)


@dataclass(frozen=True)
class SimBlock:
    """height, view, proposer, time, prev_hash, txs; hash = digest of all of them."""

    height: int
    view: int
    prev_hash: str
    proposer: str
    time_ms: int
    txs: tuple[tuple[str, Any], ...]
    hash: str = field(init=False, compare=False)
    tx_hashes: tuple[str, ...] = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "hash", digest(self.to_wire()))
        object.__setattr__(self, "tx_hashes", tuple(h for h, _ in self.txs))

    def to_wire(self) -> dict[str, Any]:
        return {
            "height": self.height,
            "view": self.view,
            "prev_hash": self.prev_hash,
            "proposer": self.proposer,
            "time_ms": self.time_ms,
            "txs": [[h, b] for h, b in self.txs],
        }

    @classmethod
    def from_wire(cls, raw: Any) -> SimBlock:
        try:
            txs = tuple((str(h), b) for h, b in raw["txs"])
            return cls(
                int(raw["height"]),
                int(raw["view"]),
                str(raw["prev_hash"]),
                str(raw["proposer"]),
                int(raw["time_ms"]),
                txs,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise EncodingError(f"malformed simulated block: {exc}") from exc


class SimApp:
    """Builds and checks SimBlocks. `committed` answers "is this tx in my store?"."""

    def __init__(
        self,
        committed: Callable[[str], bool],
        *,
        executed: Callable[[], int] | None = None,
        secret: bytes = CLIENT_SECRET,
        heartbeat_ms: int = 0,
        clock: Callable[[], int] | None = None,
        last_commit: Callable[[], int] | None = None,
    ) -> None:
        """`heartbeat_ms` > 0 plays a chain whose deadlines always wait on the next height, as
        the node's `api.core.heartbeat` does while a job is live: a heartbeat (empty block) is
        due `heartbeat_ms` after the host's last commit (`last_commit`, on the host's `clock`),
        and an empty block is acceptable after half that."""
        self._committed = committed
        self._executed = executed
        self._secret = secret
        self._heartbeat_ms = heartbeat_ms
        self._clock = clock or (lambda: 0)
        self._last_commit = last_commit or (lambda: 0)

    def _waited(self, now_ms: int, at_least: int) -> bool:
        return self._heartbeat_ms > 0 and now_ms - self._last_commit() >= at_least

    def _ready(self, height: int) -> bool:
        return self._executed is None or self._executed() >= height - 1

    def propose(
        self,
        height: int,
        view: int,
        prev_hash: str,
        txs: Sequence[tuple[str, Any]],
        proposer: str,
        time_ms: int,
    ) -> SimBlock | None:
        if not self._ready(height):
            return None
        if not txs:  # the core asks for a heartbeat only when `heartbeat_due` said so
            return SimBlock(height, view, prev_hash, proposer, time_ms, ())
        chosen = tuple(
            (h, b) for h, b in txs if tx_valid(h, b, self._secret) and not self._committed(h)
        )
        if not chosen:
            return None
        return SimBlock(height, view, prev_hash, proposer, time_ms, chosen)

    def check(self, block: Any, view: int, proposer: str) -> Verdict:
        if not isinstance(block, SimBlock):
            return invalid("not a SimBlock")
        if block.view != view or block.proposer != proposer:
            return invalid("header names another view or proposer")
        if not self._ready(block.height):
            return WAIT
        if not block.txs:
            if self._waited(self._clock(), self._heartbeat_ms // 2):
                return OK
            return invalid("empty block, while no heartbeat is due")
        for tx_hash, body in block.txs:
            if not tx_valid(tx_hash, body, self._secret):
                return invalid(f"tx {tx_hash[:12]} is not a valid client tx")
            if self._committed(tx_hash):
                return invalid(f"tx {tx_hash[:12]} is already committed")
        return OK

    def heartbeat_due(self, height: int, now_ms: int) -> bool:
        return self._waited(now_ms, self._heartbeat_ms)

    def tx_committed(self, tx_hash: str) -> bool:
        return self._committed(tx_hash)
