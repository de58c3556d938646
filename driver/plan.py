"""A training step as a DAG of kernel jobs: the boundary between *what* to compute and *where*.

A `Plan` is self-contained: the external tensors it reads (weights, shard batches), a list of
`PlannedJob`s whose inputs are either one of those tensors (`TensorInput`) or output #i of an
earlier job (`JobOutput`), and the named results the caller wants back. A `JobRunner` executes a
plan and returns those results:

- `driver.local.LocalRunner` runs every job in-process with `ledger.kernels.execute`;
- the network driver posts the jobs not marked `driver_side` as `post_job` transactions (a job's
  `JobOutput` inputs become references to the earlier job's id), reads the settled outputs back,
  and runs the `driver_side` jobs (cheap reductions and updates) itself, with the same `execute`.

Every job is an exact kernel, so any runner that executes the same plan produces the same bytes,
and therefore the same weights hash, as `--local`.

`train_step_plan` shards a batch over K shards. Per shard it plans forward, loss gradient and
backward jobs (all row-wise, so sharding cannot change them); the per-shard dW and db are exact,
unrounded sums, added up exactly by driver-side `add` jobs and rounded once by `sgd_update`.
Hence the new weights do not depend on K.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Protocol

import numpy as np

from driver.fixedpoint import quantize_rate
from driver.model import ACT_FRAC, DW_FRAC, GRAD_FRAC, Architecture
from ledger.errors import KernelError
from ledger.kernels import KERNEL_VERSION, JobSpec, TensorMeta, infer
from ledger.tensor import Tensor

#: The SGD learning rate is `lr_num / 2^LR_SHIFT` (with the batch mean's 1/N folded in).
LR_SHIFT = 24


@dataclass(frozen=True)
class TensorInput:
    """An external tensor supplied with the plan, by name."""

    name: str


@dataclass(frozen=True)
class JobOutput:
    """Output number `index` of the plan's job number `job` (an earlier job)."""

    job: int
    index: int


InputRef = TensorInput | JobOutput


@dataclass(frozen=True)
class PlannedJob:
    """One kernel call: op, params (ints and strings), inputs, and who runs it."""

    op: str
    params: Mapping[str, Any]
    inputs: tuple[InputRef, ...]
    driver_side: bool = False
    """True for cheap reductions and updates that the driver runs itself, even on the network."""
    label: str = ""
    """Human-readable, e.g. `fwd0/s1`: for progress displays and explorer links, never hashed."""


@dataclass(frozen=True)
class Plan:
    """A DAG of jobs over named external tensors, with named results."""

    tensors: Mapping[str, Tensor]
    jobs: tuple[PlannedJob, ...]
    results: Mapping[str, JobOutput]
    kernel_version: str = KERNEL_VERSION
    _specs: list[JobSpec] = field(default_factory=list, repr=False, compare=False)

    def specs(self) -> list[JobSpec]:
        """Check the whole DAG from metadata alone (as the ledger does) and return each job's spec.

        Raises KernelError if a reference points forwards or nowhere, or a job is invalid.
        """
        if self._specs:
            return self._specs
        specs: list[JobSpec] = []
        for number, job in enumerate(self.jobs):
            metas = [self._meta_of(ref, specs, number) for ref in job.inputs]
            try:
                specs.append(infer(job.op, dict(job.params), metas))
            except KernelError as exc:
                raise KernelError(f"plan job {number} ({job.label}): {exc}") from exc
        for name, ref in self.results.items():
            self._meta_of(ref, specs, len(self.jobs), f"result {name!r}")
        self._specs.extend(specs)
        return specs

    def _meta_of(
        self, ref: InputRef, specs: Sequence[JobSpec], number: int, what: str = ""
    ) -> TensorMeta:
        what = what or f"plan job {number}"
        if isinstance(ref, TensorInput):
            if ref.name not in self.tensors:
                raise KernelError(f"{what}: no tensor named {ref.name!r} in the plan")
            return TensorMeta.of_tensor(self.tensors[ref.name])
        if not 0 <= ref.job < number:
            raise KernelError(f"{what}: refers to job {ref.job}, which is not an earlier job")
        outputs = specs[ref.job].outputs
        if not 0 <= ref.index < len(outputs):
            raise KernelError(f"{what}: job {ref.job} has no output {ref.index}")
        return outputs[ref.index]


class JobRunner(Protocol):
    """Executes a plan and returns its named results (the boundary local/network runners share)."""

    def run(self, plan: Plan) -> dict[str, Tensor]: ...


class _Builder:
    """Appends jobs and hands out references to their outputs."""

    def __init__(self) -> None:
        self.tensors: dict[str, Tensor] = {}
        self.jobs: list[PlannedJob] = []

    def tensor(self, name: str, tensor: Tensor) -> TensorInput:
        self.tensors[name] = tensor
        return TensorInput(name)

    def job(
        self,
        op: str,
        params: dict[str, Any],
        inputs: Sequence[InputRef],
        n_out: int,
        label: str,
        driver_side: bool = False,
    ) -> list[JobOutput]:
        self.jobs.append(PlannedJob(op, params, tuple(inputs), driver_side, label))
        number = len(self.jobs) - 1
        return [JobOutput(number, i) for i in range(n_out)]

    def plan(self, results: dict[str, JobOutput]) -> Plan:
        return Plan(dict(self.tensors), tuple(self.jobs), results)


