"""End to end: four real `layerchain node` processes on loopback form a fault-tolerant chain.

The tests share one testnet (module fixture) and run in order, each leaving the network healthy
for the next: ordering and identical ledgers, a job's whole life over REST, the primary killed,
a node restarted, a wiped database, a partition, and all four restarted at once.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from typing import Any

import httpx
import numpy as np
import pytest

from api.testing import LocalTestnet, next_nonce, sign_transfers, wait_committed
from ledger import kernels
from ledger.tensor import Tensor
from ledger.transactions import (
    POST_JOB,
    SUBMIT_RESULT,
    TRANSFER,
    Tx,
    post_job_body,
    sign_tx,
    submit_body,
    tensor_input,
    transfer_body,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

ALL = [0, 1, 2, 3]


def submit_round_robin(net: LocalTestnet, txs: list[dict], nodes: list[int]) -> list[str]:
    hashes = []
    for i, tx in enumerate(txs):
        response = net.post(nodes[i % len(nodes)], "/api/v1/txs", json=tx)
        assert response.status_code == 202, response.text
        hashes.append(response.json()["tx_hash"])
    return hashes


def post_add_job(net: LocalTestnet, node: int, inputs: list[Tensor], **fields: Any) -> Tx:
    """The funded client posts an r = 1 `add` job of `inputs` through `node` (accepted: 202)."""
    body = post_job_body(
        op="add",
        kernel_version=kernels.KERNEL_VERSION,
        inputs=[tensor_input(t) for t in inputs],
        params={},
        replication=1,
        reward=10,
        **fields,
    )
    nonce = next_nonce(net, net.client.address)
    post = sign_tx(net.client, net.genesis.chain_id, POST_JOB, nonce, body)
    response = net.post(node, "/api/v1/txs", json=post.to_dict())
    assert response.status_code == 202, response.text
    return post


def chain_of(net: LocalTestnet, i: int, upto: int) -> list[str]:
    """Block hashes 1..upto as node i serves them."""
    out: list[str] = []
    before = upto + 1
    while len(out) < upto:
        page = net.get(i, "/api/v1/blocks", params={"before": before, "limit": 200})
        out.extend(b["hash"] for b in page["blocks"])
        if page["next_before"] is None:
            break
        before = page["next_before"]
    return out[::-1]


def verify_ledger_file(net: LocalTestnet, i: int) -> str:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "layerchain",
            "verify",
            str(net.home(i) / "data" / "ledger.db"),
            "--genesis",
            str(net.root / "genesis.json"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def assert_identical_chains(net: LocalTestnet, nodes: list[int]) -> int:
    height = min(net.height(i) for i in nodes)
    chains = [chain_of(net, i, height) for i in nodes]
    assert all(c == chains[0] for c in chains), "nodes disagree on the chain"
    assert len(chains[0]) == height
    return height


def test_txs_to_different_nodes_commit_in_one_order_everywhere(testnet: LocalTestnet) -> None:
    net = testnet
    txs = sign_transfers(net, 40)
    hashes = submit_round_robin(net, txs[:20], ALL)
    batch = net.post(2, "/api/v1/txs/batch", json={"txs": txs[20:]})
    assert batch.status_code == 202 and batch.json()["accepted"] == 20, batch.text
    hashes += [r["tx_hash"] for r in batch.json()["results"]]
    where = wait_committed(net, hashes, ALL)
    # One order: the (height, index) of every tx is the same on all four nodes, and the nonces
    # were executed in order (every receipt ok).
    for i in ALL:
        for tx_hash in hashes:
            body = net.get(i, f"/api/v1/txs/{tx_hash}")
            assert (body["height"], body["index"]) == where[tx_hash]
            assert body["receipt"]["ok"], body["receipt"]
    order = sorted(hashes, key=lambda h: where[h])
    assert [net.get(0, f"/api/v1/txs/{h}")["tx"]["nonce"] for h in order] == list(range(40))
    height = assert_identical_chains(net, ALL)
    for i in ALL:
        assert verify_ledger_file(net, i).startswith(f"OK: {height} blocks")
    # Every node's certificates check out against the genesis validator set.
    cert = net.get(3, f"/api/v1/blocks/{height}/certificate")
    assert cert["valid"] and len(cert["signatures"]) >= net.genesis.quorum


def test_a_job_lives_its_whole_life_over_rest(testnet: LocalTestnet) -> None:
    """Tensors up to one node, job posted there, found by a miner on another, settled on all."""
    net = testnet
    a = Tensor(np.arange(12, dtype=np.int64).reshape(3, 4), 8)
    b = Tensor(np.full((3, 4), 5, dtype=np.int64), 8)
    for t in (a, b):
        up = httpx.put(
            f"{net.url(0)}/api/v1/tensors",
            content=t.to_bytes(),
            params={"hash": t.hash},
            timeout=10,
        )
        assert up.status_code == 201, up.text
        assert up.json()["hash"] == t.hash
    post = post_add_job(net, 0, [a, b], deadline=50, run="e2e-run", label="add-1")
    job_id = post.hash
    # The miner long-polls another node until the job is open there.
    page = net.get(
        2, "/api/v1/jobs", params={"status": "open", "run": "e2e-run", "wait": 20}, timeout=30
    )
    assert [j["id"] for j in page["jobs"]] == [job_id]
    job = page["jobs"][0]
    assert job["phase"] == "commit" and job["input_hashes"] == [a.hash, b.hash]
    # Tensor replication: the inputs are on every validator, hash checked.
    inputs = []
    for h in job["input_hashes"]:
        blob = httpx.get(f"{net.url(3)}/api/v1/tensors/{h}", timeout=10)
        assert blob.status_code == 200
        inputs.append(Tensor.from_bytes(blob.content, expected_hash=h))
    (out,) = kernels.execute(job["op"], job["params"], inputs)
    miner = net.miners[0]
    up = httpx.put(f"{net.url(1)}/api/v1/tensors", content=out.to_bytes(), timeout=10)
    assert up.status_code == 201
    miner_nonce = net.get(1, f"/api/v1/accounts/{miner.address}")["nonce"]
    submit = sign_tx(
        miner, net.genesis.chain_id, SUBMIT_RESULT, miner_nonce, submit_body(job_id, [out.hash])
    )
    assert net.post(1, "/api/v1/txs", json=submit.to_dict()).status_code == 202
    wait_committed(net, [submit.hash], ALL)
    deadline = time.monotonic() + 20
    while True:
        states = [net.get(i, f"/api/v1/jobs/{job_id}") for i in ALL]
        if all(s["status"] == "settled" for s in states) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert all(s["status"] == "settled" and s["outputs"] == [out.hash] for s in states), states
    by_run = net.get(0, "/api/v1/jobs", params={"run": "e2e-run"})
    assert [j["id"] for j in by_run["jobs"]] == [job_id]
    account = net.get(3, f"/api/v1/accounts/{miner.address}")
    assert account["miner"]["accepted"] == 1
    found = net.get(0, "/api/v1/search", params={"q": job_id})
    assert found["kind"] == "job"


def test_a_censoring_primary_is_replaced(testnet: LocalTestnet) -> None:
    """The primary leaves out one sender's txs; the backups that hold them change view."""
    net = testnet
    primary = next(
        v["index"] for v in net.get(0, "/api/v1/validators")["validators"] if v["is_primary"]
    )
    view = net.get(primary, "/api/v1/status")["view"]
    victim = net.miners[1]
    response = net.post(primary, "/p2p/admin/censor", json={"senders": [victim.address]})
    assert response.status_code == 200
    try:
        nonce = next_nonce(net, victim.address)
        tx = sign_tx(
            victim, net.genesis.chain_id, TRANSFER, nonce, transfer_body(net.client.address, 1)
        )
        backup = (primary + 1) % net.n
        assert net.post(backup, "/api/v1/txs", json=tx.to_dict()).status_code == 202
        wait_committed(net, [tx.hash], ALL, timeout=60)
        assert all(net.get(i, "/api/v1/status")["view"] > view for i in ALL)
    finally:
        net.post(primary, "/p2p/admin/censor", json={"senders": []})


