"""`NodeClient`: the REST client miners and the training driver share, with fail-over between nodes.

Every call goes to the current node; on a connection error, a timeout or a 5xx it moves on to the
next node (round robin) after a backoff that doubles up to `max_backoff_s`, until `attempts`
tries were made. A 4xx is the request's fault, not the node's: it is raised at once as a
`NodeRequestError` carrying the node's message, never retried elsewhere.

Submitting the same signed tx twice is harmless (the node answers `pending` or `committed`, or
409 for a nonce already used by it), which is what makes retrying a tx on another node safe.
Tensors are verified by hash on download (`Tensor.from_bytes(..., expected_hash=)`).

Requests go over `rawhttp` connections (~30 µs of CPU per request instead of httpx's ~650 µs: a
simulated 16-miner fleet spent a third of its CPU in httpx). Given an httpx `transport` (tests
standing in a node, a lying node), or an `https://` node (the raw client speaks plain HTTP
only), the client sends through httpx instead; either way transport failures are httpx's
exception types, and everything above the wire (fail-over, backoff, error answers) is the same
code.
"""

from __future__ import annotations

import asyncio
import base64
import importlib.util
import json
import logging
import sys
from collections.abc import Container, Sequence
from typing import Any, Protocol

import httpx

from ledger.errors import LedgerError, TensorError
from ledger.tensor import Tensor
from ledger.transactions import Tx
from rawhttp.pool import ConnectionPool, Params

log = logging.getLogger(__name__)

API = "/api/v1"

# httpcore asks `import sniffio` on every request (several times: each lock and event it sets
# up). sniffio is not installed here, so every attempt fails only after scanning all of sys.path
# (~30 stat calls): a third of a simulated miner fleet's CPU went there. A None entry in
# sys.modules is Python's negative import cache: the import fails at once, with the same
# ImportError, and httpcore takes its asyncio path as before.
if "sniffio" not in sys.modules and importlib.util.find_spec("sniffio") is None:
    sys.modules["sniffio"] = None  # type: ignore[assignment]


#: httpcore's pool walks all its connections twice per request, and polls the socket of every
#: idle one (a syscall each; its surplus check is even quadratic), so an idle connection costs
#: every later request. A miner has a handful of requests in flight (its long-poll, one tx batch,
#: one upload batch, one download, housekeeping): keep that many warm, not 32.
MAX_CONNECTIONS = 64
KEEPALIVE_CONNECTIONS = 16
#: Largest answer read (a tensor download is bounded by the node's own tensor size limit).
MAX_ANSWER_BYTES = 1 << 30


class Answer(Protocol):
    """A node's answer, as read by either wire (`rawhttp.client.RawResponse`, `httpx.Response`)."""

    @property
    def status_code(self) -> int: ...
    @property
    def content(self) -> bytes: ...
    @property
    def text(self) -> str: ...
    def json(self) -> Any: ...


class NodeUnavailable(LedgerError):
    """No node answered (every attempt failed with a network error, a timeout or a 5xx)."""


class NodeRequestError(LedgerError):
    """A node refused the request (4xx); `status` and the node's `detail` say why."""

    def __init__(self, status: int, detail: str, url: str) -> None:
        super().__init__(f"{url}: HTTP {status}: {detail}")
        self.status = status
        self.detail = detail


def _detail(response: Answer) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:300]
    if isinstance(body, dict):
        for key in ("detail", "error", "message"):
            if key in body:
                return str(body[key])
    return str(body)[:300]


