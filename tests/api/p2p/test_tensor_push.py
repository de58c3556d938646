"""Tensor replication by push (PROTOCOL.md §8.4): an upload to one validator reaches the others
without any tx naming it, and a push that is not a genesis validator's, or not tensors, is refused
and stores nothing."""

from __future__ import annotations

import time

import httpx
import numpy as np
import pytest

from api.p2p.tensorpush import decode_tensor_batch, encode_tensor_batch
from api.p2p.transport import FROM_HEADER, SIG_HEADER, batch_signature
from api.testing import LocalTestnet
from ledger.errors import EncodingError
from ledger.identity import Keypair
from ledger.tensor import Tensor


def _tensor(seed: int) -> Tensor:
    return Tensor(np.random.default_rng(seed).integers(-1000, 1000, size=(3, 5)), 8)


def test_batch_framing_round_trips_and_refuses_truncation() -> None:
    blobs = [b"", *(_tensor(i).to_bytes() for i in range(3))]
    body = encode_tensor_batch(blobs)
    assert decode_tensor_batch(body) == blobs
    assert decode_tensor_batch(b"") == []
    with pytest.raises(EncodingError, match="past the end"):
        decode_tensor_batch(body[:-1])
    with pytest.raises(EncodingError, match="truncated length prefix"):
        decode_tensor_batch(body + b"\x00\x00")


def _held(net: LocalTestnet, i: int, tensor: Tensor) -> bool:
    response = httpx.get(f"{net.url(i)}/api/v1/tensors/{tensor.hash}", timeout=5)
    return response.status_code == 200 and response.content == tensor.to_bytes()


def test_an_uploaded_tensor_reaches_every_validator(testnet: LocalTestnet) -> None:
    tensor = _tensor(42)
    assert not any(_held(testnet, i, tensor) for i in range(testnet.n))
    response = httpx.put(
        f"{testnet.url(0)}/api/v1/tensors",
        params={"hash": tensor.hash},
        content=tensor.to_bytes(),
        timeout=5,
    )
    assert response.status_code == 201, response.text
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and not all(
        _held(testnet, i, tensor) for i in range(testnet.n)
    ):
        time.sleep(0.05)
    assert all(_held(testnet, i, tensor) for i in range(testnet.n))


def _push(net: LocalTestnet, key: Keypair, body: bytes, to: int = 1) -> httpx.Response:
    headers = {
        FROM_HEADER: key.address,
        SIG_HEADER: batch_signature(key, net.genesis.chain_id, body),
        "Content-Type": "application/octet-stream",
    }
    return httpx.post(f"{net.url(to)}/p2p/tensors", content=body, headers=headers, timeout=5)


def test_bad_pushes_are_refused_and_store_nothing(testnet: LocalTestnet) -> None:
    validator = Keypair.load(testnet.home(0) / "node_key.pem")
    stranger = Keypair.generate()
    tensor = _tensor(7)
    body = encode_tensor_batch([tensor.to_bytes()])

    assert _push(testnet, stranger, body).status_code == 403  # not a validator
    forged = httpx.post(
        f"{testnet.url(1)}/p2p/tensors",
        content=body,
        headers={FROM_HEADER: validator.address, SIG_HEADER: "00" * 64},
        timeout=5,
    )
    assert forged.status_code == 401
    broken = _push(testnet, validator, body[:-3])  # framing cut short
    assert broken.status_code == 400 and "past the end" in broken.json()["detail"]
    garbage = _push(testnet, validator, encode_tensor_batch([b"not a tensor"]))
    assert 400 <= garbage.status_code < 500 and "pushed tensor 0" in garbage.json()["detail"]
    assert not _held(testnet, 1, tensor)

    good = _push(testnet, validator, body)
    assert good.status_code == 200 and good.json() == {"stored": 1, "received": 1}
    assert _held(testnet, 1, tensor)
    again = _push(testnet, validator, body)
    assert again.json() == {"stored": 0, "received": 1}
