"""Reading request bodies with a size limit, before anything is parsed or allocated."""

from __future__ import annotations

from typing import Any

from fastapi import HTTPException, Request
from starlette.requests import ClientDisconnect

from api.core.errors import PayloadTooLarge
from ledger.encoding import parse_json


async def read_limited(request: Request, limit: int) -> bytes:
    """The raw body, refused with 413 as soon as it is known to exceed `limit` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isascii() and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(int(declared), limit)
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(size, limit)
            chunks.append(chunk)
    except ClientDisconnect:
        raise HTTPException(400, "the client went away before sending the whole body") from None
    return b"".join(chunks)


async def read_json(request: Request, limit: int) -> Any:
    """The body parsed as JSON without floats or duplicate keys (EncodingError → 400)."""
    return parse_json(await read_limited(request, limit))
