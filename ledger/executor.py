"""How the state machine obtains the true outputs of a job it must re-execute.

Re-execution (a disputed job, or a random audit) is part of consensus, so its outcome must be the
same on every validator: either the output hashes, or a deterministic refusal (`JobFailed`) when
the kernels reject the inputs. A missing input tensor is *not* an outcome: `MissingTensor`
aborts the block, the caller fetches the tensor and executes the block again.

- `KernelExecutor` runs the exact kernels on tensors from a `TensorStore` (validators, verify
  --reexecute) and stores the outputs it computes, so downstream jobs and the driver can read them.
- `RecordedExecutor` answers from the outcomes a ledger recorded in a block's state diff: an
  offline replay without tensors trusts those (and says so), the full check uses KernelExecutor.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from ledger import kernels
from ledger.errors import KernelError, LedgerError
from ledger.state import AUDITED, FAILED, REEXECUTED, SETTLED, Job
from ledger.tensorstore import TensorStore


class JobFailed(LedgerError):
    """The kernels deterministically refuse this job's inputs; the job fails (escrow refunded)."""


#: A failed job's recorded `reason` is this prefix followed by the JobFailed message.
FAILED_PREFIX = "re-execution refused: "


class Executor(Protocol):
    """Computes a job's true outputs from its resolved input hashes."""

    def run(self, job: Job, input_hashes: Sequence[str]) -> list[str]:
        """Output hashes, or raise JobFailed (deterministic) or MissingTensor (retry later)."""
        ...


def _meta_dict(meta: kernels.TensorMeta) -> dict[str, Any]:
    return {"dtype": meta.dtype, "shape": list(meta.shape), "frac_bits": meta.frac_bits}


class KernelExecutor:
    """Re-executes jobs with the exact kernels on tensors read from (and written to) a store."""

    def __init__(self, tensors: TensorStore) -> None:
        self.tensors = tensors
        self.executed = 0
        """Jobs this executor ran (for reports and benchmarks)."""

    def run(self, job: Job, input_hashes: Sequence[str]) -> list[str]:
        inputs = [self.tensors.get(h) for h in input_hashes]  # MissingTensor propagates
        expected = self._input_metas(job)
        for i, (tensor, meta) in enumerate(zip(inputs, expected, strict=True)):
            actual: dict[str, Any] = {
                "dtype": tensor.dtype_code,
                "shape": list(tensor.shape),
                "frac_bits": tensor.frac_bits,
            }
            if meta is not None and actual != meta:
                raise JobFailed(f"input {i} is {actual}, but the job declared {meta}")
        try:
            outputs = kernels.execute(job.op, job.params, inputs)
        except KernelError as exc:  # includes ExactRangeError
            raise JobFailed(str(exc)) from exc
        self.executed += 1
        metas = [_meta_dict(kernels.TensorMeta.of_tensor(t)) for t in outputs]
        if metas != job.output_metas:
            raise LedgerError(f"kernel outputs {metas} differ from inferred {job.output_metas}")
        return [self.tensors.put(t) for t in outputs]

    @staticmethod
    def _input_metas(job: Job) -> list[dict[str, Any] | None]:
        """Declared metadata of tensor inputs (job-output inputs were checked when settled)."""
        out: list[dict[str, Any] | None] = []
        for ref in job.inputs:
            if "tensor" in ref:
                out.append(
                    {"dtype": ref["dtype"], "shape": ref["shape"], "frac_bits": ref["frac_bits"]}
                )
            else:
                out.append(None)
        return out


class RecordedExecutor:
    """Answers with the outcomes recorded in a stored block diff (trusting the ledger for them)."""

    def __init__(self, recorded_jobs: dict[str, dict[str, Any]]) -> None:
        self.recorded = recorded_jobs
        self.executed = 0

    @classmethod
    def from_diff(cls, diff: dict[str, Any]) -> RecordedExecutor:
        return cls(dict(diff.get("jobs", {})))

    def run(self, job: Job, input_hashes: Sequence[str]) -> list[str]:
        record = self.recorded.get(job.id)
        if record is None:
            raise LedgerError(f"the ledger recorded no outcome for re-executed job {job.id}")
        self.executed += 1
        if record.get("status") == FAILED:
            raise JobFailed(str(record.get("reason", "")).removeprefix(FAILED_PREFIX))
        if record.get("status") == SETTLED and record.get("settlement") in (REEXECUTED, AUDITED):
            return list(record["outputs"])
        raise LedgerError(f"the ledger's record of job {job.id} shows no re-execution")


class NoExecutor:
    """For callers that cannot re-execute: any re-execution raises a clear error."""

    executed = 0

    def run(self, job: Job, input_hashes: Sequence[str]) -> list[str]:
        raise LedgerError(f"job {job.id} needs re-execution but no tensor store was given")
