"""`BatchLoop`: one background task that sends, as one request, whatever queued while the last
request was in flight.

The miner's `TxSender` (txs → `POST /txs/batch`) and `Uploader` (outputs → `POST /tensors/batch`)
both work this way: callers queue an item and await its future; the loop takes a batch, sends it,
and resolves each item's future. A `LedgerError` from a send fails the batch's unresolved futures
(after `_failed`, a hook for state the failure invalidates); the loop carries on.
"""

from __future__ import annotations

import asyncio
from typing import Generic, TypeVar

from ledger.errors import LedgerError

P = TypeVar("P")
R = TypeVar("R")


class BatchLoop(Generic[P, R]):
    """Queue of (payload, future) items sent in batches by one task (see the module doc)."""

    name = "batch-loop"

    def __init__(self) -> None:
        self._queue: list[tuple[P, asyncio.Future[R]]] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name=self.name)

    def _enqueue(self, payloads: list[P]) -> list[asyncio.Future[R]]:
        """Queue `payloads` (in this order) and wake the loop; their futures."""
        self.start()
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[R]] = []
        for payload in payloads:
            future: asyncio.Future[R] = loop.create_future()
            self._queue.append((payload, future))
            futures.append(future)
        self._wake.set()
        return futures

    async def _cancel(self) -> None:
        """Stop the loop task (what is still queued stays queued)."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    def _take(self) -> list[tuple[P, asyncio.Future[R]]]:
        """The queued items for one send (default: all of them)."""
        batch, self._queue = self._queue, []
        return batch

    async def _send(self, batch: list[tuple[P, asyncio.Future[R]]]) -> None:
        """Send `batch` and resolve its futures."""
        raise NotImplementedError

    def _failed(self, exc: LedgerError) -> None:
        """A send raised `exc` (before its batch's futures fail)."""

    async def _loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                batch = self._take()
                try:
                    await self._send(batch)
                except LedgerError as exc:
                    self._failed(exc)
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
