"""The consensus driver: runs the pure PBFT core (`Replica.step`) against the real world.

It turns network input, client txs, clock and timers into events, and performs the actions the
core returns, honouring the host contract of `ledger.consensus.events`:

* **persist before send**: `Persist` records go to the write-ahead log; the log is fsync'd before
  the first `Send`/`Broadcast`/`Commit` that follows them (one fsync per step batch, not per
  message). With `flush_in_thread` (the node's setting) the fsync runs in a thread of its own and
  the actions behind it wait, in order, in an outbox until it is done, while the event loop goes
  on serving requests and stepping the core (whose new actions queue behind): a validator's
  event loop used to stop for two fsyncs per block (0.5–5 ms each on a busy disk);
* timers are asyncio timer handles keyed by id (`SetTimer` replaces, `CancelTimer` stops);
* `Commit` hands the block and certificate to the chain (stored and executed in height order),
  then feeds `AppReady(height)` back so the core can propose or check the next height;
* `FetchBlocks` starts a state-transfer request to a peer; the answer comes back as
  `BlocksFetched`.

Everything but the fsync runs on the event loop thread, so the core is never stepped
concurrently.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Protocol

from api.core.trace import describe, trace
from ledger.consensus.events import (
    Broadcast,
    CancelTimer,
    Commit,
    Event,
    FetchBlocks,
    Persist,
    Send,
    SetTimer,
    TimeAdvanced,
    TimerFired,
)

log = logging.getLogger(__name__)


class Core(Protocol):
    def step(self, event: Any) -> list[Any]: ...


class Host(Protocol):
    """What the driver needs from the node around it."""

    def persist(self, record: Any) -> None: ...
    def flush(self) -> None: ...
    def send(self, to: str, msg: Any) -> None: ...
    def broadcast(self, msg: Any) -> None: ...
    def commit(self, block: Any, certificate: Any) -> None: ...
    def fetch_blocks(self, from_height: int, peers: tuple[str, ...]) -> None: ...


class ConsensusDriver:
    """Feeds events to the core and performs its actions; one instance per node."""

    def __init__(
        self,
        core: Core,
        host: Host,
        now_ms: Callable[[], int] | None = None,
        *,
        flush_in_thread: bool = False,
    ) -> None:
        self.core = core
        self.host = host
        self._now_ms = now_ms or (lambda: int(time.time() * 1000))
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._queue: deque[Any] = deque()
        self._running = False
        self._outbox: deque[Any] = deque()
        """Actions not yet performed, in order (behind a flush in progress)."""
        self._persisted = 0
        """Persist records handed to the host so far."""
        self._durable = 0
        """Of those, how many a finished flush covers."""
        self._flusher = ThreadPoolExecutor(1, "wal-fsync") if flush_in_thread else None
        self._flushing = False
        self._last_ms = 0
        self.steps = 0
        self.last_step_monotonic = time.monotonic()
        self.errors = 0

    def feed(self, events: Iterable[Event]) -> None:
        """Step the core with `events` (and whatever follows from them), then perform actions."""
        self._queue.extend(events)
        if self._running:
            return  # re-entrant call from an action: the outer loop drains the queue
        self._running = True
        try:
            first = True
            while first or self._queue:
                first = False
                batch = list(self._queue)
                self._queue.clear()
                self._step_batch(batch)
        finally:
            self._running = False

    def perform(self, actions: list[Any]) -> None:
        """Perform actions the host obtained from the core outside `step` (e.g. `start()`)."""
        if self._running:
            self._perform(actions)
            return
        self._running = True
        try:
            self._perform(actions)
        finally:
            self._running = False
        self.feed([])

    def _step_batch(self, events: list[Any]) -> None:
        now = self._now_ms()
        actions: list[Any] = []
        if now > self._last_ms:
            self._last_ms = now
            actions.extend(self._safe_step(TimeAdvanced(now)))
        for event in events:
            if trace.on:
                trace("step", ev=_event_name(event))
            actions.extend(self._safe_step(event))
        self.steps += len(events)
        self.last_step_monotonic = time.monotonic()
        self._perform(actions)

    def _safe_step(self, event: Any) -> list[Any]:
        try:
            return list(self.core.step(event))
        except Exception:  # a bug in the core must not kill the node's event loop
            self.errors += 1
            log.exception("consensus core failed on %s", type(event).__name__)
            return []

    def _perform(self, actions: list[Any]) -> None:
        self._outbox.extend(actions)
        self._drain()

    def _drain(self) -> None:
        """Perform outbox actions in order; stop at one that needs a flush still running."""
        outbox = self._outbox
        while outbox:
            action = outbox[0]
            if isinstance(action, Persist):
                outbox.popleft()
                self.host.persist(action.record)
                self._persisted += 1
                continue
            if isinstance(action, Send | Broadcast | Commit) and self._durable < self._persisted:
                if not self._flush():
                    return  # resumed by `_flushed` once the fsync is done
            outbox.popleft()
            self._do(action)
        if self._durable < self._persisted:
            self._flush()  # trailing records: durable soon, nothing waits for them

    def _flush(self) -> bool:
        """Make every persisted record durable: now (True), or in the flush thread (False)."""
        if self._flusher is None:
            self.host.flush()
            self._durable = self._persisted
            return True
        if not self._flushing:
            self._flushing = True
            target = self._persisted
            future = self._flusher.submit(self.host.flush)
            loop = asyncio.get_running_loop()
            future.add_done_callback(
                lambda done: loop.call_soon_threadsafe(self._flushed, done, target)
            )
        return False

    def _flushed(self, future: Future[None], target: int) -> None:
        self._flushing = False
        error = future.exception()
        if error is not None:
            # Nothing behind the flush may be sent; the next action that needs it retries.
            self.errors += 1
            log.error("consensus log fsync failed: %s", error)
            return
        self._durable = max(self._durable, target)
        self.perform([])  # drain the outbox, then the events that queued meanwhile

    def _do(self, action: Any) -> None:
        if trace.on and isinstance(action, Send | Broadcast | Commit):
            what = action.block if isinstance(action, Commit) else action.msg
            trace("act", act=type(action).__name__, msg=describe(what))
        if isinstance(action, Send):
            self.host.send(action.to, action.msg)
        elif isinstance(action, Broadcast):
            self.host.broadcast(action.msg)
        elif isinstance(action, SetTimer):
            self._set_timer(action.timer_id, action.delay_ms)
        elif isinstance(action, CancelTimer):
            handle = self._timers.pop(action.timer_id, None)
            if handle is not None:
                handle.cancel()
        elif isinstance(action, Commit):
            # The host feeds AppReady itself once the block is executed (it may have to
            # fetch a tensor first).
            self.host.commit(action.block, action.certificate)
        elif isinstance(action, FetchBlocks):
            self.host.fetch_blocks(action.from_height, tuple(action.peers))
        else:
            log.warning("unknown consensus action %r", action)

    def _set_timer(self, timer_id: str, delay_ms: int) -> None:
        old = self._timers.pop(timer_id, None)
        if old is not None:
            old.cancel()
        loop = asyncio.get_running_loop()
        self._timers[timer_id] = loop.call_later(max(delay_ms, 0) / 1000, self._fire, timer_id)

    def _fire(self, timer_id: str) -> None:
        self._timers.pop(timer_id, None)
        self.feed([TimerFired(timer_id)])

    def cancel_all(self) -> None:
        """Stop timers and the flush thread (the node is stopping: the outbox is dropped —
        what waited for a flush was never sent, which is what durability asks)."""
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
        self._outbox.clear()
        if self._flusher is not None:
            self._flusher.shutdown(wait=True)


def _event_name(event: Any) -> str:
    msg = getattr(event, "msg", None)
    if msg is not None:
        return f"{describe(msg)}/{getattr(msg, 'sender', '')[:6]}"
    return type(event).__name__