def test_kill_primary_then_view_change_and_restart_catches_up(testnet: LocalTestnet) -> None:
    net = testnet
    view = net.get(1, "/api/v1/validators")["view"]
    primary = next(
        v["index"] for v in net.get(1, "/api/v1/validators")["validators"] if v["is_primary"]
    )
    net.kill(primary)  # SIGKILL
    alive = [i for i in ALL if i != primary]
    hashes = submit_round_robin(net, sign_transfers(net, 6, start_nonce=None), alive)
    wait_committed(net, hashes, alive, timeout=60)
    views = [net.get(i, "/api/v1/status")["view"] for i in alive]
    assert all(v > view for v in views), views
    new_primary = net.get(alive[0], "/api/v1/status")["primary"]
    assert new_primary != net.genesis.validators[primary].address
    # Restarted, the old primary catches up by state transfer and rejoins the current view.
    net.start(primary)
    net.wait_healthy([primary])
    target = max(net.height(i) for i in alive)
    net.wait_height(target, [primary], timeout=30)
    hashes = submit_round_robin(net, sign_transfers(net, 4), ALL)
    wait_committed(net, hashes, ALL, timeout=60)
    assert_identical_chains(net, ALL)


def test_node_with_deleted_database_resyncs(testnet: LocalTestnet) -> None:
    net = testnet
    victim = 2
    net.kill(victim)
    shutil.rmtree(net.home(victim) / "data")
    hashes = submit_round_robin(net, sign_transfers(net, 4), [0, 1, 3])
    wait_committed(net, hashes, [0, 1, 3], timeout=60)
    net.start(victim)
    net.wait_healthy([victim])
    target = max(net.height(i) for i in [0, 1, 3])
    net.wait_height(target, [victim], timeout=60)
    assert_identical_chains(net, ALL)
    verify_ledger_file(net, victim)


