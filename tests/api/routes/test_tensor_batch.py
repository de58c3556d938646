"""`POST /tensors/batch`: several tensors in one upload, each verified; bad input is a 4xx."""

from __future__ import annotations

import numpy as np

from api.routes.tensors import MAX_BATCH_TENSORS
from ledger.tensor import Tensor


def framed(*blobs: bytes) -> bytes:
    return b"".join(len(blob).to_bytes(4, "big") + blob for blob in blobs)


def tensors(count: int) -> list[Tensor]:
    return [Tensor(np.arange(i, i + 6, dtype=np.int64).reshape(2, 3), 8) for i in range(count)]


def assert_error(response, status: int, needle: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"detail", "error"}
    assert needle.lower() in body["detail"].lower(), body


def post(client, body: bytes):
    headers = {"content-type": "application/octet-stream"}
    return client.post("/api/v1/tensors/batch", content=body, headers=headers)


def test_a_batch_stores_every_tensor_and_answers_them_in_order(single_node) -> None:
    client, node, _ = single_node
    a, b, c = tensors(3)
    client.put("/api/v1/tensors", content=b.to_bytes())  # already held: created False
    response = post(client, framed(c.to_bytes(), b.to_bytes(), a.to_bytes()))
    assert response.status_code == 201, response.text
    out = response.json()["tensors"]
    assert [t["hash"] for t in out] == [c.hash, b.hash, a.hash]
    assert [t["created"] for t in out] == [True, False, True]
    assert out[0]["shape"] == [2, 3] and out[0]["frac_bits"] == 8 and out[0]["dtype"] == "<i8"
    assert out[0]["bytes"] == len(c.to_bytes())
    for t in (a, b, c):
        assert node.tensors.has(t.hash)
        blob = client.get(f"/api/v1/tensors/{t.hash}").content
        assert Tensor.from_bytes(blob, expected_hash=t.hash) == t


def test_broken_framing_is_400_and_stores_nothing(single_node) -> None:
    client, node, _ = single_node
    (a,) = tensors(1)
    body = framed(a.to_bytes())
    assert_error(post(client, body[:-1]), 400, "past the end")
    assert_error(post(client, body + b"\x00\x00"), 400, "truncated length prefix")
    assert not node.tensors.has(a.hash)


def test_a_bad_item_is_422_naming_its_index(single_node) -> None:
    client, node, _ = single_node
    a, b = tensors(2)
    response = post(client, framed(a.to_bytes(), b"LCT1\nnot a tensor", b.to_bytes()))
    assert_error(response, 422, "tensor 1 of the batch")
    assert node.tensors.has(a.hash) and not node.tensors.has(b.hash)


def test_empty_and_oversized_batches_are_refused(single_node) -> None:
    client, node, _ = single_node
    assert_error(post(client, b""), 422, "send 1 to")
    many = tensors(MAX_BATCH_TENSORS + 1)
    assert_error(post(client, framed(*(t.to_bytes() for t in many))), 422, "send 1 to")
    assert not any(node.tensors.has(t.hash) for t in many)
    node.settings.max_tensor_bytes = 1024
    big = Tensor(np.zeros(1000, dtype=np.int64), 0)
    assert_error(post(client, framed(big.to_bytes())), 413, "exceeds")
    assert not node.tensors.has(big.hash)
