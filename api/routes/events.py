"""Server-sent events: one `block` event per committed block."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from api.deps import NodeDep

router = APIRouter(tags=["events"])

HEARTBEAT_S = 15.0


@router.get(
    "/events",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "SSE stream"}},
)
async def events(request: Request, node: NodeDep) -> StreamingResponse:
    """Stream committed blocks as `event: block` with a JSON summary (height, hash, n_txs, ...)."""
    queue = node.events.subscribe()

    async def stream() -> AsyncIterator[bytes]:
        try:
            head = node.status()
            hello = {"height": head["height"], "hash": head["last_block_hash"]}
            yield f"event: head\ndata: {json.dumps(hello)}\n\n".encode()
            while not await request.is_disconnected():
                try:
                    event = await asyncio.wait_for(queue.get(), HEARTBEAT_S)
                except TimeoutError:
                    yield b": keep-alive\n\n"
                    continue
                yield f"id: {event['height']}\nevent: block\ndata: {json.dumps(event)}\n\n".encode()
        finally:
            node.events.unsubscribe(queue)

    return StreamingResponse(
        stream(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