def test_a_ledger_that_lost_its_last_blocks_is_refetched(testnet: LocalTestnet) -> None:
    """What a power loss can do to a ledger committed without fsync (PROTOCOL §8.1): the node
    comes back with an older ledger file but its full consensus WAL; it must fetch the lost
    blocks again and end identical to the others."""
    import sqlite3

    net = testnet
    victim = 1
    db = net.home(victim) / "data" / "ledger.db"
    snapshot = net.home(victim) / "older-ledger.db"
    src, dst = sqlite3.connect(db), sqlite3.connect(snapshot)
    src.backup(dst)  # a consistent copy of the ledger as it is now
    src.close()
    dst.close()
    old_height = net.height(victim)
    hashes = submit_round_robin(net, sign_transfers(net, 6, start_nonce=None), ALL)
    wait_committed(net, hashes, ALL, timeout=60)
    assert net.height(victim) > old_height
    net.kill(victim)
    for suffix in ("-wal", "-shm"):
        (db.parent / (db.name + suffix)).unlink(missing_ok=True)
    shutil.move(snapshot, db)  # the last blocks are gone; data/consensus.wal is intact
    net.start(victim)
    net.wait_healthy([victim])
    target = max(net.height(i) for i in ALL if i != victim)
    net.wait_height(target, [victim], timeout=60)
    hashes = submit_round_robin(net, sign_transfers(net, 4), ALL)
    wait_committed(net, hashes, ALL, timeout=60)
    assert_identical_chains(net, ALL)
    verify_ledger_file(net, victim)


def test_partitioned_node_falls_behind_then_catches_up(testnet: LocalTestnet) -> None:
    net = testnet
    cut = 3
    net.partition(cut, True)
    try:
        before = net.height(cut)
        hashes = submit_round_robin(net, sign_transfers(net, 6, start_nonce=None), [0, 1, 2])
        wait_committed(net, hashes, [0, 1, 2], timeout=60)
        assert net.height(cut) == before, "an isolated node must not commit anything"
    finally:
        net.partition(cut, False)
    target = max(net.height(i) for i in [0, 1, 2])
    net.wait_height(target, [cut], timeout=60)
    hashes = submit_round_robin(net, sign_transfers(net, 4), ALL)
    wait_committed(net, hashes, ALL, timeout=60)
    assert_identical_chains(net, ALL)


def test_a_twin_whose_nonce_was_used_elsewhere_is_dropped(testnet: LocalTestnet) -> None:
    """A client that re-signs after a failed submission can leave two txs with one nonce at two
    validators. Once one commits the other can never be ordered, and the validator holding it
    drops it — it used to stay pending for ever, counted as waiting by the view timer and as a
    pending commitment by the work route (a job offered to nobody)."""
    net = testnet
    cut = 3
    nonce = next_nonce(net, net.client.address)
    to = net.miners[0].address if net.miners else net.client.address
    twin, winner = (
        sign_tx(net.client, net.genesis.chain_id, TRANSFER, nonce, transfer_body(to, amount))
        for amount in (1, 2)
    )
    net.partition(cut, True)
    try:
        response = net.post(cut, "/api/v1/txs", json=twin.to_dict())
        assert response.status_code == 202, response.text
        assert net.get(cut, f"/api/v1/txs/{twin.hash}")["status"] == "pending"
        (winner_hash,) = submit_round_robin(net, [winner.to_dict()], [0])
        wait_committed(net, [winner_hash], [0, 1, 2], timeout=60)
    finally:
        net.partition(cut, False)
    wait_committed(net, [winner_hash], [cut], timeout=60)
    deadline = time.monotonic() + 30
    while httpx.get(f"{net.url(cut)}/api/v1/txs/{twin.hash}", timeout=10).status_code != 404:
        assert time.monotonic() < deadline, "the stale twin is still pending at the cut node"
        time.sleep(0.2)
    hashes = submit_round_robin(net, sign_transfers(net, 4), ALL)
    wait_committed(net, hashes, ALL, timeout=60)
    assert_identical_chains(net, ALL)


