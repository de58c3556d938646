"""The state machine without a database: receipts, nonces, roots, atomicity, failure codes."""

from __future__ import annotations

from pathlib import Path

import pytest
from ledger_chain import RELU8, chain, dense_inputs, fake_output

from ledger.encoding import canonical_json
from ledger.errors import GenesisError, InvalidBlock
from ledger.execution import apply_block
from ledger.executor import KernelExecutor
from ledger.genesis import Params
from ledger.harness import ChainHarness, harness_genesis
from ledger.settlement import audit_hit
from ledger.state import OPEN, REVEALING, State, initial_root, next_root
from ledger.tensorstore import MissingTensor, TensorStore
from ledger.transactions import job_input


def test_transfer_and_failure_receipts() -> None:
    c = ChainHarness(balances={"alice": 10})
    ok = c.transfer("alice", "bob", 4)
    poor = c.transfer("alice", "bob", 7)
    result = c.commit_block([ok, poor])
    assert [r.code for r in result.receipts] == ["ok", "insufficient_funds"]
    assert "balance 6 is below amount 7" in result.receipts[1].message
    assert c.state.balance(c.address("alice")) == 6
    assert c.state.nonce(c.address("alice")) == 2  # a failing tx still spends its nonce


def test_nonces_start_at_zero_and_must_be_consecutive() -> None:
    c = ChainHarness(balances={"alice": 10})
    gap = c.sign("alice", "transfer", {"to": c.address("bob"), "amount": 1}, nonce=1)
    first = c.sign("alice", "transfer", {"to": c.address("bob"), "amount": 1}, nonce=0)
    result = c.commit_block([gap, first, gap])
    assert [r.code for r in result.receipts] == ["bad_nonce", "ok", "ok"]
    assert "the sender's next is 0" in result.receipts[0].message


def test_state_root_chains_over_the_canonical_diff() -> None:
    c = ChainHarness(balances={"alice": 10})
    assert c.state.root == initial_root(c.genesis)
    before = c.state.root
    result = c.commit_block([c.transfer("alice", "bob", 3)])
    assert result.diff_json.encode() == canonical_json(result.diff)
    assert result.state_root == next_root(before, result.diff_json.encode()) == c.state.root
    assert result.diff["accounts"] == {
        c.address("alice"): {"balance": 7, "nonce": 1},
        c.address("bob"): {"balance": 3, "nonce": 0},
    }
    nxt = c.make_block()
    assert nxt.header.app_hash == result.state_root


def test_two_independent_executions_agree() -> None:
    roots = []
    for _ in range(2):
        c = ChainHarness(balances={"alice": 50})
        c.commit_block([c.transfer("alice", "bob", 5), c.transfer("alice", "carol", 6)])
        c.commit_block([c.transfer("bob", "carol", 1)])
        roots.append(c.state.root)
    assert roots[0] == roots[1]


def test_apply_block_refuses_a_block_that_does_not_follow() -> None:
    c = ChainHarness(balances={"alice": 50})
    block = c.make_block()
    c.commit_block()
    with pytest.raises(InvalidBlock, match="does not follow"):
        apply_block(c.state, block)
    other = ChainHarness(balances={"alice": 51})
    with pytest.raises(InvalidBlock, match="app_hash"):
        apply_block(other.state, block)


def test_genesis_supply_is_bounded() -> None:
    with pytest.raises(GenesisError, match="above"):
        State(harness_genesis(balances={"a": 2**62, "b": 2**62}))


def test_a_missing_tensor_aborts_the_block_and_leaves_the_state_untouched(tmp_path: Path) -> None:
    c = chain(tmp_path, store=False)
    post = c.post_job("alice", op="dense_forward", inputs=dense_inputs(c), params=RELU8)
    c.commit_block([post])
    outputs = c.compute(post.hash)
    c.commit_block(
        [c.commit("m1", post.hash, outputs), c.commit("m2", post.hash, fake_output("x"))]
    )
    # a validator whose tensor store lacks the inputs
    empty = TensorStore(tmp_path / "empty")
    block = c.make_block(
        [c.reveal("m1", post.hash, outputs), c.reveal("m2", post.hash, fake_output("x"))]
    )
    snapshot = (
        c.state.root,
        c.state.height,
        c.job(post.hash).to_dict(),
        {a: acc.to_dict() for a, acc in c.state.accounts.items()},
    )
    with pytest.raises(MissingTensor):
        apply_block(c.state, block, KernelExecutor(empty))
    assert (
        c.state.root,
        c.state.height,
        c.job(post.hash).to_dict(),
        {a: acc.to_dict() for a, acc in c.state.accounts.items()},
    ) == snapshot
    c.apply(block)  # with the tensors it executes
    assert c.job(post.hash).outputs == outputs


