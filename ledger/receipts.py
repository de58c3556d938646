"""Receipts: the outcome of executing one transaction, kept with it in the ledger.

A statefully failing transaction is not dropped: it stays in its block with a receipt whose `code`
names the rule it broke and whose `message` says so in words. The receipts of a block are
committed to by the state root (through `receipts_root` in the block's state diff).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ledger.encoding import sha256_hex
from ledger.errors import StoreError
from ledger.trusted_json import trusted_canonical_json

OK = "ok"
#: Every failure code, with what it means (PROTOCOL.md §5.4).
FAILURE_CODES = {
    "bad_nonce": "the nonce is not the sender's next nonce (replayed or out of order)",
    "insufficient_funds": "the sender's balance is below the amount or reward",
    "unknown_job": "no job has this id",
    "job_not_open": "the job is not accepting commitments or submissions",
    "commit_phase_open": "reveals are accepted only after the commit phase closes",
    "not_revealing": "the job is not in its reveal phase",
    "already_committed": "this miner already committed to this job",
    "duplicate_commitment": "another miner already committed exactly this value",
    "not_committed": "this miner has no commitment for this job",
    "already_revealed": "this miner already revealed for this job",
    "commitment_mismatch": "the revealed outputs and salt do not match the commitment",
    "wrong_output_count": "the number of outputs differs from what the job produces",
    "not_single_replication": "direct submission is allowed only for jobs with replication 1",
    "invalid_job": "the job is rejected by the kernels or the size limits",
    "unsupported_kernel_version": "the job names a kernel version this chain does not run",
    "unknown_input": "a job input names a job that does not exist or an output it lacks",
    "input_failed": "a job input names a job that expired or failed",
    "not_run_owner": "the run belongs to another account",
    "stale_epoch": "a checkpoint's epoch must be greater than the run's last one",
}


@dataclass(frozen=True)
class Receipt:
    """Outcome of one transaction."""

    tx_hash: str
    ok: bool
    code: str
    """"ok" or one of FAILURE_CODES."""
    message: str
    """Human-readable detail ("" when ok)."""

    def to_dict(self) -> dict[str, Any]:
        return {"tx_hash": self.tx_hash, "ok": self.ok, "code": self.code, "message": self.message}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Receipt:
        try:
            return cls(str(raw["tx_hash"]), bool(raw["ok"]), str(raw["code"]), str(raw["message"]))
        except (KeyError, TypeError) as exc:
            raise StoreError(f"malformed receipt: {exc}") from exc

    @property
    def hash(self) -> str:
        """digest(receipt): all four fields are plain strings and a bool."""
        return sha256_hex(trusted_canonical_json(self.to_dict()))


def success(tx_hash: str) -> Receipt:
    return Receipt(tx_hash, True, OK, "")


def failure(tx_hash: str, code: str, message: str) -> Receipt:
    assert code in FAILURE_CODES, code
    return Receipt(tx_hash, False, code, message)
