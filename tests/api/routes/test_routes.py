"""The read routes of one in-process validator: status, health, validators, blocks, search, SSE,
metrics, and the p2p endpoints' refusals."""

from __future__ import annotations

import json
import time

from fastapi.testclient import TestClient

from api.core.node import Node
from ledger.identity import Keypair
from ledger.transactions import TRANSFER, sign_tx, transfer_body


def commit_transfers(client: TestClient, node: Node, key: Keypair, count: int) -> list[str]:
    txs = [
        sign_tx(key, node.genesis.chain_id, TRANSFER, i, transfer_body("ab" * 32, 1)).to_dict()
        for i in range(count)
    ]
    body = client.post("/api/v1/txs/batch", json={"txs": txs}).json()
    deadline = time.monotonic() + 10
    while client.get(f"/api/v1/accounts/{key.address}").json()["nonce"] < count:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    return [r["tx_hash"] for r in body["results"]]


def test_status_health_validators(single_node) -> None:
    client, node, _ = single_node
    status = client.get("/api/v1/status").json()
    assert status["chain_id"] == node.genesis.chain_id and status["height"] == 0
    assert status["primary"] == node.key.address
    health = client.get("/api/v1/health")
    assert health.status_code == 200 and health.json()["ok"] and health.json()["database"]
    vals = client.get("/api/v1/validators").json()
    assert vals["n"] == 1 and vals["quorum"] == 1 and vals["validators"][0]["is_primary"]


def test_health_is_503_when_the_database_is_gone(single_node) -> None:
    client, node, _ = single_node
    node.chain.store.engine.dispose()
    node.chain.database_ok = lambda: False  # type: ignore[method-assign]
    health = client.get("/api/v1/health")
    assert health.status_code == 503
    assert not health.json()["ok"] and "database" in health.json()["detail"]


def test_blocks_paging_certificates_and_search(single_node) -> None:
    client, node, key = single_node
    hashes = commit_transfers(client, node, key, 5)
    height = node.chain.height
    assert height >= 1
    page = client.get("/api/v1/blocks", params={"limit": 1}).json()
    assert page["blocks"][0]["height"] == height
    assert page["next_before"] == (height if height > 1 else None)
    block = client.get(f"/api/v1/blocks/{height}").json()
    by_hash = client.get(f"/api/v1/blocks/{block['hash']}").json()
    assert by_hash == block
    cert = client.get(f"/api/v1/blocks/{height}/certificate").json()
    assert cert["valid"] and cert["block_hash"] == block["hash"]
    assert client.get("/api/v1/search", params={"q": str(height)}).json()["kind"] == "block"
    assert client.get("/api/v1/search", params={"q": block["hash"]}).json()["kind"] == "block"
    assert client.get("/api/v1/search", params={"q": hashes[0]}).json()["kind"] == "tx"
    assert client.get("/api/v1/search", params={"q": key.address}).json()["kind"] == "account"
    assert client.get("/api/v1/search", params={"q": "zzz"}).status_code == 404


def test_metrics_count_commits(single_node) -> None:
    client, node, key = single_node
    commit_transfers(client, node, key, 3)
    text = client.get("/metrics").text
    values = {
        line.split()[0]: float(line.split()[1])
        for line in text.splitlines()
        if line and not line.startswith("#")
    }
    assert values["layerchain_txs_committed_total"] == 3
    assert values["layerchain_height"] == node.chain.height
    assert "layerchain_tx_commit_seconds_count" in values


def test_events_stream_sends_committed_blocks(single_node) -> None:
    client, node, key = single_node
    with client.stream("GET", "/api/v1/events") as stream:
        lines = stream.iter_lines()
        assert next(lines) == "event: head"
        assert json.loads(next(lines)[len("data: ") :])["height"] == 0
        tx = sign_tx(key, node.genesis.chain_id, TRANSFER, 0, transfer_body("ab" * 32, 1))
        assert client.post("/api/v1/txs", json=tx.to_dict()).status_code == 202
        event = [next(lines) for _ in range(4)]
    assert event[1] == "id: 1" and event[2] == "event: block"
    data = json.loads(event[3][len("data: ") :])
    assert data["height"] == 1 and data["n_txs"] == 1


