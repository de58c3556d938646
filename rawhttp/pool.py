"""`ConnectionPool`: `RawHttpClient` connections to several origins, kept alive between requests.

A miner has a handful of requests in flight at once (its long-poll, a tx batch, an upload, a
download), so each request takes an idle connection to its origin, or opens one, and gives it
back when its answer is read; at most `keepalive` idle connections per origin are kept.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from urllib.parse import urlencode, urlsplit

from rawhttp.client import RawHttpClient, RawResponse

#: Query parameters: a mapping, or pairs (a name may repeat).
Params = Mapping[str, object] | Sequence[tuple[str, object]]


class ConnectionPool:
    """Kept-alive raw HTTP/1.1 connections, one request at a time on each."""

    def __init__(
        self,
        timeout_s: float,
        connect_timeout_s: float,
        max_response: int,
        keepalive: int = 16,
    ) -> None:
        self.timeout_s = timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.max_response = max_response
        self.keepalive = keepalive
        self._idle: dict[str, list[RawHttpClient]] = {}

    async def request(
        self,
        method: str,
        url: str,
        *,
        params: Params | None = None,
        content: bytes = b"",
        headers: dict[str, str] | None = None,
        timeout_s: float | None = None,
    ) -> RawResponse:
        """`method` `url` (absolute, http://) with `params` as its query string."""
        parts = urlsplit(url)
        origin = f"{parts.scheme}://{parts.netloc}"
        target = parts.path or "/"
        query = urlencode(list(params.items()) if isinstance(params, Mapping) else params or [])
        if parts.query or query:
            target += "?" + "&".join(q for q in (parts.query, query) if q)
        idle = self._idle.setdefault(origin, [])
        connection = (
            idle.pop()
            if idle
            else RawHttpClient(origin, self.timeout_s, self.connect_timeout_s, self.max_response)
        )
        try:
            response = await connection.request(
                method, target, content=content, headers=headers, timeout_s=timeout_s
            )
        except BaseException:
            await connection.aclose()
            raise
        if connection.connected and len(idle) < self.keepalive:
            idle.append(connection)
        else:
            await connection.aclose()
        return response

    async def aclose(self) -> None:
        idle, self._idle = self._idle, {}
        for connections in idle.values():
            for connection in connections:
                await connection.aclose()