def shard_bounds(rows: int, shards: int) -> list[tuple[int, int]]:
    """Split `rows` into `min(shards, rows)` contiguous, nearly equal, non-empty ranges."""
    if rows < 1 or shards < 1:
        raise KernelError("a batch needs at least one row and one shard")
    count = min(shards, rows)
    edges = [rows * i // count for i in range(count + 1)]
    return list(zip(edges[:-1], edges[1:], strict=True))


def _forward(
    b: _Builder, arch: Architecture, weights: Mapping[str, TensorInput], x: InputRef, tag: str
) -> list[InputRef]:
    """Plan the forward pass of one shard; returns every layer's output (last = logits)."""
    outs: list[InputRef] = [x]
    for layer in range(arch.n_layers):
        params = {**arch.act_params(layer), "out_frac": ACT_FRAC}
        (a,) = b.job(
            "dense_forward",
            params,
            [outs[-1], weights[f"w{layer}"], weights[f"b{layer}"]],
            1,
            f"fwd{layer}/{tag}",
        )
        outs.append(a)
    return outs


def train_step_plan(
    arch: Architecture,
    weights: Mapping[str, Tensor],
    x: np.ndarray,
    y: np.ndarray,
    shards: int,
    lr: Fraction,
    fused: bool = False,
) -> Plan:
    """One SGD step on batch `(x, y)` split into `shards`: results are the new weights by name
    (`w0`, `b0`, ...) and each shard's logits (`logits/<s>`, for the loss and accuracy display).

    `fused` plans each shard as one `mlp_grad` job (label `step/s<s>`) instead of the DAG of
    forward, loss and backward jobs; `mlp_grad` is defined as exactly that DAG, so the results
    are the same bytes either way, but on a chain the step takes one job round instead of 2L + 1.
    """
    b = _Builder()
    w_refs = {name: b.tensor(name, weights[name]) for name in arch.param_names()}
    grads: dict[str, list[InputRef]] = {name: [] for name in arch.param_names()}
    results: dict[str, JobOutput] = {}
    for s, (lo, hi) in enumerate(shard_bounds(len(y), shards)):
        x_ref = b.tensor(f"x/{s}", Tensor(np.ascontiguousarray(x[lo:hi]), ACT_FRAC))
        y_ref = b.tensor(f"y/{s}", Tensor(np.ascontiguousarray(y[lo:hi]), 0))
        if fused:
            names = arch.param_names()
            step_logits, *shard_grads = b.job(
                "mlp_grad",
                mlp_grad_params(arch),
                [x_ref, y_ref, *(w_refs[name] for name in names)],
                1 + len(names),
                f"step/s{s}",
            )
            results[f"logits/{s}"] = step_logits
            for name, grad_ref in zip(names, shard_grads, strict=True):
                grads[name].append(grad_ref)
            continue
        acts = _forward(b, arch, w_refs, x_ref, f"s{s}")
        logits = acts[-1]
        assert isinstance(logits, JobOutput)
        results[f"logits/{s}"] = logits
        (da,) = b.job(
            "softmax_xent_grad", {"out_frac": GRAD_FRAC}, [logits, y_ref], 1, f"loss/s{s}"
        )
        grad: InputRef = da
        for layer in reversed(range(arch.n_layers)):
            act = arch.act_params(layer)
            a_in, a_out = acts[layer], acts[layer + 1]
            if layer > 0:
                dx, dw, db = b.job(
                    "dense_backward",
                    {**act, "dx_frac": GRAD_FRAC, "dw_frac": DW_FRAC},
                    [a_in, w_refs[f"w{layer}"], a_out, grad],
                    3,
                    f"bwd{layer}/s{s}",
                )
                grad = dx
            else:
                dw, db = b.job(
                    "dense_backward_params",
                    {**act, "dw_frac": DW_FRAC},
                    [a_in, a_out, grad],
                    2,
                    f"bwd{layer}/s{s}",
                )
            grads[f"w{layer}"].append(dw)
            grads[f"b{layer}"].append(db)
    lr_num = quantize_rate(lr, len(y), LR_SHIFT)
    for name in arch.param_names():
        parts = grads[name]
        total = parts[0]
        if len(parts) > 1:
            (total,) = b.job("add", {}, parts, 1, f"sum/{name}", driver_side=True)
        (new,) = b.job(
            "sgd_update",
            {"lr_num": lr_num, "lr_shift": LR_SHIFT},
            [w_refs[name], total],
            1,
            f"sgd/{name}",
            driver_side=True,
        )
        results[name] = new
    return b.plan(results)


def mlp_grad_params(arch: Architecture) -> dict[str, Any]:
    """The `mlp_grad` params equivalent to `train_step_plan`'s unfused jobs for `arch`."""
    hidden = arch.act_params(0) if arch.n_layers > 1 else {"act": "identity"}
    return {
        **hidden,
        "layers": arch.n_layers,
        "act_frac": ACT_FRAC,
        "grad_frac": GRAD_FRAC,
        "dw_frac": DW_FRAC,
    }


def forward_plan(
    arch: Architecture, weights: Mapping[str, Tensor], x: np.ndarray, shards: int
) -> Plan:
    """Inference on `x` split into `shards`: results are `logits/<s>` for each shard, in order."""
    b = _Builder()
    w_refs = {name: b.tensor(name, weights[name]) for name in arch.param_names()}
    results: dict[str, JobOutput] = {}
    for s, (lo, hi) in enumerate(shard_bounds(len(x), shards)):
        x_ref = b.tensor(f"x/{s}", Tensor(np.ascontiguousarray(x[lo:hi]), ACT_FRAC))
        logits = _forward(b, arch, w_refs, x_ref, f"s{s}")[-1]
        assert isinstance(logits, JobOutput)
        results[f"logits/{s}"] = logits
    return b.plan(results)


def gather_logits(results: Mapping[str, Tensor]) -> np.ndarray:
    """Concatenate the `logits/<s>` results in shard order (int64, scale ACT_FRAC)."""
    count = sum(1 for name in results if name.startswith("logits/"))
    return np.concatenate([results[f"logits/{s}"].data for s in range(count)], axis=0)
