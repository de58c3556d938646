"""Batches (PROTOCOL.md §5.3-5.4): `commit_results` / `reveal_results` carry many jobs' results
in one signed tx, `post_jobs` creates many jobs in one.

Each item applies exactly as the single-job tx would; items that cannot apply (a race lost, a
closed phase) are skipped and named in the receipt, the rest apply. The ledger they produce must
pass `verify_ledger`, re-execution included.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from ledger_chain import RELU8, chain, dense_inputs

from ledger.errors import InvalidTransaction
from ledger.harness import ChainHarness
from ledger.kernels import KERNEL_VERSION
from ledger.state import OPEN, REVEALING, SETTLED, WRONG
from ledger.transactions import (
    COMMIT_RESULTS,
    MAX_BATCH_RESULTS,
    POST_JOBS,
    REVEAL_RESULTS,
    Tx,
    batch_job_id,
    commit_body,
    job_input,
    post_job_body,
    posted_jobs,
    result_items,
)
from ledger.verify import verify_ledger


def _post_many(c: ChainHarness, n: int) -> list[str]:
    posts = [
        c.post_job(
            "alice", op="dense_forward", inputs=dense_inputs(c, seed=i), params=RELU8, reward=10
        )
        for i in range(n)
    ]
    result = c.commit_block(posts)
    assert all(r.ok for r in result.receipts)
    return [p.hash for p in posts]


def _audit(c: ChainHarness) -> None:
    assert c.store is not None
    report = verify_ledger(c.store, tensors=c.tensors, reexecute=True)
    assert report.ok, report.summary()


def test_batches_settle_many_jobs_in_two_blocks(tmp_path: Path) -> None:
    c = chain(tmp_path)
    jobs = _post_many(c, 5)
    results = {job_id: c.compute(job_id) for job_id in jobs}

    commits = [c.commit_many(m, results) for m in ("m1", "m2")]
    block = c.commit_block(commits)
    assert all(r.ok and r.message == "" for r in block.receipts)
    assert all(c.job(j).status == REVEALING for j in jobs)  # r = 2 commitments closed each

    block = c.commit_block([c.reveal_many(m, results) for m in ("m1", "m2")])
    assert all(r.ok for r in block.receipts)
    for job_id in jobs:
        job = c.job(job_id)
        assert job.status == SETTLED and job.outputs == results[job_id]
    assert c.state.balance(c.address("m1")) == 5 * 5  # 5 jobs, half of each reward of 10
    assert c.state.nonce(c.address("m1")) == 2  # two txs carried ten results
    _audit(c)


def test_items_that_lose_the_race_are_skipped_and_named(tmp_path: Path) -> None:
    c = chain(tmp_path)
    jobs = _post_many(c, 3)
    results = {job_id: c.compute(job_id) for job_id in jobs}
    # m1 and m2 close job 1 first; m3's batch then loses job 1 but still counts on jobs 0 and 2.
    c.commit_block([c.commit_many(m, {jobs[1]: results[jobs[1]]}) for m in ("m1", "m2")])
    late = c.commit_many("m3", results)
    receipt = c.commit_block([late]).receipts[0]
    assert receipt.ok and receipt.code == "ok"
    assert receipt.message == "not applied: 1 job_not_open"
    assert c.address("m3") in c.job(jobs[0]).commits
    assert c.address("m3") not in c.job(jobs[1]).commits
    assert c.job(jobs[0]).status == OPEN  # one commitment of two

    # A batch in which nothing applies fails as a whole, with the first item's code.
    again = c.commit_many("m3", {jobs[0]: results[jobs[0]], jobs[1]: results[jobs[1]]})
    receipt = c.commit_block([again]).receipts[0]
    assert not receipt.ok and receipt.code == "already_committed"
    assert receipt.message == "not applied: 0 already_committed, 1 job_not_open"
    _audit(c)


def test_a_wrong_item_is_slashed_while_the_rest_of_the_batch_is_paid(tmp_path: Path) -> None:
    c = chain(tmp_path)
    jobs = _post_many(c, 2)
    results = {job_id: c.compute(job_id) for job_id in jobs}
    lie = dict(results)
    lie[jobs[1]] = ["ab" * 32]
    c.commit_block([c.commit_many("honest", results), c.commit_many("liar", lie)])
    c.commit_block([c.reveal_many("honest", results), c.reveal_many("liar", lie)])
    assert c.job(jobs[0]).status == SETTLED
    disputed = c.job(jobs[1])
    assert disputed.status == SETTLED and disputed.outputs == results[jobs[1]]  # re-executed
    assert disputed.verdicts[c.address("liar")] == WRONG
    _audit(c)


def test_a_reveal_batch_must_open_each_commitment(tmp_path: Path) -> None:
    c = chain(tmp_path)
    jobs = _post_many(c, 2)
    results = {job_id: c.compute(job_id) for job_id in jobs}
    c.commit_block([c.commit_many(m, results) for m in ("m1", "m2")])
    forged = dict(results)
    forged[jobs[0]] = ["cd" * 32]  # not what m1 committed to
    receipt = c.commit_block([c.reveal_many("m1", forged)]).receipts[0]
    assert receipt.ok and receipt.message == "not applied: 0 commitment_mismatch"
    assert c.address("m1") not in c.job(jobs[0]).reveals
    assert c.address("m1") in c.job(jobs[1]).reveals
    _audit(c)


def _raw(tx_type: str, body: dict) -> dict:
    return {"type": tx_type, "sender": "ab" * 32, "nonce": 0, "body": body, "signature": "00" * 64}


@pytest.mark.parametrize(
    ("tx_type", "body", "needle"),
    [
        (COMMIT_RESULTS, {"commits": []}, "1 to 64"),
        (COMMIT_RESULTS, {"commits": "x"}, "1 to 64"),
        (COMMIT_RESULTS, {"commits": [1]}, "commits[0] must be an object"),
        (COMMIT_RESULTS, {"commits": [{"job_id": "ab" * 32}]}, "commits[0]"),
        (
            COMMIT_RESULTS,
            {"commits": [{"job_id": "ab" * 32, "commitment": "cd" * 32}] * 2},
            "more than once",
        ),
        (
            COMMIT_RESULTS,
            {"commits": [{"job_id": "ab" * 32, "commitment": "cd" * 32}] * 65},
            "1 to 64",
        ),
        (COMMIT_RESULTS, {"commits": [], "extra": 1}, "unknown fields"),
        (
            REVEAL_RESULTS,
            {"reveals": [{"job_id": "ab" * 32, "outputs": [], "salt": "00" * 32}]},
            "reveals[0]",
        ),
        (REVEAL_RESULTS, {}, "missing"),
    ],
)
def test_malformed_batches_are_invalid(tx_type: str, body: dict, needle: str) -> None:
    with pytest.raises(InvalidTransaction, match=needle.replace("[", r"\[").replace("]", r"\]")):
        Tx.from_dict(_raw(tx_type, body))


def test_result_items_lists_every_job_a_result_tx_names() -> None:
    items = [commit_body(f"{i:02x}" * 32, "ab" * 32, ["ef" * 32], "00" * 32) for i in range(3)]
    tx = Tx.from_dict(_raw(COMMIT_RESULTS, {"commits": items}))
    assert [item["job_id"] for item in result_items(tx)] == [f"{i:02x}" * 32 for i in range(3)]
    assert MAX_BATCH_RESULTS == 64


# --------------------------------------------------------------------------- post_jobs


def _bodies(c: ChainHarness, n: int, reward: int = 10, **kw: Any) -> list[dict[str, Any]]:
    return [_body(c, dense_inputs(c, seed=i), reward=reward, **kw) for i in range(n)]


def _body(c: ChainHarness, inputs: list, op: str = "dense_forward", **kw: Any) -> dict[str, Any]:
    p = c.genesis.params
    return post_job_body(
        op=op,
        kernel_version=KERNEL_VERSION,
        inputs=inputs,
        params=kw.pop("params", RELU8),
        replication=kw.pop("replication", p.replication),
        reward=kw.pop("reward", p.reward_per_job),
        deadline=kw.pop("deadline", p.commit_blocks),
    )


def test_post_jobs_creates_every_job_under_derived_ids(tmp_path: Path) -> None:
    c = chain(tmp_path)
    batch = c.post_jobs("alice", _bodies(c, 3))
    receipt = c.commit_block([batch]).receipts[0]
    assert receipt.ok
    ids = [job_id for job_id, _ in posted_jobs(batch)]
    assert ids == [batch_job_id(batch.hash, i) for i in range(3)] and len(set(ids)) == 3
    assert c.state.balance(c.address("alice")) == 1_000 - 30  # one escrow for all three
    results = {job_id: c.compute(job_id) for job_id in ids}
    c.commit_block([c.commit_many(m, results) for m in ("m1", "m2")])
    c.commit_block([c.reveal_many(m, results) for m in ("m1", "m2")])
    assert all(c.job(job_id).status == SETTLED for job_id in ids)
    # a later job may read a batch job's output (a DAG edge across txs)
    second = c.post_job(
        "alice",
        op="dense_forward",
        inputs=[job_input(ids[0]), *dense_inputs(c, seed=9, shape=(4, 2, 3))[1:]],
        params=RELU8,
    )
    assert c.commit_block([second]).receipts[0].ok
    assert c.job(second.hash).status == OPEN
    _audit(c)


def test_post_jobs_is_all_or_nothing(tmp_path: Path) -> None:
    c = chain(tmp_path)
    bodies = _bodies(c, 3)
    bad = _body(c, dense_inputs(c), op="no_such_op", params={})
    batch = c.post_jobs("alice", [bodies[0], bad, bodies[2]])
    receipt = c.commit_block([batch]).receipts[0]
    assert not receipt.ok and receipt.code == "invalid_job"
    assert receipt.message.startswith("jobs[1]: unknown op")
    assert all(c.state.jobs.get(job_id) is None for job_id, _ in posted_jobs(batch))
    assert c.state.balance(c.address("alice")) == 1_000  # nothing escrowed
    rich = c.post_jobs("alice", _bodies(c, 2, reward=600))  # 1,200 > 1,000
    receipt = c.commit_block([rich]).receipts[0]
    assert receipt.code == "insufficient_funds" and "total reward 1200" in receipt.message
    _audit(c)


def test_malformed_post_jobs_are_invalid() -> None:
    with pytest.raises(InvalidTransaction, match="1 to 64"):
        Tx.from_dict(_raw(POST_JOBS, {"jobs": []}))
    with pytest.raises(InvalidTransaction, match=r"jobs\[0\]: post_job: body is missing"):
        Tx.from_dict(_raw(POST_JOBS, {"jobs": [{"op": "dense_forward"}]}))
