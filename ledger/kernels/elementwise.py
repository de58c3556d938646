"""Element-wise kernels the training loop needs besides the dense layers.

- `add`: the exact sum of same-shaped, same-scale tensors (reducing per-shard gradients).
- `sgd_update`: `w - round_shift(g * lr_num, frac(g) + lr_shift - frac(w))`, the plain SGD step
  with the learning rate `lr_num / 2^lr_shift` (a batch mean's `1/N` folded in by the driver).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ledger.errors import KernelError
from ledger.kernels._meta import JobSpec, Params, TensorMeta, check_arity, out_meta
from ledger.kernels.exact import check_int64, max_abs, round_bound, round_shift

MAX_ADD_INPUTS = 256
MAX_LR_NUM = 1 << 32
MAX_SHIFT = 62


def infer_add(op: str, params: Params, inputs: Sequence[TensorMeta]) -> JobSpec:
    params.done()
    if not 2 <= len(inputs) <= MAX_ADD_INPUTS:
        raise KernelError(f"{op}: expects 2..{MAX_ADD_INPUTS} inputs, got {len(inputs)}")
    first = inputs[0]
    for i, meta in enumerate(inputs[1:], start=1):
        if meta.shape != first.shape or meta.frac_bits != first.frac_bits:
            raise KernelError(
                f"{op}: input {i} has shape {meta.shape} / frac_bits {meta.frac_bits}, but input 0"
                f" has {first.shape} / {first.frac_bits}; all inputs must match"
            )
    return JobSpec((out_meta(first.shape, first.frac_bits, op),), len(inputs) * first.size)


def add(
    op: str, params: Params, metas: Sequence[TensorMeta], data: Sequence[np.ndarray]
) -> list[np.ndarray]:
    """The exact element-wise sum, in input order (order is irrelevant: integers)."""
    infer_add(op, params, metas)
    check_int64(sum(max_abs(d) for d in data), f"{op} sum")
    total = data[0].copy()
    for d in data[1:]:
        total += d
    return [total]


def _sgd_shapes(
    op: str, params: Params, inputs: Sequence[TensorMeta]
) -> tuple[int, int, TensorMeta]:
    check_arity(op, inputs, ("w", "g"))
    w, g = inputs
    if w.shape != g.shape:
        raise KernelError(f"{op}: w {w.shape} and g {g.shape} must have the same shape")
    lr_num = params.int("lr_num", 1, MAX_LR_NUM)
    lr_shift = params.int("lr_shift", 0, MAX_SHIFT)
    params.done()
    shift = g.frac_bits + lr_shift - w.frac_bits
    if not 0 <= shift <= MAX_SHIFT:
        raise KernelError(
            f"{op}: frac(g) + lr_shift - frac(w) = {shift} must lie in 0..{MAX_SHIFT}"
        )
    return lr_num, shift, out_meta(w.shape, w.frac_bits, op)


def infer_sgd_update(op: str, params: Params, inputs: Sequence[TensorMeta]) -> JobSpec:
    _, _, out = _sgd_shapes(op, params, inputs)
    return JobSpec((out,), 2 * out.size)


def sgd_update(
    op: str, params: Params, metas: Sequence[TensorMeta], data: Sequence[np.ndarray]
) -> list[np.ndarray]:
    """`w' = w - round_shift(g * lr_num, frac(g) + lr_shift - frac(w))`."""
    lr_num, shift, _ = _sgd_shapes(op, params, metas)
    w, g = data
    product_bound = max_abs(g) * lr_num
    check_int64(round_bound(product_bound, shift), f"{op} g * lr_num")
    step = round_shift(g * np.int64(lr_num), shift)
    check_int64(max_abs(w) + max_abs(step), f"{op} w - step")
    return [w - step]
