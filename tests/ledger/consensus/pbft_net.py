"""A tiny hand-driven network for unit tests of the replica: FIFO delivery, explicit drops.

(A uniquely named module rather than conftest.py, which other test folders also have.)
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

from ledger.consensus import events as ev
from ledger.consensus.config import ConsensusConfig
from ledger.consensus.messages import Verifier
from ledger.consensus.replica import Replica
from ledger.consensus.simapp import SimApp, make_tx
from ledger.encoding import digest
from ledger.identity import Keypair

Drop = Callable[[int, int, Any], bool]


class Net:
    """n replicas wired together; tests decide what is delivered and which timers fire."""

    def __init__(self, n: int = 4, *, apps: dict[int, Any] | None = None, **cfg: Any) -> None:
        self.keys = [Keypair.from_seed(bytes([i + 1]) * 32) for i in range(n)]
        self.addresses = tuple(k.address for k in self.keys)
        self.index = {a: i for i, a in enumerate(self.addresses)}
        params = {"checkpoint_interval": 4, "watermark_window": 8, "max_block_txs": 8}
        params.update(cfg)
        self.cfg = ConsensusConfig(
            chain_id="test-chain",
            validators=self.addresses,
            genesis_hash=digest({"test-genesis": n}),
            **params,
        )
        self.verifier = Verifier()
        self.stores: list[list[tuple[Any, Any]]] = [[] for _ in range(n)]
        self.committed: list[set[str]] = [set() for _ in range(n)]
        self.records: list[list[Any]] = [[] for _ in range(n)]
        self.timers: list[dict[str, int]] = [{} for _ in range(n)]
        self.fetches: list[list[ev.FetchBlocks]] = [[] for _ in range(n)]
        self.sent: list[list[Any]] = [[] for _ in range(n)]
        self.queue: deque[tuple[int, int, Any]] = deque()
        self.apps = apps or {}
        self.replicas = [self.boot(i) for i in range(n)]
        for i in range(n):
            self.perform(i, self.replicas[i].start())

    def app(self, i: int) -> Any:
        return self.apps.get(i) or SimApp(self.committed[i].__contains__)

    def boot(self, i: int, **kwargs: Any) -> Replica:
        store = self.stores[i]
        return Replica(
            self.cfg,
            self.keys[i],
            self.app(i),
            records=list(self.records[i]),
            committed_height=len(store),
            committed_hashes={b.height: b.hash for b, _ in store},
            verifier=self.verifier,
            **kwargs,
        )

    def perform(self, i: int, actions: list[Any]) -> None:
        for action in actions:
            if isinstance(action, ev.Persist):
                self.records[i].append(action.record)
            elif isinstance(action, ev.Broadcast):
                self.sent[i].append(action.msg)
                for j in range(len(self.replicas)):
                    if j != i:
                        self.queue.append((i, j, action.msg))
            elif isinstance(action, ev.Send):
                self.sent[i].append(action.msg)
                self.queue.append((i, self.index[action.to], action.msg))
            elif isinstance(action, ev.SetTimer):
                self.timers[i][action.timer_id] = action.delay_ms
            elif isinstance(action, ev.CancelTimer):
                self.timers[i].pop(action.timer_id, None)
            elif isinstance(action, ev.Commit):
                self.stores[i].append((action.block, action.certificate))
                self.committed[i].update(action.block.tx_hashes)
            elif isinstance(action, ev.FetchBlocks):
                self.fetches[i].append(action)

    def step(self, i: int, event: Any) -> list[Any]:
        actions = self.replicas[i].step(event)
        self.perform(i, actions)
        return actions

    def submit(self, *numbers: int, to: tuple[int, ...] | None = None) -> list[str]:
        hashes = []
        for k in numbers:
            tx_hash, body = make_tx(k)
            hashes.append(tx_hash)
            for i in to if to is not None else range(len(self.replicas)):
                self.step(i, ev.ClientTx(tx_hash, body))
        return hashes

    def run(self, drop: Drop | None = None, limit: int = 100_000) -> None:
        """Deliver queued messages (FIFO) until none are left, skipping those `drop` rejects."""
        while self.queue and limit:
            limit -= 1
            src, dst, msg = self.queue.popleft()
            if drop is not None and drop(src, dst, msg):
                continue
            self.step(dst, ev.Received(msg))

    def fire(self, i: int, timer_id: str = "view") -> None:
        self.timers[i].pop(timer_id, None)
        self.step(i, ev.TimerFired(timer_id))

    def heights(self) -> list[int]:
        return [len(s) for s in self.stores]