@pytest.mark.parametrize(
    ("kwargs", "code", "message"),
    [
        ({"kernel_version": "exact-v0"}, "unsupported_kernel_version", "this chain runs"),
        ({"params": {"act": "relu"}}, "invalid_job", "missing param 'out_frac'"),
        ({"op": "conv9d"}, "invalid_job", "unknown op"),
        ({"reward": 10**6}, "insufficient_funds", "reward"),
    ],
)
def test_post_job_failures(tmp_path: Path, kwargs: dict, code: str, message: str) -> None:
    c = chain(tmp_path, store=False)
    args = {"op": "dense_forward", "inputs": dense_inputs(c), "params": RELU8, **kwargs}
    post = c.post_job("alice", **args)
    receipt = c.commit_block([post]).receipts[0]
    assert (receipt.code, post.hash in c.state.jobs) == (code, False)
    assert message in receipt.message


def test_job_size_limits(tmp_path: Path) -> None:
    c = chain(tmp_path, store=False, params=Params(max_job_macs=10))
    post = c.post_job("alice", op="dense_forward", inputs=dense_inputs(c), params=RELU8)
    assert c.commit_block([post]).receipts[0].code == "invalid_job"
    c = chain(tmp_path, store=False, params=Params(max_tensor_elements=6))
    post = c.post_job("alice", op="dense_forward", inputs=dense_inputs(c), params=RELU8)
    receipt = c.commit_block([post]).receipts[0]
    assert receipt.code == "invalid_job" and "exceeds the limit 6" in receipt.message


def test_unknown_input_job(tmp_path: Path) -> None:
    c = chain(tmp_path, store=False)
    post = c.post_job("alice", op="add", inputs=[job_input("ab" * 32)], params={})
    assert c.commit_block([post]).receipts[0].code == "unknown_input"


def test_result_failure_codes(tmp_path: Path) -> None:
    c = chain(tmp_path, store=False, params=Params(audit_rate_ppm=0))
    post = c.post_job(
        "alice", op="dense_forward", inputs=dense_inputs(c), params=RELU8, replication=2
    )
    c.commit_block([post])
    job_id = post.hash
    out = c.compute(job_id)
    cases = [
        (c.commit("m1", "cd" * 32, out), "unknown_job"),
        (c.reveal("m1", job_id, out), "commit_phase_open"),
        (c.submit("m1", job_id, out), "not_single_replication"),
        (c.commit("m1", job_id, out), "ok"),
        (c.commit("m1", job_id, out, salt="ef" * 32), "already_committed"),
    ]
    result = c.commit_block([tx for tx, _ in cases])
    assert [r.code for r in result.receipts] == [code for _, code in cases]
    c.commit_block([c.commit("m2", job_id, out)])
    assert c.job(job_id).status == REVEALING
    cases = [
        (c.commit("m3", job_id, out), "job_not_open"),
        (c.reveal("m3", job_id, out), "not_committed"),
        (c.reveal("m1", job_id, out, salt="ef" * 32), "commitment_mismatch"),
        (c.reveal("m1", job_id, out + out), "wrong_output_count"),
        (c.reveal("m1", job_id, out), "ok"),
        (c.reveal("m1", job_id, out), "already_revealed"),
    ]
    result = c.commit_block([tx for tx, _ in cases])
    assert [r.code for r in result.receipts] == [code for _, code in cases]
    c.commit_block([c.reveal("m2", job_id, out)])
    late = c.reveal("m2", job_id, out)
    c.commit_block([late])
    assert c.receipt(late).code == "not_revealing"


def test_commit_phase_closes_at_its_deadline_with_fewer_commitments(tmp_path: Path) -> None:
    c = chain(tmp_path, store=False, params=Params(audit_rate_ppm=0, reveal_blocks=5))
    post = c.post_job(
        "alice", op="dense_forward", inputs=dense_inputs(c), params=RELU8, replication=3, deadline=2
    )
    c.commit_block([post])  # height 1: open, commit deadline 3
    assert c.job(post.hash).commit_deadline == 3
    c.commit_block([c.commit("m1", post.hash, c.compute(post.hash))])
    assert c.job(post.hash).status == OPEN
    c.commit_block()
    job = c.job(post.hash)
    assert (job.status, job.closed_height, job.reveal_deadline) == (REVEALING, 3, 8)


def test_audit_rate_is_respected() -> None:
    import hashlib

    block = hashlib.sha256(b"block").hexdigest()
    jobs = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(20_000)]
    hits = sum(audit_hit(block, j, 20_000) for j in jobs)
    assert 300 < hits < 500  # 2% of 20,000 = 400
    assert not any(audit_hit(block, j, 0) for j in jobs[:1000])
    assert all(audit_hit(block, j, 1_000_000) for j in jobs[:1000])


def test_total_supply_only_shrinks_by_slashing(tmp_path: Path) -> None:
    c = chain(tmp_path, store=False, params=Params(audit_rate_ppm=0, slash_amount=3))
    supply = c.state.total_supply()
    c.commit_block([c.transfer("bob", "liar", 50)])
    post = c.post_job("alice", op="dense_forward", inputs=dense_inputs(c), params=RELU8)
    c.commit_block([post])
    c.settle(post.hash, ["m1", "liar"], outputs={"liar": fake_output("x")})
    assert c.state.total_supply() == supply - 3
