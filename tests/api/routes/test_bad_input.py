"""Bad input gets a 4xx with a JSON body saying what was wrong, and changes nothing."""

from __future__ import annotations

import time

import numpy as np
from fastapi.testclient import TestClient

from api.core.node import Node
from ledger.identity import Keypair
from ledger.tensor import Tensor
from ledger.transactions import TRANSFER, sign_tx, transfer_body

TO = "ab" * 32


def transfer(node: Node, key: Keypair, nonce: int, amount: int = 1) -> dict:
    return sign_tx(key, node.genesis.chain_id, TRANSFER, nonce, transfer_body(TO, amount)).to_dict()


def wait_height(node: Node, height: int, client: TestClient) -> None:
    deadline = time.monotonic() + 10
    while node.chain.height < height:
        assert time.monotonic() < deadline, "the single node did not commit"
        client.get("/api/v1/status")  # lets the app's event loop run
        time.sleep(0.02)


def assert_error(response, status: int, needle: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"detail", "error"}
    assert needle.lower() in body["detail"].lower(), body


def unchanged(client: TestClient, node: Node, before: tuple[int, int]) -> None:
    assert (node.chain.height, len(node.mempool)) == before


def test_valid_tx_commits_and_is_readable(single_node) -> None:
    client, node, key = single_node
    response = client.post("/api/v1/txs", json=transfer(node, key, 0))
    assert response.status_code == 202
    tx_hash = response.json()["tx_hash"]
    wait_height(node, 1, client)
    body = client.get(f"/api/v1/txs/{tx_hash}").json()
    assert body["status"] == "committed" and body["receipt"]["ok"]
    assert client.get(f"/api/v1/accounts/{key.address}").json()["nonce"] == 1
    again = client.post("/api/v1/txs", json=transfer(node, key, 0))
    assert again.status_code == 202 and again.json()["status"] == "committed"


def test_malformed_json_and_floats_are_400(single_node) -> None:
    client, node, _ = single_node
    before = (node.chain.height, len(node.mempool))
    assert_error(client.post("/api/v1/txs", content=b"{not json"), 400, "malformed JSON")
    assert_error(client.post("/api/v1/txs", content=b'{"nonce": 1.5}'), 400, "float")
    assert_error(client.post("/api/v1/txs", content=b'{"a":1,"a":2}'), 400, "duplicate key")
    unchanged(client, node, before)


def test_wrong_types_and_fields_are_422(single_node) -> None:
    client, node, key = single_node
    before = (node.chain.height, len(node.mempool))
    tx = transfer(node, key, 0)
    assert_error(client.post("/api/v1/txs", json={**tx, "nonce": "zero"}), 422, "nonce")
    assert_error(client.post("/api/v1/txs", json={**tx, "extra": 1}), 422, "unknown fields")
    assert_error(client.post("/api/v1/txs", json=[tx]), 422, "JSON object")
    assert_error(
        client.post("/api/v1/txs", json={**tx, "type": "mint"}), 422, "unknown transaction type"
    )
    unchanged(client, node, before)


def test_bad_signature_is_422(single_node) -> None:
    client, node, key = single_node
    before = (node.chain.height, len(node.mempool))
    tx = transfer(node, key, 0)
    forged = {**tx, "body": {"to": TO, "amount": 1000}}
    assert_error(client.post("/api/v1/txs", json=forged), 422, "signature")
    other_chain = sign_tx(key, "other-chain", TRANSFER, 0, transfer_body(TO, 1)).to_dict()
    assert_error(client.post("/api/v1/txs", json=other_chain), 422, "signature")
    unchanged(client, node, before)


def test_used_nonce_is_409_at_admission(single_node) -> None:
    client, node, key = single_node
    assert client.post("/api/v1/txs", json=transfer(node, key, 0)).status_code == 202
    wait_height(node, 1, client)
    before = (node.chain.height, len(node.mempool))
    stale = transfer(node, key, 0, amount=2)  # a different tx reusing nonce 0
    assert_error(client.post("/api/v1/txs", json=stale), 409, "already used")
    far = transfer(node, key, 1_000_000)
    assert_error(client.post("/api/v1/txs", json=far), 422, "ahead")
    unchanged(client, node, before)


