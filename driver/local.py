"""`LocalRunner`: executes a `Plan` in-process with `ledger.kernels.execute`.

This is the reference every other runner must match: the network driver runs the same plan
through miners and the ledger and must arrive at the same tensors (and so the same weights hash).
"""

from __future__ import annotations

from driver.plan import JobOutput, Plan, TensorInput
from ledger.kernels import execute
from ledger.tensor import Tensor


class LocalRunner:
    """Runs every job of a plan, in order, in this process."""

    def __init__(self) -> None:
        self.jobs_run = 0

    def run(self, plan: Plan) -> dict[str, Tensor]:
        """Validate the plan from metadata, execute each job, return the named results."""
        plan.specs()
        outputs: list[list[Tensor]] = []
        for job in plan.jobs:
            inputs = [
                plan.tensors[ref.name]
                if isinstance(ref, TensorInput)
                else outputs[ref.job][ref.index]
                for ref in job.inputs
            ]
            outputs.append(execute(job.op, dict(job.params), inputs))
            self.jobs_run += 1
        return {name: _resolve(outputs, ref) for name, ref in plan.results.items()}


def _resolve(outputs: list[list[Tensor]], ref: JobOutput) -> Tensor:
    return outputs[ref.job][ref.index]
