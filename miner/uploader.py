"""`Uploader`: a miner's output tensors, uploaded in batches.

Computed jobs ask for their outputs to be stored through `upload(tensors)`; one background loop
takes everything queued and sends it as one `POST /tensors/batch` (up to `MAX_TENSORS` tensors
or `MAX_BYTES` bytes per request; a larger tensor goes alone), so outputs that queue while an
upload is in flight share the next request instead of each opening its own (like `TxSender`
does for txs). `upload` returns the URL of the node that stored them: a reveal must go to a
node that holds its outputs. A node without the batch route (404/405: an older version) gets
one `PUT /tensors` per tensor from then on.
"""

from __future__ import annotations

import asyncio
import logging

from ledger.errors import LedgerError
from ledger.tensor import Tensor
from miner.batching import BatchLoop
from miner.client import NodeClient, NodeRequestError

log = logging.getLogger(__name__)

#: The node's limit per `POST /tensors/batch` (api/routes/tensors.py MAX_BATCH_TENSORS).
MAX_TENSORS = 64
#: A batch stops growing past this many wire bytes (well under the node's body limit).
MAX_BYTES = 4 << 20

_Item = tuple[list[Tensor], "asyncio.Future[str]"]


class Uploader(BatchLoop[list[Tensor], str]):
    """Queue tensors and upload them in batches, one request at a time (see the module doc)."""

    name = "uploader"

    def __init__(self, client: NodeClient) -> None:
        super().__init__()
        self.client = client
        self.requests = 0
        """Upload requests sent (batches, or single PUTs against a node without batches)."""
        self.batched = True

    async def stop(self) -> None:
        """Stop the loop; uploads still queued fail with `LedgerError`."""
        await self._cancel()
        for _, future in self._queue:
            if not future.done():
                future.set_exception(LedgerError("the uploader stopped"))
        self._queue = []

    async def upload(self, tensors: list[Tensor]) -> str:
        """Store `tensors` on a node; returns that node's URL once it holds all of them."""
        (future,) = self._enqueue([list(tensors)])
        return await future

    def _take(self) -> list[_Item]:
        """The queued items for one request: at least one, then while the limits allow."""
        taken: list[_Item] = []
        count = size = 0
        while self._queue:
            tensors = self._queue[0][0]
            more = sum(t.data.nbytes for t in tensors)
            if taken and (count + len(tensors) > MAX_TENSORS or size + more > MAX_BYTES):
                break
            taken.append(self._queue.pop(0))
            count += len(tensors)
            size += more
        return taken

    async def _send(self, batch: list[_Item]) -> None:
        url = await self._store([t for tensors, _ in batch for t in tensors])
        for _, future in batch:
            if not future.done():
                future.set_result(url)

    async def _store(self, tensors: list[Tensor]) -> str:
        unique = list({t.hash: t for t in tensors}.values())
        for start in range(0, len(unique), MAX_TENSORS):
            part = unique[start : start + MAX_TENSORS]
            if self.batched:
                try:
                    self.requests += 1
                    await self.client.put_tensors(part)
                    continue
                except NodeRequestError as exc:
                    if exc.status not in (404, 405):
                        raise
                    log.info("%s has no batch upload; uploading one by one", self.client.url)
                    self.batched = False
            self.requests += len(part)
            await asyncio.gather(*(self.client.put_tensor(t) for t in part))
        return self.client.url
