"""The narrow interface between the consensus core and the blocks it orders.

Blocks are opaque to the core: it needs only a height, a link to the previous block, a hash that
binds the content, and the tx hashes inside (to keep a tx from being ordered twice). The host
supplies an `Application` that builds and checks blocks; it must be deterministic, because every
honest replica has to reach the same verdict on the same block.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol


class Block(Protocol):
    """What the core reads from a block. `hash` must be the digest of the whole content."""

    @property
    def height(self) -> int: ...

    @property
    def prev_hash(self) -> str: ...

    @property
    def hash(self) -> str: ...

    @property
    def tx_hashes(self) -> Sequence[str]: ...


@dataclass(frozen=True)
class Verdict:
    """The application's opinion of a proposed block."""

    status: Literal["ok", "wait", "invalid"]
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "ok"


OK = Verdict("ok")
WAIT = Verdict("wait")
"""Not decidable yet (the host has not executed height - 1): the core asks again on AppReady."""


def invalid(reason: str) -> Verdict:
    """A block no honest replica may vote for, with the reason (logged by the host)."""
    return Verdict("invalid", reason)


class Application(Protocol):
    """Builds and checks blocks for the core. Pure and deterministic given the host's state."""

    def propose(
        self,
        height: int,
        view: int,
        prev_hash: str,
        txs: Sequence[tuple[str, Any]],
        proposer: str,
        time_ms: int,
    ) -> Block | None:
        """Build the block at `height` from (a subset of) `txs`, or None to WAIT.

        `txs` are (tx_hash, tx) pairs the core holds that are neither committed nor in an
        uncommitted ancestor (at most max_block_txs of them, oldest first). None means WAIT: the
        host cannot build the block yet (its header needs the state after height - 1) or none
        of `txs` may go in now; the core retries on `AppReady`, on the next commit and on the
        next client tx.
        """
        ...

    def check(self, block: Any, view: int, proposer: str) -> Verdict:
        """Validate a block pre-prepared in `view` by `proposer` (the primary of that view).

        The core has already checked the height, the prev_hash link and that no tx repeats one of
        an uncommitted ancestor; the application checks everything else (well-formed, correctly
        signed txs, none already committed, header fields such as app_hash and time).
        """
        ...

    def heartbeat_due(self, height: int, now_ms: int) -> bool:
        """Should the primary propose an empty block at `height` now?

        Asked only when the core holds no tx to propose and `height - 1` is committed. An idle
        chain never advances, so without a heartbeat a deadline counted in blocks would never
        pass (a job whose miners vanished stays open for ever). The host says yes when its
        state has something waiting on the height and no block came for a while; when it
        proposes the empty block, `propose` is called with no txs.
        """
        ...

    def tx_committed(self, tx_hash: str) -> bool:
        """True when `tx_hash` is in a block the host has committed (so it is never re-proposed)."""
        ...


def held_txs(app: Any) -> int:
    """How many txs the host holds for this replica but has not handed to it yet.

    Optional part of the `Application` protocol: a method `held_txs() -> int`. A node admits
    txs before it feeds them to the core (signature checks, a nonce gap waiting to fill), so
    under load the txs waiting *at this validator* can be many more than the core's pending
    set. The view timer counts them when it decides whether a tx left out was queued behind a
    backlog or censored. Hosts without such a queue (the simulator) need not implement it.
    """
    held = getattr(app, "held_txs", None)
    return max(0, int(held())) if callable(held) else 0
