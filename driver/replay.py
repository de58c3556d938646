"""Replay a training run from a ledger and a tensor store alone, confirming its checkpoints.

    report = replay_run(Store(path, create=False), TensorStore(dir), "digits-s0-1a2b3c4d")

The network driver labels each job `r<round>/<plan label>` (`driver.network`). For every training
round the replay reads, from the chain's job records, the weights the round started from (inputs
of its `fwd*` jobs, or of its `step` jobs when the round was fused) and the batch (`x` of `fwd0`,
labels of `loss`; or the first two inputs of `step`), rebuilds the very same plan
with `driver.plan.train_step_plan`, executes it locally with the exact kernels and checks that

- every job of the round on the chain was posted as the plan says (op, params) and settled with
  exactly the outputs the replay computed;
- the round started from the weights the previous round produced (the first round's weights are
  taken from the chain: they are the run's initial model);
- at each checkpoint, the weights hash equals the checkpointed `model_hash`.

The learning rate comes from the checkpoint metrics `lr_num`/`lr_den` that the driver records.
When the driver had to post a round again (a post_job failed on chain), the later job with the same
label is the one the run used; the earlier attempt's jobs are ignored.
Any disagreement raises `ReplayMismatch` naming the round, job or epoch.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import numpy as np

from driver.model import ACTIVATIONS, Architecture, weights_hash
from driver.plan import JobOutput, Plan, TensorInput, mlp_grad_params, train_step_plan
from ledger.errors import LedgerError
from ledger.kernels import execute
from ledger.state import SETTLED, Job
from ledger.store import Store
from ledger.tensor import Tensor
from ledger.tensorstore import TensorStore

_LABEL = re.compile(r"^r(\d+)/(.+)$")


class ReplayMismatch(LedgerError):
    """The ledger does not re-derive: a job, a round's weights or a checkpoint disagrees."""


@dataclass
class ReplayReport:
    run: str
    rounds: int = 0
    jobs_checked: int = 0
    checkpoints: list[tuple[int, str]] = field(default_factory=list)
    """(epoch, model hash) of every checkpoint confirmed."""
    weights_hash: str = ""
    """Hash of the final re-derived weights."""


def run_jobs(store: Store, run: str) -> list[Job]:
    """Every job of `run`, in posting order."""
    jobs: list[Job] = []
    after: tuple[int, str] | None = None
    while True:
        page = store.list_jobs(run=run, after=after, limit=1000)
        jobs.extend(page)
        if len(page) < 1000:
            return jobs
        after = (page[-1].posted_height, page[-1].id)


def _rounds(jobs: list[Job]) -> dict[int, dict[str, Job]]:
    rounds: dict[int, dict[str, Job]] = {}
    for job in jobs:
        match = _LABEL.match(job.label or "")
        if match is None:
            raise ReplayMismatch(f"job {job.id[:16]}… has no round label (not posted by a driver)")
        rounds.setdefault(int(match.group(1)), {})[match.group(2)] = job
    return rounds


