"""Byzantine validators for the simulator: an honest replica inside, lies on the way out.

Each behaviour rewrites the honest replica's outgoing actions (or adds messages of its own), so
the lies are well-formed and correctly signed where that makes them dangerous:

    equivocate  as primary, sends one block to half the validators and another to the rest
    conflict    votes for every proposal it sees, and for made-up hashes, different ones to
                different validators
    withhold    its VIEW-CHANGEs report no prepared certificates
    badsig      corrupts the signature of some messages
    garbage     sends undecodable wire data and nonsense messages (wrong types, wrong signer)
    replay      re-sends old messages it received, long after
    silence     sends nothing at all
    censor      as primary, never proposes some clients' txs
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from ledger.consensus import events as ev
from ledger.consensus.messages import (
    Checkpoint,
    Commit,
    NewView,
    Prepare,
    PrePrepare,
    ViewChange,
    sign_message,
)
from ledger.consensus.replica import Replica
from ledger.consensus.simapp import SimBlock
from ledger.identity import Keypair

BYZANTINE_KINDS = (
    "equivocate",
    "conflict",
    "withhold",
    "badsig",
    "garbage",
    "replay",
    "silence",
    "censor",
)


class CensoringApp:
    """Wraps an app; leaves out every tx whose number is a multiple of 3 when proposing."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def propose(
        self,
        height: int,
        view: int,
        prev_hash: str,
        txs: Sequence[tuple[str, Any]],
        proposer: str,
        time_ms: int,
    ) -> Any:
        kept = [(h, b) for h, b in txs if not (isinstance(b, dict) and b.get("n", 1) % 3 == 0)]
        return self.inner.propose(height, view, prev_hash, kept, proposer, time_ms)

    def check(self, block: Any, view: int, proposer: str) -> Any:
        return self.inner.check(block, view, proposer)

    def heartbeat_due(self, height: int, now_ms: int) -> bool:
        return bool(self.inner.heartbeat_due(height, now_ms))

    def tx_committed(self, tx_hash: str) -> bool:
        return bool(self.inner.tx_committed(tx_hash))


def _corrupt(signature: str) -> str:
    last = "0" if signature[-1:] != "0" else "1"
    return signature[:-1] + last


class Byzantine:
    """Drives an honest `Replica` and turns its output into `kinds` of misbehaviour."""

    def __init__(
        self,
        replica: Replica,
        kinds: frozenset[str],
        rng: random.Random,
        peers: tuple[str, ...],
    ) -> None:
        self.replica = replica
        self.kinds = kinds
        self.rng = rng
        self.peers = peers
        self.key: Keypair = replica.key
        self.chain_id = replica.cfg.chain_id
        self.heard: list[Any] = []
        self.outsider = Keypair.from_seed(bytes([rng.randrange(256)]) * 32)

    # Outputs are (destination or None for everyone, message or raw wire dict) pairs; other
    # actions (timers, persist, commit, fetch) pass through.
    def transform(self, actions: list[Any]) -> list[Any]:
        out: list[Any] = []
        for action in actions:
            if isinstance(action, ev.Broadcast | ev.Send):
                if "silence" in self.kinds:
                    continue
                out.extend(self._lie(action))
            else:
                out.append(action)
        if "garbage" in self.kinds and self.rng.random() < 0.2:
            out.extend(self._garbage())
        if "replay" in self.kinds and self.heard and self.rng.random() < 0.3:
            old = self.heard[self.rng.randrange(len(self.heard))]
            out.append(ev.Send(self.rng.choice(self.peers), old))
        return out

    def hear(self, msg: Any) -> list[Any]:
        """Note a received message; return extra lies it provokes (sent as they are)."""
        if "replay" in self.kinds and len(self.heard) < 500:
            self.heard.append(msg)
        if "conflict" in self.kinds and isinstance(msg, PrePrepare):
            # Vote for every proposal seen, so equivocated twins both gather support.
            fields = {"view": msg.view, "height": msg.height, "block_hash": msg.block_hash}
            return [
                ev.Broadcast(self._sign(Prepare, **fields)),
                ev.Broadcast(self._sign(Commit, **fields)),
            ]
        return []

    def _sign(self, cls: type, **fields: Any) -> Any:
        return sign_message(self.key, self.chain_id, cls, **fields)

    def _lie(self, action: ev.Broadcast | ev.Send) -> list[Any]:
        msg = action.msg
        targets = self.peers if isinstance(action, ev.Broadcast) else (action.to,)
        out: list[Any] = []
        if "equivocate" in self.kinds and isinstance(msg, PrePrepare):
            block = msg.block
            twin = SimBlock(
                block.height,
                block.view,
                block.prev_hash,
                block.proposer,
                block.time_ms + 1,
                block.txs,
            )
            other = self._sign(
                PrePrepare, view=msg.view, height=msg.height, block_hash=twin.hash, block=twin
            )
            for i, to in enumerate(targets):
                out.append(ev.Send(to, msg if i % 2 == 0 else other))
            return out
        if "conflict" in self.kinds and isinstance(msg, Prepare | Commit):
            for to in targets:
                if self.rng.random() < 0.5:
                    fake = format(self.rng.getrandbits(256), "064x")
                    out.append(
                        ev.Send(
                            to,
                            self._sign(
                                type(msg), view=msg.view, height=msg.height, block_hash=fake
                            ),
                        )
                    )
                else:
                    out.append(ev.Send(to, msg))
            return out
        if "withhold" in self.kinds and isinstance(msg, ViewChange) and msg.prepared:
            msg = self._sign(
                ViewChange,
                view=msg.view,
                stable_height=msg.stable_height,
                stable_hash=msg.stable_hash,
                checkpoint_proof=msg.checkpoint_proof,
                prepared=(),
            )
        if "badsig" in self.kinds and self.rng.random() < 0.4:
            msg = _with_signature(msg, _corrupt(msg.signature))
        return [ev.Send(to, msg) for to in targets]

    def _garbage(self) -> list[Any]:
        to = self.rng.choice(self.peers)
        r = self.rng.randrange(6)
        view, height = self.replica.view, self.replica.committed_height + 1
        if r == 0:
            return [ev.Send(to, {"type": "prepare", "view": "x", "height": -1})]
        if r == 1:
            return [ev.Send(to, {"type": "teleport", "payload": [1, 2, 3]})]
        if r == 2:  # a vote signed by a key outside the validator set
            msg = sign_message(
                self.outsider, self.chain_id, Prepare, view=view, height=height, block_hash="a" * 64
            )
            return [ev.Send(to, msg)]
        if r == 3:  # far outside the watermarks
            return [ev.Send(to, self._sign(Commit, view=view, height=10**9, block_hash="b" * 64))]
        if r == 4:  # a checkpoint for a block nobody committed, and an empty NEW-VIEW
            cp = self._sign(Checkpoint, height=4 * self.rng.randrange(1, 50), block_hash="c" * 64)
            nv = self._sign(NewView, view=view + 1, view_changes=(), pre_prepares=())
            return [ev.Send(to, cp), ev.Send(to, nv)]
        vc = self._sign(
            ViewChange,
            view=view + self.rng.randrange(1, 4),
            stable_height=4,
            stable_hash="d" * 64,
            checkpoint_proof=(),
            prepared=(),
        )
        return [ev.Send(to, vc)]


def _with_signature(msg: Any, signature: str) -> Any:
    fields = {k: v for k, v in msg.__dict__.items() if not k.startswith("_")}
    fields["signature"] = signature
    return type(msg)(**fields)
