"""Fan-out of committed blocks to whoever waits: SSE subscribers and long-polling miners.

Each subscriber gets its own bounded queue; a subscriber too slow to keep up loses the oldest
events rather than slowing the node down (the stream carries heights, so a client can notice a gap
and fetch the missing blocks over REST).
"""

from __future__ import annotations

import asyncio
from typing import Any

SUBSCRIBER_QUEUE = 256


class EventHub:
    """Publish committed-block summaries; subscribe with a queue, or wait for the next one."""

    def __init__(self) -> None:
        self._subscribers: set[asyncio.Queue[dict[str, Any]]] = set()
        self._next = asyncio.Event()
        """Set (and replaced) at each publish: every waiter wakes in the same loop turn, without
        taking a lock one after the other as a Condition's waiters do."""
        self.last: dict[str, Any] | None = None

    def subscribe(self) -> asyncio.Queue[dict[str, Any]]:
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(SUBSCRIBER_QUEUE)
        self._subscribers.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[dict[str, Any]]) -> None:
        self._subscribers.discard(queue)

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    def publish(self, event: dict[str, Any]) -> None:
        """Hand `event` to every subscriber and wake every waiter (synchronous: called from the
        commit path, so long-polls answer in the next loop turn, not after a task of its own)."""
        self.last = event
        for queue in self._subscribers:
            if queue.full():
                queue.get_nowait()
            queue.put_nowait(event)
        woken, self._next = self._next, asyncio.Event()
        woken.set()

    async def wait(self, timeout: float) -> bool:
        """Wait for the next published event; False on timeout."""
        try:
            await asyncio.wait_for(self._next.wait(), timeout)
            return True
        except TimeoutError:
            return False
