"""A minimal keep-alive HTTP/1.1 client (one connection, one request at a time).

Why not httpx: the validators' peer lanes exchange a request per consensus phase with every
other validator, and a miner makes several requests per job; httpx spends ~650 µs of CPU per
request on this machine, while writing the request and parsing the answer on a raw asyncio
stream costs ~30 µs. Used by the node's peer lanes (`api.p2p`) and, through `rawhttp.pool`, by
`miner.client.NodeClient`. It speaks only what those need: a request with a body of known
length, an answer with a `Content-Length` or chunked body.

Errors are raised as httpx's own exception types (`httpx.ConnectError`, `httpx.ReadError`,
`httpx.ReadTimeout`, ...), so callers handle both clients alike.
"""

from __future__ import annotations

import asyncio
import json
import socket
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

#: Largest response body accepted by default (peers answer /p2p/batch with a few bytes of JSON).
MAX_RESPONSE = 1 << 20


#: What can go wrong on the wire of a raw exchange (a timeout, a broken connection, a garbled
#: answer); `as_httpx_error` maps each to the httpx exception type callers already handle.
WIRE_ERRORS = (
    TimeoutError,
    asyncio.IncompleteReadError,
    ConnectionError,
    OSError,
    ValueError,
    IndexError,
    asyncio.LimitOverrunError,
)


def as_httpx_error(exc: BaseException, netloc: str, doing: str) -> httpx.TransportError:
    """The httpx error standing for `exc`, one of `WIRE_ERRORS`, met while `doing` with `netloc`."""
    if isinstance(exc, TimeoutError):  # before OSError: TimeoutError is one
        return httpx.ReadTimeout(f"{netloc} did not answer ({doing})")
    if isinstance(exc, asyncio.IncompleteReadError | ConnectionError | OSError):
        return httpx.ReadError(f"connection to {netloc} broke ({doing}): {exc!r}")
    return httpx.RemoteProtocolError(f"bad answer from {netloc} ({doing}): {exc}")


@dataclass(frozen=True)
class RawResponse:
    """The parts of an answer the lanes look at."""

    status_code: int
    content: bytes

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    def json(self) -> Any:
        """The body parsed as JSON (a `ValueError` if it is not)."""
        return json.loads(self.content)


async def open_nodelay(
    host: str, port: int, netloc: str, timeout_s: float
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A TCP connection with TCP_NODELAY (no Nagle wait on small writes); connection failures
    raised as httpx's ConnectTimeout / ConnectError, like the httpx clients beside it."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout_s)
    except TimeoutError as exc:
        raise httpx.ConnectTimeout(f"connecting to {netloc} timed out") from exc
    except OSError as exc:
        raise httpx.ConnectError(f"cannot connect to {netloc}: {exc}") from exc
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return reader, writer


class RawHttpClient:
    """Requests to one origin over a kept-alive TCP connection with TCP_NODELAY."""

    def __init__(
        self,
        base_url: str,
        timeout_s: float,
        connect_timeout_s: float,
        max_response: int = MAX_RESPONSE,
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"peer URL must be http://host:port, got {base_url!r}")
        self.host = parts.hostname
        self.port = parts.port or 80
        self.netloc = parts.netloc
        self.timeout_s = timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.max_response = max_response
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def _connect(self) -> None:
        self._reader, self._writer = await open_nodelay(
            self.host, self.port, self.netloc, self.connect_timeout_s
        )

    @property
    def connected(self) -> bool:
        """A connection is open (kept alive after the last answer)."""
        return self._writer is not None

    async def post(self, path: str, *, content: bytes, headers: dict[str, str]) -> RawResponse:
        return await self.request("POST", path, content=content, headers=headers)

    async def request(
        self,
        method: str,
        target: str,
        *,
        content: bytes = b"",
        headers: dict[str, str] | None = None,
        timeout_s: float | None = None,
    ) -> RawResponse:
        """`method` `target` (a path with its query) with `content`; one retry on a fresh
        connection if a kept-alive one was closed by the peer in the meantime. Every request
        this client's users send is safe to deliver twice: peers drop duplicate messages and
        txs, tensors are content-addressed, reads are reads."""
        head = [f"{method} {target} HTTP/1.1", f"Host: {self.netloc}"]
        if content or method != "GET":
            head.append(f"Content-Length: {len(content)}")
        head.extend(f"{name}: {value}" for name, value in (headers or {}).items())
        request = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + content
        timeout = self.timeout_s if timeout_s is None else timeout_s
        reused = self._writer is not None
        try:
            return await self._exchange(request, timeout)
        except (httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError):
            if not reused:
                raise
            return await self._exchange(request, timeout)

    async def _exchange(self, request: bytes, timeout: float) -> RawResponse:
        if self._writer is None:
            await self._connect()
        assert self._reader is not None and self._writer is not None
        try:
            self._writer.write(request)
            return await asyncio.wait_for(self._finish(self._writer, self._reader), timeout)
        except WIRE_ERRORS as exc:
            await self.aclose()
            raise as_httpx_error(exc, self.netloc, f"a request, {timeout} s") from exc

    async def _finish(
        self, writer: asyncio.StreamWriter, reader: asyncio.StreamReader
    ) -> RawResponse:
        await writer.drain()  # flow control for a big batch (a PRE-PREPARE with its block)
        return await self._read_response(reader)

    async def _read_response(self, reader: asyncio.StreamReader) -> RawResponse:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        fields: dict[str, str] = {}
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                fields[name.strip().lower()] = value.strip()
        if fields.get("transfer-encoding", "").lower() == "chunked":
            body = await self._read_chunked(reader)
        else:
            length = int(fields.get("content-length", "0"))
            if length > self.max_response:
                raise ValueError(f"answer of {length} bytes is too large")
            body = await reader.readexactly(length)
        if fields.get("connection", "").lower() == "close":
            await self.aclose()
        return RawResponse(status, body)

    async def _read_chunked(self, reader: asyncio.StreamReader) -> bytes:
        body = bytearray()
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await reader.readuntil(b"\r\n")  # no trailers expected
                return bytes(body)
            body += await reader.readexactly(size)
            await reader.readexactly(2)
            if len(body) > self.max_response:
                raise ValueError("chunked answer is too large")

    async def aclose(self) -> None:
        writer, self._reader, self._writer = self._writer, None, None
        if writer is not None:
            writer.close()
            try:
                await writer.wait_closed()
            except (ConnectionError, OSError):
                pass
