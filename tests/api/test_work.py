"""`GET /work`: open jobs assigned to r of the active miners by rendezvous hashing, stealing from
deep queues, reveals-only polls; `GET /work/tensors`: several tensors in one framed answer;
`POST /work/results`: statuses and outputs of many jobs, long-polled until all are final."""

from __future__ import annotations

import base64
import time
from collections import Counter
from types import SimpleNamespace
from typing import Any

import numpy as np
from fastapi.testclient import TestClient

from api.core.node import Node
from api.routes import work as work_route
from api.routes.assignment import STALE_S, Pending, rank_miners
from api.routes.work import _takes
from ledger import kernels
from ledger.identity import Keypair
from ledger.tensor import Tensor
from ledger.transactions import (
    COMMIT_RESULT,
    POST_JOB,
    REVEAL_RESULT,
    commit_body,
    post_job_body,
    reveal_body,
    sign_tx,
    tensor_input,
)

KEYS = [Keypair.generate() for _ in range(3)]
MINERS = [k.address for k in KEYS]


def _post_jobs(client: TestClient, node: Node, key: Keypair, count: int) -> list[str]:
    ids = []
    for i in range(count):
        rng = np.random.default_rng(i)
        inputs = [
            Tensor(rng.integers(-4096, 4096, size=(2, 3), dtype=np.int64), 12),
            Tensor(rng.integers(-4096, 4096, size=(3, 2), dtype=np.int64), 12),
            Tensor(rng.integers(-4096, 4096, size=(2,), dtype=np.int64), 12),
        ]
        for t in inputs:
            assert client.put("/api/v1/tensors", content=t.to_bytes()).status_code == 201
        body = post_job_body(
            op="dense_forward",
            kernel_version=kernels.KERNEL_VERSION,
            inputs=[tensor_input(t) for t in inputs],
            params={"act": "relu", "out_frac": 12},
            replication=2,
            reward=1,
            deadline=1000,
        )
        tx = sign_tx(key, node.genesis.chain_id, POST_JOB, i, body)
        assert client.post("/api/v1/txs", json=tx.to_dict()).status_code == 202
        ids.append(tx.hash)
    deadline = time.monotonic() + 10
    while not all(j in node.chain.state.jobs for j in ids):
        assert time.monotonic() < deadline, "the single node did not commit the jobs"
        client.get("/api/v1/status")  # lets the app's event loop run
        time.sleep(0.02)
    return ids


def _go_idle(client: TestClient, node: Node, key: Keypair, ids: list[str]) -> None:
    """Commit `key`'s miner to every job assigned to it, so it has no job of its own left."""
    mine = [j for j in ids if key.address in rank_miners(j, frozenset(MINERS))[:2]]
    for nonce, job_id in enumerate(mine):
        body = commit_body(job_id, key.address, ["ee" * 32], "ab" * 32)
        tx = sign_tx(key, node.genesis.chain_id, COMMIT_RESULT, nonce, body)
        assert client.post("/api/v1/txs", json=tx.to_dict()).status_code == 202
    deadline = time.monotonic() + 10
    while not all(key.address in node.chain.state.jobs[j].commits for j in mine):
        assert time.monotonic() < deadline, "the single node did not commit the commitments"
        client.get("/api/v1/status")
        time.sleep(0.02)


def _work(client: TestClient, miner: str, limit: int) -> dict[str, Any]:
    response = client.get("/api/v1/work", params={"miner": miner, "limit": limit})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_each_open_job_is_assigned_to_its_r_highest_ranked_active_miners(single_node) -> None:
    client, node, key = single_node
    ids = _post_jobs(client, node, key, 12)
    for miner in MINERS:  # every miner polls once: all three are active
        assert _work(client, miner, 0)["commit"] == []
    lists = {m: [j["id"] for j in _work(client, m, 1)["commit"]] for m in MINERS}
    queues = {m: [j["id"] for j in _work(client, m, 100)["commit"]] for m in MINERS}
    jobs = node.chain.state.jobs
    fifo = sorted(ids, key=lambda j: (jobs[j].open_height, j))
    for miner in MINERS:
        own = [j for j in fifo if miner in rank_miners(j, frozenset(MINERS))[:2]]
        # A miner's own jobs come first, oldest first; then (maybe) jobs it may steal.
        assert queues[miner][: len(own)] == own
        assert not set(queues[miner][len(own) :]) & set(own)
        assert lists[miner] == queues[miner][:1]


