"""Tensor replication by push (PROTOCOL.md §8.4): an upload to one validator reaches the others
without any tx naming it, and a push that is not a genesis validator's, or not tensors, is refused
and stores nothing."""

from __future__ import annotations

import time
from types import SimpleNamespace

import httpx
import numpy as np
import pytest

from api.p2p.tensorpush import (
    REPLICATION_WAIT_S,
    TensorPusher,
    decode_tensor_batch,
    encode_tensor_batch,
)
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


class _QuorumNode:
    """The parts of `Node` the pusher's quorum bookkeeping reads (4 validators: 3 peers)."""

    def __init__(self) -> None:
        self.peers = SimpleNamespace(
            isolated=False,
            links={a: SimpleNamespace(url=f"http://peer-{a}") for a in "abc"},
        )
        self.genesis = SimpleNamespace(quorum=3)
        self.nudged = 0

    def tensors_replicated(self) -> None:
        self.nudged += 1


def test_a_tensor_is_replicating_until_a_quorum_holds_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """The primary holds back txs naming a tensor still being pushed: with 4 validators, until
    2 peers answered its push (with this node, a quorum), and nudges the proposer then."""
    node = _QuorumNode()
    pusher = TensorPusher(node)  # type: ignore[arg-type]
    h = "ab" * 32
    assert not pusher.replicating(h)  # never pushed from here: not waited for
    pusher.push(h)
    assert pusher.replicating(h) and not pusher.replicating("cd" * 32)
    pusher._ended("http://peer-a", [h])
    assert pusher.replicating(h) and node.nudged == 0
    pusher._ended("http://peer-b", [h])  # answered, or failed: that peer fetches on demand
    assert not pusher.replicating(h) and node.nudged == 1

    slow = "ef" * 32
    pusher.push(slow)
    now = time.monotonic()
    monkeypatch.setattr("api.p2p.tensorpush.time.monotonic", lambda: now + REPLICATION_WAIT_S + 1)
    assert not pusher.replicating(slow)  # a push that takes too long is not waited for
