"""The block fan-out (`api.core.events.EventHub`): waiters and subscribers see every publish."""

from __future__ import annotations

import asyncio

from api.core.events import SUBSCRIBER_QUEUE, EventHub


def test_a_publish_wakes_every_waiter_and_reaches_every_subscriber() -> None:
    async def run() -> tuple[list[bool], dict[str, int], bool]:
        hub = EventHub()
        queue = hub.subscribe()
        waiters = [asyncio.create_task(hub.wait(5)) for _ in range(20)]
        await asyncio.sleep(0)  # all waiting
        hub.publish({"height": 1})
        woken = await asyncio.gather(*waiters)
        late = await hub.wait(0.05)  # a waiter after the publish waits for the next one
        return woken, queue.get_nowait(), late

    woken, event, late = asyncio.run(run())
    assert woken == [True] * 20
    assert event == {"height": 1}
    assert late is False


def test_a_slow_subscriber_loses_the_oldest_events() -> None:
    async def run() -> list[int]:
        hub = EventHub()
        queue = hub.subscribe()
        for height in range(SUBSCRIBER_QUEUE + 5):
            hub.publish({"height": height})
        return [queue.get_nowait()["height"] for _ in range(queue.qsize())]

    heights = asyncio.run(run())
    assert (
        len(heights) == SUBSCRIBER_QUEUE and heights[0] == 5 and heights[-1] == SUBSCRIBER_QUEUE + 4
    )
