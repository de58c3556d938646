"""The primary's partner wait (`api.core.partners`): lone replica results wait, others go."""

from __future__ import annotations

from dataclasses import dataclass, field

from api.core.partners import partner_wait
from ledger.identity import Keypair
from ledger.state import OPEN, REVEALING
from ledger.transactions import (
    COMMIT_RESULT,
    COMMIT_RESULTS,
    REVEAL_RESULT,
    TRANSFER,
    Tx,
    commit_body,
    commits_body,
    reveal_body,
    sign_tx,
    transfer_body,
)

CHAIN = "partners-test"
A, B = Keypair.from_seed(b"a" * 32), Keypair.from_seed(b"b" * 32)
HASH = "ab" * 32
SALT = "cd" * 32


@dataclass
class FakeJob:
    """The fields of `ledger.state.Job` the policy reads."""

    status: str
    replication: int = 2
    commits: dict[str, str] = field(default_factory=dict)
    reveals: dict[str, list[str]] = field(default_factory=dict)


def job_id(n: int) -> str:
    return f"{n:064x}"


def commit(key: Keypair, job: str, nonce: int = 0) -> Tx:
    body = commit_body(job, key.address, [HASH], SALT)
    return sign_tx(key, CHAIN, COMMIT_RESULT, nonce, body)


def reveal(key: Keypair, job: str) -> Tx:
    return sign_tx(key, CHAIN, REVEAL_RESULT, 1, reveal_body(job, [HASH], SALT))


def wait(txs: list[Tx], jobs: dict[str, FakeJob], age_s: float = 0.0) -> float:
    """`partner_wait` with every tx admitted `age_s` ago (now = 100 s)."""
    return partner_wait(txs, jobs, lambda tx: 100.0 - age_s, 100.0, window_s=0.010)


def test_a_lone_commitment_waits_for_the_rest_of_its_window() -> None:
    jobs = {job_id(1): FakeJob(OPEN)}
    assert abs(wait([commit(A, job_id(1))], jobs) - 0.010) < 1e-9
    assert abs(wait([commit(A, job_id(1))], jobs, age_s=0.004) - 0.006) < 1e-9


def test_the_wait_ends_with_the_window() -> None:
    jobs = {job_id(1): FakeJob(OPEN)}
    assert wait([commit(A, job_id(1))], jobs, age_s=0.010) == 0.0


def test_partners_together_go_at_once() -> None:
    jobs = {job_id(1): FakeJob(OPEN)}
    assert wait([commit(A, job_id(1)), commit(B, job_id(1))], jobs) == 0.0


def test_a_commitment_completing_a_job_with_one_on_chain_goes_at_once() -> None:
    jobs = {job_id(1): FakeJob(OPEN, commits={B.address: "c" * 64})}
    assert wait([commit(A, job_id(1))], jobs) == 0.0


def test_one_complete_job_carries_the_lone_ones_along() -> None:
    jobs = {job_id(1): FakeJob(OPEN), job_id(2): FakeJob(OPEN)}
    txs = [commit(A, job_id(1)), commit(B, job_id(1), nonce=0), commit(A, job_id(2), nonce=1)]
    assert wait(txs, jobs) == 0.0


def test_any_other_tx_goes_at_once() -> None:
    jobs = {job_id(1): FakeJob(OPEN)}
    transfer = sign_tx(B, CHAIN, TRANSFER, 0, transfer_body(A.address, 5))
    assert wait([transfer], jobs) == 0.0
    assert wait([commit(A, job_id(1)), transfer], jobs) == 0.0


def test_results_for_jobs_not_in_their_phase_go_at_once() -> None:
    """They will fail (or the chain does not know the job): waiting gains nothing."""
    assert wait([commit(A, job_id(9))], {}) == 0.0
    assert wait([commit(A, job_id(1))], {job_id(1): FakeJob(REVEALING)}) == 0.0
    assert wait([reveal(A, job_id(1))], {job_id(1): FakeJob(OPEN)}) == 0.0


def test_a_lone_reveal_waits_and_the_last_reveal_goes() -> None:
    committed = {A.address: "c" * 64, B.address: "d" * 64}
    jobs = {job_id(1): FakeJob(REVEALING, commits=committed)}
    assert wait([reveal(A, job_id(1))], jobs) > 0
    jobs[job_id(1)].reveals[B.address] = [HASH]
    assert wait([reveal(A, job_id(1))], jobs) == 0.0


def test_batched_commitments_count_per_job() -> None:
    jobs = {job_id(1): FakeJob(OPEN), job_id(2): FakeJob(OPEN)}
    body = commits_body([commit_body(job_id(n), A.address, [HASH], SALT) for n in (1, 2)])
    batch = sign_tx(A, CHAIN, COMMIT_RESULTS, 0, body)
    assert wait([batch], jobs) > 0
    assert wait([batch, commit(B, job_id(2))], jobs) == 0.0
