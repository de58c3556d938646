"""`TxSender`: one account's transactions, signed with consecutive nonces and sent in batches.

Concurrent tasks (a miner's jobs, a driver's DAG) ask for txs through `send(type, body)`. One
background loop takes everything queued, merges runs of single-job results into
`commit_results` / `reveal_results` batches (`miner.merging`: a miner finishing many jobs per
block sends one signed tx for them, not one each), gives each tx the next nonce, signs the lot
and posts it as one `POST /txs/batch`; the same signed batch is retried on another node when one
fails, so a nonce is never skipped because of a dead node. When no node answers at all (every
node down, or answers lost on the way back) the batch may still have been admitted, so the
*same signed txs* are sent again, for up to `RESEND_FOR_S`, before the batch fails: signing its
nonces anew for other txs would make twins (two txs, one nonce; the chain keeps one), and the
callers would take an admitted tx for a lost one (a miner would forget a commitment it still
has to reveal). Nonces come from the account's committed nonce plus its pending txs, and are
re-read after any refusal or failed batch.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from ledger.errors import InvalidTransaction, LedgerError
from ledger.identity import Keypair
from ledger.transactions import TRANSFER, Tx, sign_tx, transfer_body
from miner.batching import BatchLoop
from miner.client import NodeClient, NodeUnavailable
from miner.merging import merge

log = logging.getLogger(__name__)

MAX_BATCH = 500
#: How long a signed batch that no node answered is sent again (backing off up to 5 s).
RESEND_FOR_S = 60.0

_Payload = tuple[str, dict[str, Any]]


class TxSender(BatchLoop[_Payload, Tx]):
    """Queue, sign and submit one key's txs in nonce order (see the module docstring)."""

    name = "tx-sender"

    def __init__(self, client: NodeClient, key: Keypair, chain_id: str) -> None:
        super().__init__()
        self.client = client
        self.key = key
        self.chain_id = chain_id
        self.nonce: int | None = None
        self.sent = 0

    async def stop(self) -> None:
        """Send what is queued, then stop the loop."""
        while self._queue and self._task is not None and not self._task.done():
            await asyncio.sleep(0.005)
        await self._cancel()

    async def send(self, tx_type: str, body: dict[str, Any]) -> Tx:
        """Queue a tx; returns it once a node accepted it (raises if it was refused)."""
        (future,) = self._enqueue([(tx_type, body)])
        return await future

    async def send_many(self, items: list[tuple[str, dict[str, Any]]]) -> list[Tx]:
        """Queue several txs at once (they go out in this order, usually in one batch)."""
        return list(await asyncio.gather(*self._enqueue(items)))

    async def _next_nonce(self) -> int:
        if self.nonce is None:
            account = await self.client.account(self.key.address)
            self.nonce = int(account["nonce"]) + int(account.get("pending_txs", 0))
        return self.nonce

    def _take(self) -> list[tuple[_Payload, asyncio.Future[Tx]]]:
        batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
        return batch

    def _failed(self, exc: LedgerError) -> None:
        self.nonce = None  # what the nodes hold is unknown now: re-read the nonce

    async def _send(self, batch: list[tuple[_Payload, asyncio.Future[Tx]]]) -> None:
        nonce = await self._next_nonce()
        live: list[tuple[list[asyncio.Future[Tx]], Tx]] = []
        for merged in merge([(tx_type, body, future) for (tx_type, body), future in batch]):
            try:
                tx = sign_tx(
                    self.key, self.chain_id, merged.tx_type, nonce + len(live), merged.body
                )
            except LedgerError as exc:
                for future in merged.tags:
                    future.set_exception(exc)
                continue
            live.append((merged.tags, tx))
        if not live:
            return
        self.nonce = nonce + len(live)
        results = await self._submit([tx for _, tx in live])
        gaps: list[int] = []
        for (futures, tx), result in zip(live, results, strict=True):
            if result.get("accepted"):
                self.sent += 1
                for future in futures:
                    future.set_result(tx)
                continue
            error = str(result.get("error"))
            for future in futures:
                future.set_exception(
                    InvalidTransaction(f"node refused tx {tx.hash[:16]}…: {error}")
                )
            if "already used" in error:
                self.nonce = None  # we are behind the chain: re-read the nonce next time
            else:
                gaps.append(tx.nonce)
        if gaps:
            await self._fill(gaps)

    async def _submit(self, txs: list[Tx]) -> list[dict[str, Any]]:
        """Post signed txs; while no node answers, post the same ones again (module docstring)."""
        give_up = time.monotonic() + RESEND_FOR_S
        delay = 0.5
        while True:
            try:
                return await self.client.submit_batch(txs)
            except NodeUnavailable as exc:
                if time.monotonic() + delay > give_up:
                    raise
                log.warning(
                    "no node took %d signed tx(s) (%s); sending the same ones again in %.1f s",
                    len(txs),
                    exc,
                    delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _fill(self, nonces: list[int]) -> None:
        """Fill the nonces of refused txs, so the txs signed after them are not stuck behind a gap.

        The filler is a 1-credit transfer to oneself: it always consumes its nonce (even without
        funds, as a failed tx) and changes no balance.
        """
        log.warning("a node refused %d tx(s); filling nonces %s", len(nonces), nonces)
        fillers = [
            sign_tx(self.key, self.chain_id, TRANSFER, n, transfer_body(self.key.address, 1))
            for n in nonces
        ]
        results = await self.client.submit_batch(fillers)
        if not all(r.get("accepted") for r in results):
            self.nonce = None
