"""The sending end of a streaming peer lane: one chunked POST kept open, frames written into it.

`PeerStream.open` connects, writes the request head (`Transfer-Encoding: chunked`) and waits
for the answer's head: 200 means the peer takes the stream, anything else is `StreamRefused`
(404/405 from an older node that has no /p2p/stream: the lane falls back to /p2p/batch).
Afterwards each `send` writes one HTTP chunk holding one frame; nothing is awaited but TCP
flow control. A watcher reads the answer's body, which the receiver only ends when it drops
the stream (a bad frame, its partition switch, its shutdown): end of file there, or a failed
write, marks the stream `broken` and wakes the lane, which opens a new one.

Errors are httpx's exception types, as in `rawhttp.client`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import httpx

from rawhttp.client import WIRE_ERRORS, as_httpx_error, open_nodelay

#: Largest refusal body read (an `ErrorBody`).
MAX_REFUSAL = 64 << 10


class StreamRefused(Exception):
    """The peer answered the opening with a status other than 200."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(f"{status}: {text}")
        self.status = status
        self.text = text


class PeerStream:
    """One open stream to one peer (not reusable: open a new one when it breaks)."""

    def __init__(self, host: str, port: int, netloc: str, timeout_s: float) -> None:
        self.host, self.port, self.netloc = host, port, netloc
        self.timeout_s = timeout_s
        self.broken = False
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._watcher: asyncio.Task[None] | None = None

    async def open(
        self, path: str, headers: dict[str, str], on_break: Callable[[], None] | None = None
    ) -> None:
        """Connect and start the stream; `on_break` is called once if it later breaks."""
        reader, writer = await open_nodelay(self.host, self.port, self.netloc, self.timeout_s)
        self._reader, self._writer = reader, writer
        head = [f"POST {path} HTTP/1.1", f"Host: {self.netloc}", "Transfer-Encoding: chunked"]
        head.extend(f"{name}: {value}" for name, value in headers.items())
        try:
            writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))
            status, fields = await asyncio.wait_for(self._read_head(reader), self.timeout_s)
            if status != 200:
                text = await asyncio.wait_for(self._read_refusal(reader, fields), self.timeout_s)
                raise StreamRefused(status, text)
        except StreamRefused:
            await self.aclose()
            raise
        except WIRE_ERRORS as exc:
            await self.aclose()
            raise as_httpx_error(exc, self.netloc, "opening a stream") from exc
        self._watcher = asyncio.create_task(self._watch(reader, on_break))

    @staticmethod
    async def _read_head(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        fields: dict[str, str] = {}
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                fields[name.strip().lower()] = value.strip()
        return int(lines[0].split(" ", 2)[1]), fields

    @staticmethod
    async def _read_refusal(reader: asyncio.StreamReader, fields: dict[str, str]) -> str:
        if fields.get("transfer-encoding", "").lower() == "chunked":
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            body = await reader.readexactly(min(size, MAX_REFUSAL))
        else:
            length = int(fields.get("content-length", "0"))
            body = await reader.readexactly(min(length, MAX_REFUSAL))
        return body.decode("utf-8", "replace")

    async def _watch(
        self, reader: asyncio.StreamReader, on_break: Callable[[], None] | None
    ) -> None:
        """Wait for the answer's body to end (the receiver dropped the stream)."""
        try:
            while await reader.read(1 << 16):
                pass
        except (ConnectionError, OSError):
            pass
        self.broken = True
        if on_break is not None:
            on_break()

    async def send(self, frame: bytes) -> None:
        """Write `frame` as one chunk; waits only when TCP pushes back (bounded by the timeout)."""
        writer = self._writer
        if writer is None or self.broken:
            raise httpx.WriteError(f"the stream to {self.netloc} is closed")
        try:
            writer.write(b"%x\r\n%b\r\n" % (len(frame), frame))
            if writer.transport.get_write_buffer_size() > 0:
                await asyncio.wait_for(writer.drain(), self.timeout_s)
        except TimeoutError as exc:
            self.broken = True
            raise httpx.WriteTimeout(f"{self.netloc} stopped reading the stream") from exc
        except (ConnectionError, OSError, RuntimeError) as exc:
            self.broken = True
            raise httpx.WriteError(f"stream to {self.netloc} broke: {exc!r}") from exc

    async def aclose(self) -> None:
        """End the stream politely (last chunk) and close the connection."""
        writer, self._writer, self._reader = self._writer, None, None
        self.broken = True
        if self._watcher is not None:
            self._watcher.cancel()
            self._watcher = None
        if writer is None:
            return
        try:
            if not writer.is_closing():
                writer.write(b"0\r\n\r\n")
            writer.close()
            await writer.wait_closed()
        except (ConnectionError, OSError):
            pass