class NodeClient:
    """Async client over one or more validator URLs (fail-over, retry with backoff)."""

    def __init__(
        self,
        urls: Sequence[str],
        *,
        timeout: float = 10.0,
        attempts: int = 6,
        backoff_s: float = 0.05,
        max_backoff_s: float = 2.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if not urls:
            raise LedgerError("give at least one node URL")
        self.urls = [u.rstrip("/") for u in urls]
        self.current = 0
        self.attempts = max(1, attempts)
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.failovers = 0
        self.requests = 0
        """Requests sent (each attempt counts; announcements too): benchmarks report it."""
        self.timeout = timeout
        self._pool: ConnectionPool | None = None
        self._client: httpx.AsyncClient | None = None
        if transport is None and all(url.startswith("http://") for url in self.urls):
            self._pool = ConnectionPool(timeout, timeout, MAX_ANSWER_BYTES, KEEPALIVE_CONNECTIONS)
        else:
            self._client = httpx.AsyncClient(
                timeout=timeout,
                transport=transport,
                limits=httpx.Limits(
                    max_connections=MAX_CONNECTIONS,
                    max_keepalive_connections=KEEPALIVE_CONNECTIONS,
                ),
            )

    @property
    def url(self) -> str:
        return self.urls[self.current]

    async def aclose(self) -> None:
        if self._pool is not None:
            await self._pool.aclose()
        if self._client is not None:
            await self._client.aclose()

    async def _send(
        self,
        method: str,
        url: str,
        *,
        params: Params | None = None,
        json_body: Any = None,
        content: bytes = b"",
        headers: dict[str, str] | None = None,
        timeout: float | None = None,
    ) -> Answer:
        """One attempt on the wire; transport failures raise httpx's exception types."""
        if json_body is not None:
            content = json.dumps(json_body, separators=(",", ":")).encode()
            headers = {**(headers or {}), "content-type": "application/json"}
        if self._pool is not None:
            return await self._pool.request(
                method, url, params=params, content=content, headers=headers, timeout_s=timeout
            )
        assert self._client is not None
        return await self._client.request(
            method,
            url,
            params=params,  # type: ignore[arg-type]
            content=content or None,
            headers=headers,
            timeout=self.timeout if timeout is None else timeout,
        )

    async def __aenter__(self) -> NodeClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def _fail_over(self, failed_url: str, reason: str) -> None:
        # Concurrent requests that failed on the same node must move on once, not once each:
        # with k in flight against a dead node, k advances could wrap back round onto it.
        if self.url != failed_url:
            return
        previous = self.url
        self.current = (self.current + 1) % len(self.urls)
        self.failovers += 1
        log.warning("node %s failed (%s); now using %s", previous, reason, self.url)

    async def request(
        self,
        method: str,
        path: str,
        *,
        timeout: float | None = None,
        params: Params | None = None,
        json: Any = None,
        content: bytes = b"",
        headers: dict[str, str] | None = None,
    ) -> Answer:
        """One request with fail-over; returns the 2xx response or raises (see module doc)."""
        delay = self.backoff_s
        last = ""
        for attempt in range(self.attempts):
            url = self.url
            self.requests += 1
            try:
                response = await self._send(
                    method,
                    url + path,
                    params=params,
                    json_body=json,
                    content=content,
                    headers=headers,
                    timeout=timeout,
                )
            except httpx.HTTPError as exc:
                last = f"{type(exc).__name__}: {exc}"
            else:
                if response.status_code < 400:
                    return response
                if response.status_code < 500:
                    raise NodeRequestError(response.status_code, _detail(response), url + path)
                last = f"HTTP {response.status_code}: {_detail(response)}"
            if len(self.urls) > 1:
                self._fail_over(url, last)
            if attempt + 1 < self.attempts:
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.max_backoff_s)
        raise NodeUnavailable(f"{method} {path}: no node answered ({last})")

    async def get_json(
        self, path: str, *, params: Params | None = None, timeout: float | None = None
    ) -> Any:
        return (await self.request("GET", API + path, params=params, timeout=timeout)).json()

    # ---------------------------------------------------------------------- chain and accounts

    async def status(self) -> dict[str, Any]:
        result: dict[str, Any] = await self.get_json("/status")
        return result

    async def health(self) -> bool:
        try:
            await self.request("GET", API + "/health")
        except LedgerError:
            return False
        return True

    async def next_nonce(self, address: str) -> int:
        """The committed next nonce of `address` (pending txs not counted)."""
        account = await self.get_json(f"/accounts/{address}")
        return int(account["nonce"])

    async def account(self, address: str) -> dict[str, Any]:
        result: dict[str, Any] = await self.get_json(f"/accounts/{address}")
        return result

    # ---------------------------------------------------------------------- txs

    async def submit(self, tx: Tx) -> str:
        """Submit one signed tx; returns its hash. A nonce already used by it counts as done."""
        response = await self.request("POST", API + "/txs", json=tx.to_dict())
        return str(response.json()["tx_hash"])

    async def submit_batch(self, txs: Sequence[Tx]) -> list[dict[str, Any]]:
        """Submit many signed txs in one request; returns each tx's result (accepted or why not)."""
        if not txs:
            return []
        response = await self.request(
            "POST", API + "/txs/batch", json={"txs": [tx.to_dict() for tx in txs]}
        )
        results: list[dict[str, Any]] = response.json()["results"]
        return results

    async def tx(self, tx_hash: str) -> dict[str, Any] | None:
        try:
            result: dict[str, Any] = await self.get_json(f"/txs/{tx_hash}")
        except NodeRequestError as exc:
            if exc.status == 404:
                return None
            raise
        return result

    # ---------------------------------------------------------------------- tensors

    async def put_tensor(self, tensor: Tensor) -> str:
        """Upload a tensor (the node checks the hash we expect)."""
        response = await self.request(
            "PUT",
            API + "/tensors",
            params={"hash": tensor.hash},
            content=tensor.to_bytes(),
            headers={"content-type": "application/octet-stream"},
        )
        stored = str(response.json()["hash"])
        if stored != tensor.hash:
            raise TensorError(f"node stored {stored} for tensor {tensor.hash}")
        return stored

    async def put_tensors(self, tensors: Sequence[Tensor]) -> list[str]:
        """Upload several tensors in one request (`POST /tensors/batch`, framed like
        `GET /work/tensors`); checks the node stored each under the hash we computed."""
        body = b"".join(
            len(blob).to_bytes(4, "big") + blob for blob in (t.to_bytes() for t in tensors)
        )
        response = await self.request(
            "POST",
            API + "/tensors/batch",
            content=body,
            headers={"content-type": "application/octet-stream"},
        )
        stored = [str(item["hash"]) for item in response.json()["tensors"]]
        wanted = [t.hash for t in tensors]
        if stored != wanted:
            raise TensorError(f"{self.url}: stored {stored} for the batch {wanted}")
        return stored

    async def get_tensor(self, tensor_hash: str, max_elements: int | None = None) -> Tensor:
        """Download a tensor and verify that its content hashes to `tensor_hash`."""
        response = await self.request("GET", API + f"/tensors/{tensor_hash}")
        if max_elements is None:
            return Tensor.from_bytes(response.content, expected_hash=tensor_hash)
        return Tensor.from_bytes(
            response.content, expected_hash=tensor_hash, max_elements=max_elements
        )

    async def get_tensors(self, hashes: Sequence[str]) -> list[Tensor]:
        """Download several tensors in one request (`GET /work/tensors`), each verified against
        its hash; in the order asked."""
        response = await self.request(
            "GET", API + "/work/tensors", params=[("hash", h) for h in hashes]
        )
        blob, out, at = response.content, [], 0
        for tensor_hash in hashes:
            if at + 4 > len(blob):
                raise TensorError(f"{self.url}: tensor batch ended before tensor {tensor_hash}")
            size = int.from_bytes(blob[at : at + 4], "big")
            out.append(Tensor.from_bytes(blob[at + 4 : at + 4 + size], expected_hash=tensor_hash))
            at += 4 + size
        if at != len(blob):
            raise TensorError(f"{self.url}: {len(blob) - at} unexpected bytes after the tensors")
        return out

    # ---------------------------------------------------------------------- jobs

    async def job(self, job_id: str) -> dict[str, Any]:
        result: dict[str, Any] = await self.get_json(f"/jobs/{job_id}")
        return result

    async def work(
        self,
        miner: str,
        wait: float,
        since: int = -1,
        limit: int = 64,
        inline_bytes: int = 0,
        known: Container[str] = (),
    ) -> dict[str, Any]:
        """Long-poll for this miner's work: `{"height", "commit": [job...], "reveal": [id...],
        "stolen": [id...], "tensors": {hash: Tensor}}`, answered once the chain is above `since`.

        With `inline_bytes`, the node also sends input tensors of the `commit` jobs (up to that
        many bytes); `tensors` holds those that are inputs of the listed jobs and hash to their
        name (`Tensor.from_bytes(..., expected_hash=)`, as downloads are). Any other (a lying or
        broken node) is left out and logged, so the miner downloads it as before. Tensors named
        in `known` (the caller holds them: jobs listed again while still being worked on) are
        not decoded at all."""
        params: dict[str, Any] = {"miner": miner, "wait": wait, "since": since, "limit": limit}
        if inline_bytes > 0:
            params["inline_bytes"] = inline_bytes
        result: dict[str, Any] = await self.get_json("/work", params=params, timeout=wait + 10.0)
        result["tensors"] = self._inline_tensors(result, known)
        return result

    def _inline_tensors(
        self, work: dict[str, Any], known: Container[str] = ()
    ) -> dict[str, Tensor]:
        sent = work.get("tensors") or {}
        if not isinstance(sent, dict) or not sent:
            return {}
        wanted = {h for job in work.get("commit", ()) for h in job.get("input_hashes", ())}
        out: dict[str, Tensor] = {}
        for tensor_hash, encoded in sent.items():
            if tensor_hash not in wanted:
                log.warning("%s sent tensor %.16s… that no listed job uses", self.url, tensor_hash)
                continue
            if tensor_hash in known:
                continue
            try:
                blob = base64.b64decode(encoded, validate=True)
                out[tensor_hash] = Tensor.from_bytes(blob, expected_hash=tensor_hash)
            except (TypeError, ValueError, LedgerError) as exc:
                log.warning("%s sent a bad tensor %.16s…: %s", self.url, tensor_hash, exc)
        return out

    async def announce(self, miner: str) -> int:
        """Tell every node (not just the current one) that `miner` is working: a reveals-only,
        no-wait `GET /work` each. Nodes assign open jobs among the miners they saw recently, so
        all of them must rank the same miners. Returns how many nodes answered; never raises."""

        async def one(url: str) -> bool:
            self.requests += 1
            try:  # `connection: close`: no idle connection to every node left in the pool
                response = await self._send(
                    "GET",
                    url + API + "/work",
                    params={"miner": miner, "limit": 0},
                    headers={"connection": "close"},
                    timeout=5.0,
                )
            except httpx.HTTPError:
                return False
            return response.status_code == 200

        return sum(await asyncio.gather(*(one(url) for url in self.urls)))

    async def results(self, job_ids: Sequence[str], wait: float) -> dict[str, Any]:
        """Statuses and outputs of `job_ids`, once all are final or after `wait` seconds."""
        response = await self.request(
            "POST",
            API + "/work/results",
            params={"wait": wait},
            json={"jobs": list(job_ids)},
            timeout=wait + 10.0,
        )
        result: dict[str, Any] = response.json()
        return result
