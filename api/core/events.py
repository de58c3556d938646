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
        self._changed = asyncio.Condition()
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

    async def publish(self, event: dict[str, Any]) -> None:
        self.last = event
        for queue in self._subscribers:
            if queue.full():
                queue.get_nowait()
            queue.put_nowait(event)
        async with self._changed:
            self._changed.notify_all()

    async def wait(self, timeout: float) -> bool:
        """Wait for the next published event; False on timeout."""
        try:
            async with self._changed:
                await asyncio.wait_for(self._changed.wait(), timeout)
            return True
        except TimeoutError:
            return False
