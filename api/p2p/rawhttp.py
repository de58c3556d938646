"""A minimal keep-alive HTTP/1.1 POST client for the peer lanes (one connection, one request).

Why not httpx here: every consensus phase is an all-to-all exchange (each validator POSTs to each
other), so the per-request cost of the client is paid 12 times per phase on a 4-node network.
httpx spends ~650 µs of CPU per POST on this machine; writing the request and parsing the answer
on a raw asyncio stream costs ~30 µs. The public REST clients and everything else keep httpx.

Errors are raised as httpx's own exception types (`httpx.ConnectError`, `httpx.ReadError`,
`httpx.ReadTimeout`, ...), so callers handle both clients alike.
"""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx

#: Largest response body accepted (peers answer /p2p/batch with a few bytes of JSON).
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
    """POST to one origin over a kept-alive TCP connection with TCP_NODELAY."""

    def __init__(self, base_url: str, timeout_s: float, connect_timeout_s: float) -> None:
        parts = urlsplit(base_url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"peer URL must be http://host:port, got {base_url!r}")
        self.host = parts.hostname
        self.port = parts.port or 80
        self.netloc = parts.netloc
        self.timeout_s = timeout_s
        self.connect_timeout_s = connect_timeout_s
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def _connect(self) -> None:
        self._reader, self._writer = await open_nodelay(
            self.host, self.port, self.netloc, self.connect_timeout_s
        )

    async def post(self, path: str, *, content: bytes, headers: dict[str, str]) -> RawResponse:
        """POST `content` to `path`; one retry on a fresh connection if a kept-alive one was
        closed by the peer in the meantime (re-delivering a batch is harmless: peers drop
        duplicate messages and txs)."""
        head = [f"POST {path} HTTP/1.1", f"Host: {self.netloc}", f"Content-Length: {len(content)}"]
        head.extend(f"{name}: {value}" for name, value in headers.items())
        request = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + content
        reused = self._writer is not None
        try:
            return await self._exchange(request)
        except (httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError):
            if not reused:
                raise
            return await self._exchange(request)

    async def _exchange(self, request: bytes) -> RawResponse:
        if self._writer is None:
            await self._connect()
        assert self._reader is not None and self._writer is not None
        try:
            self._writer.write(request)
            return await asyncio.wait_for(self._finish(self._writer, self._reader), self.timeout_s)
        except WIRE_ERRORS as exc:
            await self.aclose()
            raise as_httpx_error(exc, self.netloc, f"a request, {self.timeout_s} s") from exc

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
            if length > MAX_RESPONSE:
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
            if len(body) > MAX_RESPONSE:
                raise ValueError("chunked answer is too large")

    async def aclose(self) -> None:
        writer, self._reader, self._writer = self._writer, None, None
        if writer is not None:
            writer.close()
            try:
                await writer.wait_closed()
            except (ConnectionError, OSError):
                pass