def test_all_four_restarted_at_once_continue_the_chain(testnet: LocalTestnet) -> None:
    net = testnet
    height = assert_identical_chains(net, ALL)
    for i in ALL:
        net.kill(i)
    net.start_all()
    net.wait_healthy(timeout=60)
    assert all(net.height(i) == height for i in ALL)
    hashes = submit_round_robin(net, sign_transfers(net, 8), ALL)
    where = wait_committed(net, hashes, ALL, timeout=60)
    assert min(h for h, _ in where.values()) > height
    final = assert_identical_chains(net, ALL)
    for i in ALL:
        verify_ledger_file(net, i)
    assert final > height


def test_an_abandoned_job_expires_on_an_idle_chain_then_the_chain_idles(
    testnet: LocalTestnet,
) -> None:
    """No miner takes the job and nothing else is sent: heartbeat blocks (empty, one per
    `heartbeat_s`) carry the chain past its commit deadline; once no job is live, they stop."""
    net = testnet
    a = Tensor(np.arange(4, dtype=np.int64), 8)
    up = httpx.put(f"{net.url(1)}/api/v1/tensors", content=a.to_bytes(), timeout=10)
    assert up.status_code == 201, up.text
    post = post_add_job(net, 1, [a, a], deadline=2, run="abandoned")
    wait_committed(net, [post.hash], ALL)
    posted_at = net.height(0)
    deadline = time.monotonic() + 30
    while net.get(2, f"/api/v1/jobs/{post.hash}")["status"] != "expired":
        assert time.monotonic() < deadline, "the job never expired"
        time.sleep(0.2)
    expired_at = net.height(2)
    assert expired_at > posted_at
    empty = [net.get(2, f"/api/v1/blocks/{h}") for h in range(posted_at + 1, expired_at + 1)]
    assert all(b["header"]["n_txs"] == 0 for b in empty), "blocks other than heartbeats came"
    time.sleep(3.0)  # three heartbeat intervals with nothing live: no block
    assert [net.height(i) for i in ALL] == [expired_at] * 4
    assert_identical_chains(net, ALL)
    assert verify_ledger_file(net, 3).startswith(f"OK: {expired_at} blocks")


def test_a_dead_primary_on_an_idle_chain_is_replaced_to_send_the_heartbeats(
    testnet: LocalTestnet,
) -> None:
    """The primary dies while a job is live and nothing else is sent: no tx waits, so no
    ordinary view timer runs; the backups expect the heartbeat their hosts say is owed, change
    view when it does not come, and the new primary's heartbeats expire the job."""
    net = testnet
    primary = next(
        v["index"] for v in net.get(1, "/api/v1/validators")["validators"] if v["is_primary"]
    )
    alive = [i for i in ALL if i != primary]
    a = Tensor(np.arange(4, dtype=np.int64) + 7, 8)
    up = httpx.put(f"{net.url(alive[0])}/api/v1/tensors", content=a.to_bytes(), timeout=10)
    assert up.status_code == 201, up.text
    post = post_add_job(net, alive[0], [a, a], deadline=2, run="orphaned")
    wait_committed(net, [post.hash], ALL)
    view = net.get(alive[0], "/api/v1/status")["view"]
    net.kill(primary)
    deadline = time.monotonic() + 60
    while net.get(alive[0], f"/api/v1/jobs/{post.hash}")["status"] != "expired":
        assert time.monotonic() < deadline, "the job never expired"
        time.sleep(0.2)
    assert all(net.get(i, "/api/v1/status")["view"] > view for i in alive)
    net.start(primary)
    net.wait_healthy([primary])
    target = max(net.height(i) for i in alive)
    net.wait_height(target, [primary], timeout=30)
    assert_identical_chains(net, ALL)
