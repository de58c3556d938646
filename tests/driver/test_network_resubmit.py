"""A post_job the node does not know is submitted again as the same signed tx, not re-posted with
a fresh nonce (it may still be pending elsewhere); only a taken nonce or a failed receipt is."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from driver.network import NetworkRunner, PostRefused
from ledger.identity import Keypair
from ledger.transactions import TRANSFER, sign_tx, transfer_body

URL = "http://node.test"


def _runner(batch_answer: dict[str, Any], seen: list[dict[str, Any]]) -> NetworkRunner:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.startswith("/api/v1/txs/") and request.method == "GET":
            return httpx.Response(404, json={"detail": "no transaction"})
        if request.url.path == "/api/v1/txs/batch":
            seen.append(json.loads(request.content))
            return httpx.Response(
                202, json={"accepted": 1, "rejected": 0, "results": [batch_answer]}
            )
        return httpx.Response(404, json={"detail": "unexpected"})

    return NetworkRunner([URL], Keypair.generate(), run="t", transport=httpx.MockTransport(handler))


def _posted(runner: NetworkRunner) -> str:
    tx = sign_tx(runner.key, "chain", TRANSFER, 7, transfer_body("ab" * 32, 1))
    runner._posted[tx.hash] = (tx, [])
    return tx.hash


def test_an_unknown_post_job_is_submitted_again_unchanged() -> None:
    seen: list[dict[str, Any]] = []
    with _runner({"tx_hash": "x", "accepted": True, "status": "pending"}, seen) as runner:
        job_id = _posted(runner)
        runner._sync(runner._check_posted([job_id]))  # no PostRefused: it may be pending
        assert [tx["nonce"] for body in seen for tx in body["txs"]] == [7]
        assert seen[0]["txs"][0] == runner._posted[job_id][0].to_dict()


def test_an_unknown_post_job_whose_nonce_is_taken_refuses_the_round() -> None:
    answer = {"accepted": False, "status": "rejected", "error": "nonce 7 of ab… is already used"}
    with _runner({"tx_hash": "x", **answer}, []) as runner:
        job_id = _posted(runner)
        with pytest.raises(PostRefused, match="nonce is taken"):
            runner._sync(runner._check_posted([job_id]))