def test_an_idle_miner_steals_only_jobs_deep_in_their_owners_queues(single_node) -> None:
    client, node, key = single_node
    ids = _post_jobs(client, node, key, 30)
    for miner in MINERS:
        _work(client, miner, 0)
    owners, thief = MINERS[:2], KEYS[2]
    _go_idle(client, node, thief, ids)
    for owner in owners:
        _work(client, owner, 2)  # each owner's reach: 2 jobs
    answer = _work(client, thief.address, 30)
    offered = [j["id"] for j in answer["commit"]]
    assert offered and answer["stolen"] == offered, "an idle miner is offered only steals"
    jobs = node.chain.state.jobs
    fifo = sorted(ids, key=lambda j: (jobs[j].open_height, j))
    owners_of = {
        j: [m for m in rank_miners(j, frozenset(MINERS)) if m not in jobs[j].commits][
            : 2 - len(jobs[j].commits)
        ]
        for j in fifo
    }
    queue = {m: [j for j in fifo if m in owners_of[j]] for m in owners}
    for job_id in offered:
        assert thief.address not in jobs[job_id].commits
        assert owners_of[job_id], "a job with free slots has owners"
        for owner in owners_of[job_id]:
            assert queue[owner].index(job_id) >= 2  # beyond the owner's reach
    busy = _work(client, owners[0], 30)
    assert busy["stolen"] == [], "a miner with jobs of its own steals nothing"


def test_a_thief_s_pending_commitment_takes_the_lowest_ranked_owner_s_slot() -> None:
    a, b, thief = "aa" * 32, "bb" * 32, "cc" * 32
    job = SimpleNamespace(id="11" * 32, replication=2, commits={}, reveals={})
    idle = Pending()
    assert _takes(job, a, (a, b), idle) and _takes(job, b, (a, b), idle)  # type: ignore[arg-type]
    stolen = Pending(senders={job.id: Counter([thief])})
    assert _takes(job, a, (a, b), stolen)  # type: ignore[arg-type]
    assert not _takes(job, b, (a, b), stolen)  # type: ignore[arg-type]
    both = Pending(senders={job.id: Counter([thief, a])})
    assert not _takes(job, b, (a, b), both)  # type: ignore[arg-type]
    own = Pending(senders={job.id: Counter([a])})
    assert not _takes(job, a, (a, b), own) and _takes(job, b, (a, b), own)  # type: ignore[arg-type]


def test_limit_zero_asks_for_reveals_only(single_node) -> None:
    client, node, key = single_node
    _post_jobs(client, node, key, 2)
    answer = _work(client, MINERS[0], 0)
    assert (answer["commit"], answer["reveal"], answer["stolen"]) == ([], [], [])
    assert _work(client, MINERS[0], 5)["commit"]


def test_work_tensors_returns_the_asked_tensors_framed_in_order(single_node) -> None:
    client, _node, _key = single_node
    tensors = [Tensor(np.arange(n, dtype=np.int64), 3) for n in (1, 5, 2)]
    for t in tensors:
        client.put("/api/v1/tensors", content=t.to_bytes())
    order = [tensors[1].hash, tensors[0].hash, tensors[1].hash, tensors[2].hash]
    response = client.get("/api/v1/work/tensors", params=[("hash", h) for h in order])
    assert response.status_code == 200, response.text
    blob, at, got = response.content, 0, []
    while at < len(blob):
        size = int.from_bytes(blob[at : at + 4], "big")
        got.append(Tensor.from_bytes(blob[at + 4 : at + 4 + size]).hash)
        at += 4 + size
    assert got == order
    missing = client.get("/api/v1/work/tensors", params={"hash": "ee" * 32})
    assert missing.status_code == 404 and "ee" * 32 in missing.json()["detail"]
    bad = client.get("/api/v1/work/tensors", params={"hash": "nothex"})
    assert bad.status_code == 422 and "not a tensor hash" in bad.json()["detail"]
    assert client.get("/api/v1/work/tensors").status_code == 422