def test_oversized_bodies_are_413(single_node) -> None:
    client, node, key = single_node
    node.settings.max_body_bytes = 2048
    before = (node.chain.height, len(node.mempool))
    assert_error(client.post("/api/v1/txs", content=b" " * 4096), 413, "exceeds the limit")
    huge = {"txs": [transfer(node, key, i) for i in range(node.settings.max_batch_txs + 1)]}
    node.settings.max_body_bytes = 8 << 20
    assert_error(client.post("/api/v1/txs/batch", json=huge), 413, "limit")
    node.settings.max_tensor_bytes = 1024
    big = Tensor(np.zeros(1000, dtype=np.int64), 0)
    assert_error(client.put("/api/v1/tensors", content=big.to_bytes()), 413, "exceeds")
    unchanged(client, node, before)


def test_tensor_hash_checked_both_ways(single_node) -> None:
    client, node, _ = single_node
    t = Tensor(np.arange(6, dtype=np.int32).reshape(2, 3), 4)
    wrong = "0" * 64
    assert_error(
        client.put("/api/v1/tensors", params={"hash": wrong}, content=t.to_bytes()),
        422,
        "does not match",
    )
    assert not node.tensors.has(t.hash)
    assert_error(client.put("/api/v1/tensors", content=b"LCT1\nnot a tensor"), 422, "tensor")
    ok = client.put("/api/v1/tensors", params={"hash": t.hash}, content=t.to_bytes())
    assert ok.status_code == 201 and ok.json()["created"] and ok.json()["shape"] == [2, 3]
    again = client.post("/api/v1/tensors", content=t.to_bytes())
    assert again.status_code == 201 and not again.json()["created"]
    blob = client.get(f"/api/v1/tensors/{t.hash}")
    assert Tensor.from_bytes(blob.content, expected_hash=t.hash) == t


def test_unknown_ids_are_404(single_node) -> None:
    client, _, _ = single_node
    missing = "cd" * 32
    for path in (
        f"/api/v1/txs/{missing}",
        f"/api/v1/jobs/{missing}",
        f"/api/v1/tensors/{missing}",
        f"/api/v1/blocks/{missing}",
        "/api/v1/blocks/99",
        "/api/v1/blocks/99/certificate",
        f"/api/v1/miners/{missing}",
    ):
        response = client.get(path)
        assert response.status_code == 404, path
        assert response.json()["error"] == "http"
    assert client.get("/api/v1/search", params={"q": missing}).status_code == 404
    assert client.get("/api/v1/txs/not-a-hash").status_code == 422


def test_tx_naming_a_tensor_not_uploaded_is_refused(single_node) -> None:
    from ledger import kernels
    from ledger.transactions import POST_JOB, post_job_body, tensor_input

    client, node, key = single_node
    t = Tensor(np.ones((2, 2), dtype=np.int64), 0)
    body = post_job_body(
        op="add",
        kernel_version=kernels.KERNEL_VERSION,
        inputs=[tensor_input(t)] * 2,
        params={},
        replication=1,
        reward=1,
        deadline=10,
    )
    tx = sign_tx(key, node.genesis.chain_id, POST_JOB, 0, body).to_dict()
    assert_error(client.post("/api/v1/txs", json=tx), 422, "upload it")
    client.put("/api/v1/tensors", content=t.to_bytes())
    assert client.post("/api/v1/txs", json=tx).status_code == 202


def test_batch_reports_each_tx(single_node) -> None:
    client, node, key = single_node
    good = [transfer(node, key, i) for i in range(3)]
    bad = {**transfer(node, key, 3), "signature": "00" * 64}
    response = client.post("/api/v1/txs/batch", json={"txs": [*good, bad, "junk"]})
    assert response.status_code == 202
    body = response.json()
    assert body["accepted"] == 3 and body["rejected"] == 2
    assert "signature" in body["results"][3]["error"]
    wait_height(node, 1, client)
    assert_error(client.post("/api/v1/txs/batch", json=[1]), 422, "txs")
