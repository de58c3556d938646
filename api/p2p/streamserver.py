"""The receiving end of a streaming peer lane: `POST /p2p/stream`, an ASGI fast path.

A peer opens one long-lived chunked POST per lane; this path checks the opening (sender, its
signature, freshness, replay: `api.p2p.stream.OpeningGuard`), answers 200 at once and then
reads the body as it arrives — uvicorn's h11 protocol hands each received piece of a chunked
body to `receive()` as an `http.request` event with `more_body=True` — and handles every frame
as soon as it is complete, with `Node.receive_batch` as `/p2p/batch` does. There is no answer
per frame: the stream's 200 head is the only one, and its body (empty) ends only when this
node drops the stream (a bad frame, its partition switch, its shutdown) — which the sender
sees as end of file and answers by opening a new stream. The answer carries
`Connection: close`, so ending it also closes the connection.

uvicorn waits up to its graceful-shutdown timeout for open requests before stopping; streams
never end by themselves, so on SIGTERM/SIGINT (`_ShutdownHook`) this module ends them first.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
from typing import Any

from fastapi import HTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from api.core.errors import error_response
from api.core.node import Node
from api.core.trace import trace
from api.p2p.stream import OPENING_HEADER, STREAM_PATH, FrameReader, OpeningGuard
from api.p2p.transport import FROM_HEADER, SIG_HEADER, check_batch_signature
from ledger.errors import LedgerError

log = logging.getLogger(__name__)

_HEADERS = [(b"content-type", b"application/octet-stream"), (b"connection", b"close")]


class StreamEnded(Exception):
    """This node drops the stream (the sender opens a new one)."""


class StreamFastPath:
    """ASGI middleware taking POST /p2p/stream before FastAPI's router (not in OpenAPI:
    it is not a request/response route)."""

    def __init__(self, app: ASGIApp, node: Node) -> None:
        self.app = app
        self.node = node
        self.guard = OpeningGuard(node.genesis.chain_id, node.key.address)
        self.shutdown = _ShutdownHook()
        self.active = 0
        """Streams open right now (tests, diagnostics)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not (
            scope["type"] == "http" and scope["path"] == STREAM_PATH and scope["method"] == "POST"
        ):
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        try:
            sender = self.check_opening(headers)
        except HTTPException as exc:
            refusal = error_response(exc.status_code, str(exc.detail), "http")
            refusal.headers["connection"] = "close"  # its body is never read
            await refusal(scope, receive, send)
            return
        await send({"type": "http.response.start", "status": 200, "headers": _HEADERS})
        self.active += 1
        try:
            with self.shutdown.watching():
                await self.serve(sender, receive)
        except asyncio.CancelledError:
            if not self.shutdown.closing:
                raise
        finally:
            self.active -= 1
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    def check_opening(self, headers: dict[str, str]) -> str:
        """The sender of an acceptable opening; HTTPException (403/401/503) otherwise."""
        node = self.node
        sender = headers.get(FROM_HEADER.lower(), "")
        if sender not in node.genesis.validator_addresses or sender == node.key.address:
            raise HTTPException(403, "streams are accepted only from the other genesis validators")
        if node.peers.isolated:
            raise HTTPException(503, "this node is partitioned away (test admin switch)")
        if self.shutdown.closing:
            raise HTTPException(503, "this node is shutting down")
        why = self.guard.check(
            sender, headers.get(OPENING_HEADER.lower(), ""), headers.get(SIG_HEADER.lower(), "")
        )
        if why:
            raise HTTPException(401, why)
        return sender

    async def serve(self, sender: str, receive: Receive) -> None:
        """Handle the frames of one stream until it ends or this node drops it."""
        node = self.node
        chain_id = node.genesis.chain_id
        frames = FrameReader(node.settings.max_body_bytes * 4)
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # http.disconnect: the sender went away
            if node.peers.isolated:
                return
            try:
                for signature, body in frames.feed(message.get("body", b"")):
                    trace("frame_in", frm=sender[:6], n=len(body))
                    if signature is not None and not check_batch_signature(
                        sender, chain_id, body, signature
                    ):
                        raise StreamEnded("a frame's signature is not the sender's")
                    _, _, deliver = node.receive_batch(sender, body, signed=signature is not None)
                    deliver()
            except (StreamEnded, LedgerError) as exc:
                log.warning("dropping the stream from %s: %s", sender[:12], exc)
                return
            if not message.get("more_body", False):
                if frames.pending:
                    log.warning("the stream from %s ended inside a frame", sender[:12])
                return


class _ShutdownHook:
    """Ends open streams when the process is asked to stop.

    uvicorn's graceful shutdown waits for open requests before it runs the lifespan shutdown;
    a stream never ends by itself, so every stop would wait out the graceful timeout. On the
    first stream this wraps the SIGTERM/SIGINT handlers (uvicorn's, installed by then) so that
    a signal also cancels the stream tasks, which end their answers and return.
    """

    def __init__(self) -> None:
        self.closing = False
        self._tasks: set[asyncio.Task[Any]] = set()
        self._installed = False

    def watching(self) -> _Watching:
        self._install()
        return _Watching(self)

    def _install(self) -> None:
        if self._installed or threading.current_thread() is not threading.main_thread():
            return  # signal handlers can only be set from the main thread (not in TestClient)
        self._installed = True
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous = signal.getsignal(sig)

            def handler(signum: int, frame: Any, previous: Any = previous) -> None:
                self.closing = True
                loop.call_soon_threadsafe(self._cancel_all)
                if callable(previous):
                    previous(signum, frame)
                else:  # no handler before ours: behave as if ours were not there
                    signal.signal(signum, previous)
                    os.kill(os.getpid(), signum)

            signal.signal(sig, handler)

    def _cancel_all(self) -> None:
        for task in list(self._tasks):
            task.cancel()


class _Watching:
    def __init__(self, hook: _ShutdownHook) -> None:
        self.hook = hook
        self.task: asyncio.Task[Any] | None = None

    def __enter__(self) -> None:
        self.task = asyncio.current_task()
        if self.task is not None:
            self.hook._tasks.add(self.task)

    def __exit__(self, *exc: object) -> None:
        if self.task is not None:
            self.hook._tasks.discard(self.task)
