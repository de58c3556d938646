"""The exact kernels: layerchain's versioned instruction set.

Miners run `execute`; validators re-run it to settle a disputed job; the training driver runs the
cheap ops itself. `infer` checks a job from its inputs' metadata alone (so a DAG job whose inputs
do not exist yet can be validated and bounded when it is posted). Every op is exact: the output is
a pure function of the input integers, the same bytes on every machine, or a refusal
(`ExactRangeError`) when the inputs lie outside the range the op can compute exactly.

Ops (see docs/PROTOCOL.md section 4 for the normative text):

| op                      | inputs          | outputs       |
|-------------------------|-----------------|---------------|
| `dense_forward`         | x, w, b         | a             |
| `dense_backward`        | x, w, a, da     | dx, dw, db    |
| `dense_backward_params` | x, a, da        | dw, db        |
| `softmax_xent_grad`     | z, labels       | g             |
| `add`                   | t0, t1, ...     | sum           |
| `sgd_update`            | w, g            | w'            |
| `mlp_grad`              | x, labels, w0.. | logits, dw0.. |  (one shard's training step)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ledger.errors import KernelError
from ledger.kernels import elementwise, fused
from ledger.kernels._meta import JobSpec, Params, TensorMeta, check_meta
from ledger.kernels.exact import round_shift
from ledger.kernels.layers import LAYER_OPS, Exec, Infer
from ledger.tensor import Tensor

__all__ = [
    "KERNEL_VERSION",
    "OPS",
    "JobSpec",
    "TensorMeta",
    "execute",
    "infer",
    "round_shift",
]

#: Named by every job; bumped whenever any op's output bytes could change.
KERNEL_VERSION = "exact-v1"

_REGISTRY: dict[str, tuple[Infer, Exec]] = {
    **LAYER_OPS,
    "add": (elementwise.infer_add, elementwise.add),
    "sgd_update": (elementwise.infer_sgd_update, elementwise.sgd_update),
    "mlp_grad": (fused.infer_mlp_grad, fused.mlp_grad),
}

OPS: frozenset[str] = frozenset(_REGISTRY)


def _lookup(op: object) -> tuple[Infer, Exec]:
    if not isinstance(op, str) or op not in _REGISTRY:
        raise KernelError(f"unknown op {op!r}; {KERNEL_VERSION} has {sorted(OPS)}")
    return _REGISTRY[op]


def infer(op: str, params: dict[str, Any], inputs: Sequence[TensorMeta]) -> JobSpec:
    """Validate a job from metadata alone; return its outputs' metadata and a cost bound.

    Raises KernelError naming what is wrong: unknown op, bad or missing or extra params, wrong
    number of inputs, mismatched shapes or scales.
    """
    infer_fn, _ = _lookup(op)
    metas = [check_meta(m, f"{op} input {i}") for i, m in enumerate(inputs)]
    return infer_fn(op, Params(op, params), metas)


def execute(op: str, params: dict[str, Any], inputs: Sequence[Tensor]) -> list[Tensor]:
    """Run a job exactly. The outputs match `infer(op, params, metas of inputs)` exactly.

    Raises KernelError for an invalid job and ExactRangeError (computing nothing) for inputs
    outside the exact range.
    """
    _, exec_fn = _lookup(op)
    for i, tensor in enumerate(inputs):
        if not isinstance(tensor, Tensor):
            raise KernelError(f"{op} input {i}: expected Tensor, got {type(tensor).__name__}")
    metas = [TensorMeta.of_tensor(t) for t in inputs]
    spec = infer(op, params, metas)
    arrays = [t.data.astype(np.int64, copy=False) for t in inputs]  # read-only: ops never write
    results = exec_fn(op, Params(op, params), metas, arrays)
    outputs = [
        Tensor(np.ascontiguousarray(arr, dtype=np.int64), meta.frac_bits)
        for arr, meta in zip(results, spec.outputs, strict=True)
    ]
    for out, meta in zip(outputs, spec.outputs, strict=True):
        if TensorMeta.of_tensor(out) != meta:  # a bug in an op, never bad input
            raise AssertionError(f"{op}: output {TensorMeta.of_tensor(out)} != inferred {meta}")
    return outputs
