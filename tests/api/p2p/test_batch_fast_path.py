"""POST /p2p/batch through the ASGI fast path: the same answers as the FastAPI route would give."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.commands import write_testnet
from api.core.config import load_settings
from api.core.node import Node
from api.main import create_app
from api.p2p.transport import FROM_HEADER, SIG_HEADER, batch_signature
from api.testing import free_ports
from ledger.consensus.messages import Prepare, sign_message
from ledger.identity import Keypair


@pytest.fixture
def two_validators(tmp_path: Path) -> Iterator[tuple[TestClient, Node, Keypair]]:
    """Node0 of a two-validator genesis in process, and node1's key (a legitimate peer)."""
    write_testnet(tmp_path, validators=2, miners=0, ports=free_ports(2))
    app = create_app(load_settings(tmp_path / "node0"))
    with TestClient(app) as client:
        yield client, app.state.node, Keypair.load(tmp_path / "node1" / "node_key.pem")


def _post(client: TestClient, node: Node, peer: Keypair, body: bytes, sig: str | None = None):
    signature = sig or batch_signature(peer, node.genesis.chain_id, body)
    return client.post(
        "/p2p/batch", content=body, headers={FROM_HEADER: peer.address, SIG_HEADER: signature}
    )


def test_a_signed_batch_from_a_peer_is_taken(two_validators) -> None:
    client, node, peer = two_validators
    body = json.dumps(
        {"from": peer.address, "to": node.key.address, "consensus": [], "txs": []}
    ).encode()
    response = _post(client, node, peer, body)
    assert response.status_code == 200
    assert response.json() == {"consensus": 0, "txs": 0}
    assert response.headers["content-type"] == "application/json"


def test_bad_batches_get_error_bodies(two_validators) -> None:
    client, node, peer = two_validators
    body = json.dumps({"from": peer.address, "to": node.key.address}).encode()
    forged = _post(client, node, peer, body, sig="00" * 64)
    assert forged.status_code == 401
    assert forged.json() == {"detail": "batch signature is not the sender's", "error": "http"}
    malformed = _post(client, node, peer, body)  # signed, but lacks "consensus" and "txs"
    assert malformed.status_code == 400
    assert malformed.json()["error"] == "EncodingError"
    assert "malformed p2p batch" in malformed.json()["detail"]
    misaddressed = json.dumps(
        {"from": peer.address, "to": peer.address, "consensus": [], "txs": []}
    ).encode()
    assert _post(client, node, peer, misaddressed).status_code == 400
    stranger = Keypair.generate()
    refused = _post(client, node, stranger, body)
    assert refused.status_code == 403 and refused.json()["error"] == "http"
    too_big = b" " * (node.settings.max_body_bytes * 4 + 1)
    assert _post(client, node, peer, too_big).status_code == 413


def test_other_routes_still_reach_fastapi(two_validators) -> None:
    client, node, _ = two_validators
    assert client.get("/p2p/status").json()["height"] == node.chain.height
    assert client.get("/p2p/batch").status_code == 405  # only POST takes the fast path


def _consensus_batch(node: Node, peer: Keypair, messages: list) -> bytes:
    return json.dumps(
        {"from": peer.address, "to": node.key.address, "consensus": messages, "txs": []}
    ).encode()


def _prepare(node: Node, key: Keypair) -> dict:
    msg = sign_message(key, node.genesis.chain_id, Prepare, view=0, height=1, block_hash="ab" * 32)
    return node.codec.encode_message(msg)


def test_an_unsigned_batch_carries_consensus_messages_only(two_validators) -> None:
    client, node, peer = two_validators
    headers = {FROM_HEADER: peer.address}
    stepped: list = []
    assert node.driver is not None
    feed = node.driver.feed
    node.driver.feed = lambda events: (stepped.extend(events), feed(events))  # type: ignore
    good = client.post(
        "/p2p/batch", content=_consensus_batch(node, peer, [_prepare(node, peer)]), headers=headers
    )
    assert good.status_code == 200 and good.json() == {"consensus": 1, "txs": 0}
    assert [type(e.msg).__name__ for e in stepped] == ["Prepare"]
    # A forged message (signed by a stranger, claiming to be the peer) stops the batch there.
    forged = _prepare(node, Keypair.generate())
    forged["sender"] = peer.address
    stepped.clear()
    body = _consensus_batch(node, peer, [forged, _prepare(node, peer)])
    assert client.post("/p2p/batch", content=body, headers=headers).status_code == 200
    assert stepped == []
    with_txs = json.dumps(
        {"from": peer.address, "to": node.key.address, "consensus": [], "txs": [{"x": 1}]}
    ).encode()
    refused = client.post("/p2p/batch", content=with_txs, headers=headers)
    assert refused.status_code == 400 and "must be signed" in refused.json()["detail"]