def test_a_job_its_owners_leave_uncommitted_goes_stale_and_may_be_stolen(single_node) -> None:
    """An owner that died or never commits (a copier) must not hold a job until its deadline."""
    client, node, key = single_node
    ids = _post_jobs(client, node, key, 3)
    for miner in MINERS:
        _work(client, miner, 0)
    ranks = {j: rank_miners(j, frozenset(MINERS))[:2] for j in ids}
    # The thief: one left out of some job; it commits to its own jobs and is idle.
    thief = max(KEYS, key=lambda k: sum(k.address not in ranks[j] for j in ids))
    not_mine = {j for j in ids if thief.address not in ranks[j]}
    assert not_mine
    _go_idle(client, node, thief, ids)
    for owner in MINERS:  # every owner has its jobs within reach (limit 5): none is deep
        if owner != thief.address:
            _work(client, owner, 5)
    assert _work(client, thief.address, 5)["commit"] == []
    time.sleep(STALE_S + 0.6)
    offered = {j["id"] for j in _work(client, thief.address, 5)["commit"]}
    assert offered == not_mine


def test_a_stale_job_goes_to_an_idle_miner_that_has_not_committed_to_it(single_node) -> None:
    """A copier holds one slot, the other owner committed and is idle: a third miner steals it."""
    client, node, key = single_node
    ids = _post_jobs(client, node, key, 1)
    for miner in MINERS:
        _work(client, miner, 0)
    (job_id,) = ids
    first, copier, third = (
        next(k for k in KEYS if k.address == m) for m in rank_miners(job_id, frozenset(MINERS))
    )
    _go_idle(client, node, first, ids)  # the honest owner committed; the copier never will
    _work(client, copier.address, 5)
    time.sleep(STALE_S + 0.6)
    assert _work(client, first.address, 5)["commit"] == []
    assert [j["id"] for j in _work(client, third.address, 5)["commit"]] == [job_id]


def _settle(client: TestClient, node: Node, job_id: str) -> list[str]:
    """Two miners compute the job, commit and reveal the same outputs: it settles."""
    job = node.chain.state.jobs[job_id]
    inputs = [Tensor.from_bytes(node.tensor_bytes(ref["tensor"])) for ref in job.inputs]
    outputs = kernels.execute(job.op, job.params, inputs)
    for t in outputs:
        assert client.put("/api/v1/tensors", content=t.to_bytes()).status_code == 201
    hashes = [t.hash for t in outputs]
    for phase in (COMMIT_RESULT, REVEAL_RESULT):
        for key in KEYS[:2]:
            salt = "5a" * 32
            body = (
                commit_body(job_id, key.address, hashes, salt)
                if phase == COMMIT_RESULT
                else reveal_body(job_id, hashes, salt)
            )
            nonce = 0 if phase == COMMIT_RESULT else 1
            tx = sign_tx(key, node.genesis.chain_id, phase, nonce, body)
            assert client.post("/api/v1/txs", json=tx.to_dict()).status_code == 202
        want = "revealing" if phase == COMMIT_RESULT else "settled"
        deadline = time.monotonic() + 10
        while node.chain.state.jobs[job_id].status != want:
            assert time.monotonic() < deadline, f"the job did not reach {want}"
            client.get("/api/v1/status")
            time.sleep(0.02)
    return hashes


