"""End-to-end scenarios on a harness chain: real kernels, real signatures, a real SQLite ledger.

Each scenario ends by auditing the ledger it produced with `verify_ledger`, tensors included.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from ledger_chain import RELU8, chain, dense_inputs, fake_output, layer

from ledger import kernels
from ledger.encoding import canonical_json
from ledger.genesis import Params
from ledger.harness import ChainHarness
from ledger.settlement import REPUTATION_GAIN, REPUTATION_PENALTY
from ledger.state import AGREED, AUDITED, EXPIRED, OPEN, REEXECUTED, SETTLED, WAITING
from ledger.transactions import job_input, tensor_input
from ledger.verify import verify_ledger


def _audit(c: ChainHarness, *, reexecute: bool = True) -> None:
    assert c.store is not None and c.tensors is not None
    for result in c.results:  # the fast diff encoder gives exactly the canonical bytes
        assert result.diff_json.encode() == canonical_json(result.diff)
    report = verify_ledger(c.store, tensors=c.tensors, reexecute=reexecute)
    assert report.ok, report.summary()
    assert report.verified_height == c.height
    without_tensors = verify_ledger(c.store)  # re-execution outcomes taken from the ledger
    assert without_tensors.ok, without_tensors.summary()
    assert without_tensors.trusted_reexecutions == sum(len(r.reexecuted) for r in c.results)


def _post(c: ChainHarness, **kw: object) -> str:
    post = c.post_job("alice", op="dense_forward", inputs=dense_inputs(c), params=RELU8, **kw)
    result = c.commit_block([post])
    assert result.receipts[0].ok, result.receipts[0]
    return post.hash


def test_two_honest_miners_settle_and_are_paid(tmp_path: Path) -> None:
    c = chain(tmp_path)
    job_id = _post(c, reward=10, replication=2)
    assert c.job(job_id).status == OPEN
    alice_after_escrow = c.state.balance(c.address("alice"))
    assert alice_after_escrow == 990

    job = c.settle(job_id, ["miner-1", "miner-2"])

    assert job.status == SETTLED and job.settlement == AGREED
    assert job.outputs == c.compute(job_id)
    for miner in ("miner-1", "miner-2"):
        assert c.state.balance(c.address(miner)) == 5
        assert c.state.miners[c.address(miner)].accepted == 1
        assert c.state.miners[c.address(miner)].reputation == REPUTATION_GAIN
    assert c.state.balance(c.address("alice")) == 990  # reward fully paid, nothing refunded
    stored = c.store.get_job(job_id)  # type: ignore[union-attr]
    assert stored is not None and stored.status == SETTLED
    verdicts = {r["miner"]: r["verdict"] for r in c.store.results_of_job(job_id)}  # type: ignore[union-attr]
    assert verdicts == {c.address("miner-1"): "right", c.address("miner-2"): "right"}
    _audit(c)


def test_lying_miner_is_outvoted_by_reexecution_and_slashed(tmp_path: Path) -> None:
    c = chain(tmp_path, params=Params(audit_rate_ppm=0, slash_amount=20))
    c.commit_block([c.transfer("bob", "liar", 100)])
    job_id = _post(c, reward=10, replication=2)

    job = c.settle(job_id, ["honest", "liar"], outputs={"liar": fake_output("lie")})

    assert job.status == SETTLED and job.settlement == REEXECUTED
    assert job.outputs == c.compute(job_id)
    assert job.verdicts == {c.address("honest"): "right", c.address("liar"): "wrong"}
    assert c.state.balance(c.address("honest")) == 10  # the whole reward
    assert c.state.balance(c.address("liar")) == 80  # slashed 20
    liar = c.state.miners[c.address("liar")]
    assert (liar.rejected, liar.slashed, liar.reputation) == (1, 20, -REPUTATION_PENALTY)
    assert c.results[-1].reexecuted == (job_id,)
    _audit(c)


def test_majority_of_three_does_not_need_the_liar(tmp_path: Path) -> None:
    c = chain(tmp_path)
    job_id = _post(c, reward=9, replication=3)
    job = c.settle(job_id, ["m1", "m2", "m3"], outputs={"m3": fake_output("x")})
    assert job.settlement == REEXECUTED
    assert job.paid == {c.address("m1"): 4, c.address("m2"): 4}
    assert job.refund == 1  # 9 - 2 * 4 back to the poster
    assert c.state.balance(c.address("alice")) == 1_000 - 9 + 1
    _audit(c)


def test_colluding_liars_are_caught_by_an_audit(tmp_path: Path) -> None:
    c = chain(tmp_path, params=Params(audit_rate_ppm=1_000_000, slash_amount=7))
    c.commit_block([c.transfer("bob", "liar-1", 50), c.transfer("bob", "liar-2", 50)])
    job_id = _post(c, reward=10, replication=2)
    lie = fake_output("collusion")

    job = c.settle(job_id, ["liar-1", "liar-2"], outputs={"liar-1": lie, "liar-2": lie})

    assert job.status == SETTLED and job.settlement == AUDITED
    assert job.outputs == c.compute(job_id) != lie  # the settled output is the true one
    for liar in ("liar-1", "liar-2"):
        assert job.verdicts[c.address(liar)] == "wrong"
        assert c.state.balance(c.address(liar)) == 43
    assert job.refund == 10  # nobody was right: the poster gets the escrow back
    _audit(c)


def test_colluders_escaping_the_audit_are_found_by_verify_reexecute(tmp_path: Path) -> None:
    c = chain(tmp_path, params=Params(audit_rate_ppm=0))
    job_id = _post(c, replication=2)
    lie = fake_output("collusion")
    job = c.settle(job_id, ["liar-1", "liar-2"], outputs={"liar-1": lie, "liar-2": lie})
    assert job.settlement == AGREED and job.outputs == lie
    assert c.store is not None
    assert verify_ledger(c.store, tensors=c.tensors).ok  # replay alone cannot know
    report = verify_ledger(c.store, tensors=c.tensors, reexecute=True)
    assert not report.ok
    assert report.first_bad_height == c.height
    assert "agreeing miners were wrong" in (report.problem or "")


def test_copied_commitment_is_rejected(tmp_path: Path) -> None:
    c = chain(tmp_path)
    job_id = _post(c, replication=2)
    outputs = c.compute(job_id)
    original = c.commit("m1", job_id, outputs)
    copied = c.sign("copycat", "commit_result", dict(original.body))
    c.commit_block([original, copied])
    assert c.receipt(copied).code == "duplicate_commitment"
    assert c.job(job_id).status == OPEN  # one commitment so far: still open
    assert c.address("copycat") not in c.job(job_id).commits

    # Even when the copier commits first under another salt, it cannot reveal the copied result
    # against m1's commitment: the commitment binds the committer's address.
    c.commit_block([c.commit("m2", job_id, outputs)])
    c.commit_block([c.reveal("m1", job_id, outputs)])
    stolen = c.sign(
        "copycat",
        "reveal_result",
        {"job_id": job_id, "outputs": outputs, "salt": original.body["commitment"]},
    )
    c.commit_block([stolen, c.reveal("m2", job_id, outputs)])
    assert c.receipt(stolen).code == "not_committed"
    assert c.job(job_id).status == SETTLED
    _audit(c)


def test_replayed_transaction_is_rejected(tmp_path: Path) -> None:
    c = chain(tmp_path)
    pay = c.transfer("alice", "bob", 100)
    c.commit_block([pay])
    c.commit_block([pay])  # the same signed tx, included again
    receipt = c.receipt(pay)
    assert (receipt.ok, receipt.code) == (False, "bad_nonce")
    assert c.state.balance(c.address("alice")) == 900
    assert c.state.balance(c.address("bob")) == 600
    stored = c.store.txs_of_block(c.height)  # type: ignore[union-attr]
    assert stored[0].tx.hash == pay.hash and stored[0].receipt.code == "bad_nonce"
    _audit(c)


def test_insufficient_funds_is_a_kept_failure(tmp_path: Path) -> None:
    c = chain(tmp_path, balances={"alice": 5})
    post = c.post_job("alice", op="dense_forward", inputs=dense_inputs(c), params=RELU8, reward=6)
    result = c.commit_block([post])
    assert result.receipts[0].code == "insufficient_funds"
    assert post.hash not in c.state.jobs
    assert c.state.balance(c.address("alice")) == 5
    assert c.state.nonce(c.address("alice")) == 1  # the nonce is spent: no later replay
    assert c.store.get_tx(post.hash).receipt.code == "insufficient_funds"  # type: ignore[union-attr]
    _audit(c)


def test_dag_of_a_two_layer_forward_pass_settles_in_order(tmp_path: Path) -> None:
    c = chain(tmp_path)
    x, w1, b1 = layer(1, 4, 3, 5)
    _, w2, b2 = layer(2, 5, 5, 2)
    for t in (x, w1, b1, w2, b2):
        c.put_tensor(t)
    first = c.post_job(
        "alice",
        op="dense_forward",
        inputs=[tensor_input(x), tensor_input(w1), tensor_input(b1)],
        params=RELU8,
    )
    second = c.post_job(
        "alice",
        op="dense_forward",
        inputs=[job_input(first.hash, 0), tensor_input(w2), tensor_input(b2)],
        params={"act": "identity", "out_frac": 8},
    )
    c.commit_block([first, second])
    assert c.job(first.hash).status == OPEN
    assert c.job(second.hash).status == WAITING
    early = c.commit("m1", second.hash, fake_output("early"))
    c.commit_block([early])
    assert c.receipt(early).code == "job_not_open"

    c.settle(first.hash, ["m1", "m2"])
    assert c.job(first.hash).status == SETTLED
    assert c.job(second.hash).status == OPEN
    assert c.job(second.hash).open_height == c.height
    c.settle(second.hash, ["m1", "m2"])

    hidden = kernels.execute("dense_forward", RELU8, [x, w1, b1])[0]
    expected = kernels.execute(
        "dense_forward", {"act": "identity", "out_frac": 8}, [hidden, w2, b2]
    )
    assert c.job(second.hash).outputs == [expected[0].hash]
    assert c.job(second.hash).status == SETTLED
    _audit(c)


def test_deadline_without_results_refunds_the_escrow(tmp_path: Path) -> None:
    c = chain(tmp_path)
    job_id = _post(c, reward=40, deadline=3)
    assert c.state.balance(c.address("alice")) == 960
    c.advance(2)
    assert c.job(job_id).status == OPEN
    c.advance(1)
    job = c.job(job_id)
    assert job.status == EXPIRED and job.refund == 40
    assert c.state.balance(c.address("alice")) == 1_000
    _audit(c)


def test_waiting_job_expires_with_its_input_and_refunds(tmp_path: Path) -> None:
    c = chain(tmp_path)
    x, w1, b1 = layer(1, 4, 3, 5)
    for t in (x, w1, b1):
        c.put_tensor(t)
    first = c.post_job(
        "alice",
        op="dense_forward",
        inputs=[tensor_input(x), tensor_input(w1), tensor_input(b1)],
        params=RELU8,
        deadline=2,
        reward=10,
    )
    second = c.post_job(
        "alice",
        op="add",
        inputs=[job_input(first.hash), job_input(first.hash)],
        params={},
        reward=10,
    )
    c.commit_block([first, second])
    c.advance(2)
    assert c.job(first.hash).status == EXPIRED
    assert c.job(second.hash).status == EXPIRED
    assert first.hash in c.job(second.hash).reason
    assert c.state.balance(c.address("alice")) == 1_000
    late = c.post_job("alice", op="add", inputs=[job_input(first.hash)], params={})
    c.commit_block([late])
    assert c.receipt(late).code == "input_failed"
    _audit(c)


def test_too_few_reveals_at_the_deadline_are_reexecuted(tmp_path: Path) -> None:
    c = chain(tmp_path, params=Params(audit_rate_ppm=0, reveal_blocks=2, slash_amount=3))
    c.commit_block([c.transfer("bob", "sleepy", 10)])
    job_id = _post(c, replication=3, deadline=2, reward=10)
    outputs = c.compute(job_id)
    c.commit_block([c.commit("m1", job_id, outputs), c.commit("sleepy", job_id, outputs)])
    c.advance(1)  # commit deadline passes with 2 of 3 commitments
    assert c.job(job_id).status == "revealing"
    c.commit_block([c.reveal("m1", job_id, outputs)])
    c.advance(1)  # reveal deadline: sleepy never revealed
    job = c.job(job_id)
    assert job.status == SETTLED and job.settlement == REEXECUTED
    assert job.verdicts == {c.address("m1"): "right", c.address("sleepy"): "missed"}
    assert job.paid == {c.address("m1"): 10}
    assert c.state.balance(c.address("sleepy")) == 7
    assert c.state.miners[c.address("sleepy")].missed == 1
    _audit(c)


def test_single_replication_job_settles_on_direct_submission(tmp_path: Path) -> None:
    c = chain(tmp_path)
    job_id = _post(c, replication=1, reward=4)
    outputs = c.compute(job_id)
    c.commit_block([c.submit("solo", job_id, outputs)])
    job = c.job(job_id)
    assert job.status == SETTLED and job.paid == {c.address("solo"): 4}
    again = c.submit("other", job_id, outputs)
    c.commit_block([again])
    assert c.receipt(again).code == "job_not_open"
    _audit(c)


def test_failed_reexecution_fails_the_job_and_refunds(tmp_path: Path) -> None:
    """A tensor input whose declared metadata lies cannot be computed: the job fails (here found
    by the audit that every replication-1 result gets at this audit rate)."""
    c = chain(tmp_path, params=Params(audit_rate_ppm=1_000_000))
    x, w, b = layer(3, 4, 3, 2)
    for t in (x, w, b):
        c.put_tensor(t)
    lying_ref = {**tensor_input(x), "frac_bits": 9}  # the hash says 8
    post = c.post_job(
        "alice",
        op="dense_forward",
        inputs=[lying_ref, tensor_input(w), tensor_input(b)],
        params={"act": "relu", "out_frac": 8},
        reward=10,
        replication=1,
    )
    c.commit_block([post])
    c.commit_block([c.submit("m1", post.hash, fake_output("guess"))])
    job = c.job(post.hash)
    assert job.status == "failed" and "declared" in job.reason
    assert job.refund == 10 and job.verdicts == {c.address("m1"): "wrong"}
    _audit(c)


def test_checkpoints_record_a_training_run(tmp_path: Path) -> None:
    c = chain(tmp_path)
    model = [np.random.default_rng(i).bytes(32).hex() for i in range(3)]
    c.commit_block([c.checkpoint("alice", "run-1", 0, model[0], {"loss_micro": 900_000})])
    c.commit_block([c.checkpoint("alice", "run-1", 1, model[1], {"loss_micro": 500_000})])
    stale = c.checkpoint("alice", "run-1", 1, model[2], {})
    stranger = c.checkpoint("bob", "run-1", 5, model[2], {})
    c.commit_block([stale, stranger])
    assert c.receipt(stale).code == "stale_epoch"
    assert c.receipt(stranger).code == "not_run_owner"
    assert c.store is not None
    points = c.store.checkpoints("run-1")
    assert [(p["epoch"], p["metrics"]["loss_micro"]) for p in points] == [
        (0, 900_000),
        (1, 500_000),
    ]
    run = c.store.get_run("run-1")
    assert run is not None and run.owner == c.address("alice") and run.last_model_hash == model[1]
    _audit(c)
