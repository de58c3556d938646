"""The miner's TxSender against a real (in-process, one-validator) node whose answers get lost."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
from inprocess_chain import BASE, in_process_chain

from ledger.transactions import TRANSFER, transfer_body
from miner.client import NodeClient
from miner.txsender import TxSender


class _LosingAnswers(httpx.AsyncBaseTransport):
    """Forwards every request to the node, but the answers of the first `lose` tx batches
    never come back (the node admitted them; the client sees a timeout)."""

    def __init__(self, inner: httpx.AsyncBaseTransport, lose: int) -> None:
        self.inner = inner
        self.lose = lose
        self.batches = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        if request.url.path == "/api/v1/txs/batch":
            self.batches += 1
            if self.batches <= self.lose:
                await response.aread()
                raise httpx.ReadTimeout("the answer was lost", request=request)
        return response


def test_a_batch_whose_answers_were_lost_is_sent_again_as_signed_never_re_signed(
    tmp_path: Path,
) -> None:
    """No node answered, but the node had admitted the batch: the sender sends the same signed
    txs again instead of failing them and re-reading its nonce (which would sign other txs with
    the same nonces: twins, and a caller told 'refused' about a tx that commits)."""

    async def scenario() -> None:
        async with in_process_chain(tmp_path) as chain:
            losing = _LosingAnswers(chain.transport, lose=2)
            client = NodeClient([BASE], transport=losing, attempts=2, backoff_s=0.01)
            key = chain.client_key
            sender = TxSender(client, key, chain.node.genesis.chain_id)
            first = await sender.send_many(
                [(TRANSFER, transfer_body(chain.miner_keys[0].address, 1 + i)) for i in range(3)]
            )
            later = await sender.send(TRANSFER, transfer_body(chain.miner_keys[1].address, 5))
            assert losing.batches >= 3  # two lost answers, then the same batch again, then more
            assert [tx.nonce for tx in first] == [0, 1, 2] and later.nonce == 3
            await sender.stop()
            for _ in range(100):
                account = await client.account(key.address)
                if account["nonce"] == 4:
                    break
                await asyncio.sleep(0.05)
            assert account["nonce"] == 4
            for tx in [*first, later]:
                found = await client.tx(tx.hash)
                assert found is not None and found["receipt"]["ok"], found
            await client.aclose()

    asyncio.run(scenario())