def test_work_results_lists_statuses_and_outputs_and_says_when_all_are_final(
    single_node,
) -> None:
    client, node, key = single_node
    first, second = _post_jobs(client, node, key, 2)
    unknown = "ab" * 32
    answer = client.post("/api/v1/work/results", json={"jobs": [first, unknown, second]})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["done"] is False and body["height"] == node.chain.height
    assert [(j["id"], j["status"]) for j in body["jobs"]] == [
        (first, "open"),
        (unknown, "unknown"),
        (second, "open"),
    ]
    assert body["jobs"][1] == {
        "id": unknown,
        "status": "unknown",
        "outputs": None,
        "settlement": None,
        "settled_height": None,
        "reason": "",
    }
    outputs = _settle(client, node, first)
    started = time.monotonic()
    # All final at once: no wait, even with a long `wait`.
    done = client.post("/api/v1/work/results?wait=30", json={"jobs": [first, first]}).json()
    assert time.monotonic() - started < 5
    assert done["done"] is True
    settled = node.chain.state.jobs[first]
    assert (
        done["jobs"]
        == [
            {
                "id": first,
                "status": "settled",
                "outputs": outputs,
                "settlement": settled.settlement,
                "settled_height": settled.settled_height,
                "reason": "",
            }
        ]
        * 2
    )
    # One job still open: the long-poll times out and says so.
    mixed = client.post("/api/v1/work/results?wait=0.3", json={"jobs": [first, second]}).json()
    assert mixed["done"] is False
    assert [j["status"] for j in mixed["jobs"]] == ["settled", "open"]


def test_work_results_refuses_bad_bodies_with_a_reason(single_node) -> None:
    client, _node, _key = single_node
    for body, status, words in [
        ({"ids": []}, 422, "body must be"),
        ({"jobs": "x"}, 422, "body must be"),
        ({"jobs": ["short"]}, 422, "64 lowercase hex"),
        ({"jobs": ["ab" * 32] * 5001}, 413, "the limit is 5000"),
    ]:
        answer = client.post("/api/v1/work/results", json=body)
        assert answer.status_code == status, answer.text
        assert words in answer.json()["detail"]
    assert client.post("/api/v1/work/results", content=b"{").status_code == 400


def test_work_inlines_the_commit_jobs_input_tensors_when_asked(single_node) -> None:
    client, node, key = single_node
    _post_jobs(client, node, key, 4)
    miner = MINERS[0]
    plain = _work(client, miner, 100)
    assert plain["commit"] and plain["tensors"] == {}, "no inline tensors unless asked"
    response = client.get(
        "/api/v1/work", params={"miner": miner, "limit": 100, "inline_bytes": 1 << 20}
    )
    assert response.status_code == 200, response.text
    answer = response.json()
    wanted = [h for job in answer["commit"] for h in job["input_hashes"]]
    assert list(answer["tensors"]) == list(dict.fromkeys(wanted)), "every input, in job order"
    for tensor_hash, encoded in answer["tensors"].items():
        blob = base64.b64decode(encoded)
        assert Tensor.from_bytes(blob, expected_hash=tensor_hash).hash == tensor_hash
    sizes = [len(base64.b64decode(answer["tensors"][h])) for h in dict.fromkeys(wanted)]
    # A budget of the first four tensors and half the fifth brings exactly the first four.
    budget = sum(sizes[:4]) + sizes[4] // 2
    capped = client.get(
        "/api/v1/work", params={"miner": miner, "limit": 100, "inline_bytes": budget}
    ).json()
    assert list(capped["tensors"]) == list(dict.fromkeys(wanted))[:4]


def test_work_caps_inline_bytes_and_refuses_bad_values(single_node, monkeypatch) -> None:
    client, node, key = single_node
    _post_jobs(client, node, key, 4)
    miner = MINERS[0]
    monkeypatch.setattr(work_route, "MAX_INLINE_BYTES", 1)  # smaller than any tensor
    capped = client.get("/api/v1/work", params={"miner": miner, "limit": 9, "inline_bytes": 10**9})
    assert capped.status_code == 200, capped.text
    assert capped.json()["commit"] and capped.json()["tensors"] == {}
    for value in ("-1", "lots", "1.5"):
        bad = client.get("/api/v1/work", params={"miner": miner, "inline_bytes": value})
        assert bad.status_code == 422, bad.text
        assert "inline_bytes" in bad.json()["detail"]