class _Replayer:
    def __init__(self, store: Store, tensors: TensorStore, run: str) -> None:
        self.store = store
        self.tensors = tensors
        self.run = run
        self.report = ReplayReport(run)

    def tensor(self, tensor_hash: str) -> Tensor:
        return self.tensors.get(tensor_hash)

    def input_hash(self, job: Job, index: int) -> str:
        ref = job.inputs[index]
        if "tensor" not in ref:
            raise ReplayMismatch(f"job {job.label}: input {index} should be a tensor")
        return str(ref["tensor"])

    def architecture(self, jobs: dict[str, Job], weights: dict[str, Tensor]) -> Architecture:
        if _fused(jobs):
            return self.fused_architecture(jobs["step/s0"], weights)
        layers = sum(1 for label in jobs if label.startswith("fwd") and label.endswith("/s0"))
        sizes = (weights["w0"].shape[0], *(weights[f"w{i}"].shape[1] for i in range(layers)))
        for activation in ACTIVATIONS:
            arch = Architecture(sizes, activation=activation)
            if all(
                {k: v for k, v in jobs[f"fwd{i}/s0"].params.items() if k != "out_frac"}
                == arch.act_params(i)
                for i in range(layers)
            ):
                return arch
        raise ReplayMismatch("the forward jobs' activation params match no known architecture")

    def fused_architecture(self, job: Job, weights: dict[str, Tensor]) -> Architecture:
        layers = len(weights) // 2
        sizes = (weights["w0"].shape[0], *(weights[f"w{i}"].shape[1] for i in range(layers)))
        for activation in ACTIVATIONS:
            arch = Architecture(sizes, activation=activation)
            if job.params == mlp_grad_params(arch):
                return arch
        raise ReplayMismatch("the step jobs' params match no known architecture")

    def round_weights(self, jobs: dict[str, Job]) -> dict[str, Tensor]:
        if _fused(jobs):  # mlp_grad inputs: x, labels, w0, b0, w1, b1, ...
            job = jobs["step/s0"]
            names = [f"{kind}{i}" for i in range((len(job.inputs) - 2) // 2) for kind in "wb"]
            return {name: self.tensor(self.input_hash(job, 2 + i)) for i, name in enumerate(names)}
        weights: dict[str, Tensor] = {}
        layer = 0
        while f"fwd{layer}/s0" in jobs:
            job = jobs[f"fwd{layer}/s0"]
            weights[f"w{layer}"] = self.tensor(self.input_hash(job, 1))
            weights[f"b{layer}"] = self.tensor(self.input_hash(job, 2))
            layer += 1
        if not weights:
            raise ReplayMismatch("a training round without forward jobs")
        return weights

    def batch(self, jobs: dict[str, Job]) -> tuple[np.ndarray, np.ndarray, int]:
        xs, ys = [], []
        shard = 0
        while f"step/s{shard}" in jobs:
            job = jobs[f"step/s{shard}"]
            xs.append(self.tensor(self.input_hash(job, 0)).data)
            ys.append(self.tensor(self.input_hash(job, 1)).data)
            shard += 1
        while f"fwd0/s{shard}" in jobs:
            xs.append(self.tensor(self.input_hash(jobs[f"fwd0/s{shard}"], 0)).data)
            ys.append(self.tensor(self.input_hash(jobs[f"loss/s{shard}"], 1)).data)
            shard += 1
        return np.concatenate(xs), np.concatenate(ys), shard

    def check_plan(self, number: int, plan: Plan, jobs: dict[str, Job]) -> dict[str, Tensor]:
        """Execute the plan; every network job must match its ledger twin exactly."""
        outputs: list[list[Tensor]] = []
        for planned in plan.jobs:
            inputs = [
                plan.tensors[ref.name]
                if isinstance(ref, TensorInput)
                else outputs[ref.job][ref.index]
                for ref in planned.inputs
            ]
            result = execute(planned.op, dict(planned.params), inputs)
            outputs.append(result)
            if planned.driver_side:
                continue
            job = jobs.get(planned.label)
            where = f"round {number}, job {planned.label}"
            if job is None:
                raise ReplayMismatch(f"{where}: not on the chain")
            if job.op != planned.op or job.params != dict(planned.params):
                raise ReplayMismatch(f"{where}: posted as {job.op} {job.params}")
            if job.status != SETTLED:
                raise ReplayMismatch(f"{where}: {job.status}, not settled")
            if job.outputs != [t.hash for t in result]:
                raise ReplayMismatch(f"{where}: settled outputs differ from re-execution")
            self.report.jobs_checked += 1
        unmatched = set(jobs) - {p.label for p in plan.jobs if not p.driver_side}
        if unmatched:
            raise ReplayMismatch(f"round {number}: jobs {sorted(unmatched)[:3]} not in the plan")
        return {name: outputs[ref.job][ref.index] for name, ref in plan.results.items()}

    def reexecute_round(self, number: int, jobs: dict[str, Job]) -> None:
        """A round that is not a training step (e.g. an evaluation): re-execute each job."""
        done: dict[str, list[str]] = {}
        for job in sorted(jobs.values(), key=lambda j: (j.posted_height, j.label or "")):
            inputs = []
            for ref in job.inputs:
                if "tensor" in ref:
                    inputs.append(self.tensor(ref["tensor"]))
                else:
                    parent = done.get(ref["job"]) or _settled(self.store, ref["job"])
                    inputs.append(self.tensor(parent[ref["output"]]))
            result = [t.hash for t in execute(job.op, job.params, inputs)]
            if job.status != SETTLED or job.outputs != result:
                raise ReplayMismatch(f"round {number}, job {job.label}: not settled as computed")
            done[job.id] = result
            self.report.jobs_checked += 1


def _fused(jobs: dict[str, Job]) -> bool:
    """A training round planned with one `mlp_grad` job per shard (`driver.plan`, fused)."""
    return "step/s0" in jobs


def _settled(store: Store, job_id: str) -> list[str]:
    job = store.get_job(job_id)
    if job is None or job.outputs is None:
        raise ReplayMismatch(f"input job {job_id[:16]}… is not settled on this ledger")
    return job.outputs


def replay_run(
    store: Store,
    tensors: TensorStore,
    run: str,
    on_round: Callable[[int, int], None] | None = None,
) -> ReplayReport:
    """Re-derive `run` from the ledger and tensor store; raises ReplayMismatch on any difference.

    `on_round(done, total)` reports progress.
    """
    checkpoints = store.checkpoints(run)
    if not checkpoints:
        raise ReplayMismatch(f"run {run!r} has no checkpoint on this ledger")
    rounds = _rounds(run_jobs(store, run))
    replayer = _Replayer(store, tensors, run)
    report = replayer.report
    weights: dict[str, Tensor] | None = None
    arch: Architecture | None = None
    pending = list(checkpoints)

    def confirm_until(height: int) -> None:
        while pending and pending[0]["height"] < height:
            checkpoint = pending.pop(0)
            if weights is None or arch is None:
                raise ReplayMismatch(f"checkpoint of epoch {checkpoint['epoch']} before any job")
            actual = weights_hash(arch, weights)
            if actual != checkpoint["model_hash"]:
                raise ReplayMismatch(
                    f"epoch {checkpoint['epoch']}: re-derived weights hash {actual} differs from "
                    f"the checkpointed {checkpoint['model_hash']}"
                )
            report.checkpoints.append((int(checkpoint["epoch"]), actual))

    for done, number in enumerate(sorted(rounds)):
        jobs = rounds[number]
        confirm_until(min(j.posted_height for j in jobs.values()))
        if "loss/s0" not in jobs and not _fused(jobs):
            replayer.reexecute_round(number, jobs)
        else:
            start = replayer.round_weights(jobs)
            if weights is not None and any(
                start[name].hash != weights[name].hash for name in start
            ):
                raise ReplayMismatch(
                    f"round {number} started from weights the previous round did not produce"
                )
            arch = arch or replayer.architecture(jobs, start)
            x, y, shards = replayer.batch(jobs)
            lr = _learning_rate(pending or checkpoints[-1:])
            plan = train_step_plan(arch, start, x, y, shards, lr, fused=_fused(jobs))
            results = replayer.check_plan(number, plan, jobs)
            weights = {name: results[name] for name in arch.param_names()}
        report.rounds += 1
        if on_round is not None:
            on_round(done + 1, len(rounds))
    confirm_until(2**62)
    if weights is None or arch is None:
        raise ReplayMismatch(f"run {run!r} has no training jobs")
    report.weights_hash = weights_hash(arch, weights)
    return report


def _learning_rate(checkpoints: list[dict[str, Any]]) -> Fraction:
    metrics = checkpoints[0]["metrics"]
    if "lr_num" not in metrics or "lr_den" not in metrics:
        raise ReplayMismatch("the run's checkpoints do not record lr_num and lr_den")
    return Fraction(int(metrics["lr_num"]), int(metrics["lr_den"]))


__all__ = ["ReplayMismatch", "ReplayReport", "replay_run", "run_jobs", "JobOutput"]