def test_p2p_refuses_strangers_and_bad_signatures(single_node) -> None:
    client, node, _ = single_node
    stranger = Keypair.generate()
    r = client.post("/p2p/batch", content=b"{}", headers={"X-Layerchain-From": stranger.address})
    assert r.status_code == 403
    r = client.post(
        "/p2p/batch",
        content=b"{}",
        headers={"X-Layerchain-From": node.key.address, "X-Layerchain-Signature": "00"},
    )
    assert r.status_code == 403  # its own address is not a peer either
    assert client.get("/p2p/status").json()["height"] == node.chain.height
    assert client.get("/p2p/blocks", params={"from": 1}).json() == {"blocks": [], "height": 0}


def test_partition_switch_isolates_the_node(single_node) -> None:
    client, node, _ = single_node
    assert client.post("/p2p/admin/partition", json={"isolated": True}).json()["isolated"]
    assert client.get("/p2p/status").status_code == 503
    client.post("/p2p/admin/partition", json={"isolated": False})
    assert client.get("/p2p/status").status_code == 200
    node.settings.test_admin = False
    assert client.post("/p2p/admin/partition", json={"isolated": True}).status_code == 404


def test_jobs_listing_long_poll_times_out_empty(single_node) -> None:
    client, node, _ = single_node
    node.settings.long_poll_max_s = 0.2
    started = time.monotonic()
    page = client.get("/api/v1/jobs", params={"status": "open", "wait": 5}).json()
    assert page["jobs"] == [] and 0.15 < time.monotonic() - started < 2
    assert client.get("/api/v1/jobs", params={"status": "bogus"}).status_code == 422
    assert client.get("/api/v1/jobs", params={"after": "x"}).status_code == 422


def test_consensus_wal_is_compacted_at_stable_checkpoints(single_node) -> None:
    from api.core.wal import ConsensusWal

    client, node, key = single_node
    interval = node.genesis.params.checkpoint_interval
    for nonce in range(3 * interval + 1):  # one tx per block
        tx = sign_tx(key, node.genesis.chain_id, TRANSFER, nonce, transfer_body("ab" * 32, 1))
        client.post("/api/v1/txs", json=tx.to_dict())
        deadline = time.monotonic() + 10
        while node.chain.height < nonce + 1:
            assert time.monotonic() < deadline
            time.sleep(0.005)
    assert node.chain.height > 3 * interval
    # Without compaction the log would hold ~3 records per block since genesis; compacted, it
    # starts at a stable checkpoint and holds at most a threshold plus one interval's worth.
    from api.core.node import WAL_COMPACT_AFTER
    from ledger.consensus.records import StableRecord

    assert isinstance(node._records[0], StableRecord) and node._records[0].height >= interval
    assert len(node._records) < WAL_COMPACT_AFTER + 4 * interval
    node.wal.flush()
    on_disk = ConsensusWal(node.settings.consensus_wal).records
    assert on_disk == [node.codec.encode_record(r) for r in node._records]


def test_a_committed_tx_has_a_proof_that_the_genesis_alone_verifies(single_node) -> None:
    from ledger.lightclient import verify_tx_proof

    client, node, key = single_node
    hashes = commit_transfers(client, node, key, 3)
    deadline = time.monotonic() + 10
    while (answer := client.get(f"/api/v1/txs/{hashes[2]}/proof")).status_code == 404:
        assert time.monotonic() < deadline, answer.text  # the block store may lag the commit
        time.sleep(0.02)
    assert answer.status_code == 200, answer.text
    checked = verify_tx_proof(answer.json(), node.genesis)
    assert checked.tx.hash == hashes[2] and checked.tx.nonce == 2
    missing = client.get(f"/api/v1/txs/{'ab' * 32}/proof")
    assert missing.status_code == 404 and "no transaction" in missing.json()["detail"]
    assert client.get("/api/v1/txs/xyz/proof").status_code == 422
