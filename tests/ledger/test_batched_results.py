"""`commit_results` / `reveal_results`: many jobs' results in one signed tx (PROTOCOL.md §5.3-5.4).

Each item applies exactly as the single-job tx would; items that cannot apply (a race lost, a
closed phase) are skipped and named in the receipt, the rest apply. The ledger they produce must
pass `verify_ledger`, re-execution included.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from ledger_chain import RELU8, chain, dense_inputs

from ledger.errors import InvalidTransaction
from ledger.harness import ChainHarness
from ledger.state import OPEN, REVEALING, SETTLED, WRONG
from ledger.transactions import (
    COMMIT_RESULTS,
    MAX_BATCH_RESULTS,
    REVEAL_RESULTS,
    Tx,
    commit_body,
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
