"""Dense layer kernels: `act(X @ W + b)` forward, and its backward giving dX, dW and db.

Shapes: X is [N, K] (a batch of N rows), W is [K, M], b is [M]. Every output row of the forward
pass and of dX depends only on the same input row, so splitting a batch into shards changes
nothing. dW and db are sums over the batch: the backward ops return them at a caller-chosen scale,
and at full precision (`dw_frac = frac(X) + frac(dA)`) they are exact integer sums that a driver
can add up across shards and round once, so the result does not depend on the sharding either.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ledger.errors import KernelError
from ledger.kernels._meta import JobSpec, Params, TensorMeta, check_arity, out_meta
from ledger.kernels.activation import Activation
from ledger.kernels.exact import (
    check_int64,
    exact_matmul,
    max_abs,
    round_bound,
    round_shift,
)
from ledger.tensor import MAX_FRAC_BITS


def _matrix(meta: TensorMeta, op: str, name: str) -> tuple[int, int]:
    if len(meta.shape) != 2:
        raise KernelError(f"{op}: {name} must be 2-D, got shape {meta.shape}")
    return meta.shape[0], meta.shape[1]


def _shift(op: str, name: str, want: int, have: int) -> int:
    """Right shift from scale `have` down to `want`; refuses a scale the op cannot reach."""
    if want > have:
        raise KernelError(f"{op}: {name} = {want} exceeds the {have} frac bits of the exact result")
    return have - want


# --- dense_forward -------------------------------------------------------------------------------


def _forward_shapes(
    op: str, params: Params, inputs: Sequence[TensorMeta]
) -> tuple[Activation, int, int, int, int, int, int]:
    check_arity(op, inputs, ("x", "w", "b"))
    x, w, b = inputs
    n, k = _matrix(x, op, "x")
    k2, m = _matrix(w, op, "w")
    if k != k2:
        raise KernelError(f"{op}: x is {x.shape} but w is {w.shape}; inner dimensions differ")
    if b.shape != (m,):
        raise KernelError(f"{op}: b must have shape ({m},), got {b.shape}")
    act = Activation(params)
    raw = x.frac_bits + w.frac_bits
    bias_shift = _shift(op, "frac_bits of b", b.frac_bits, raw)
    out_frac = params.int("out_frac", 0, min(raw, MAX_FRAC_BITS))
    params.done()
    return act, n, k, m, raw, bias_shift, out_frac


def infer_dense_forward(op: str, params: Params, inputs: Sequence[TensorMeta]) -> JobSpec:
    _, n, k, m, _, _, out_frac = _forward_shapes(op, params, inputs)
    return JobSpec((out_meta((n, m), out_frac, op),), n * k * m + 2 * n * m)


def dense_forward(
    op: str, params: Params, metas: Sequence[TensorMeta], data: Sequence[np.ndarray]
) -> list[np.ndarray]:
    """`a = act(round_shift(X @ W + (b << bias_shift), frac(X) + frac(W) - out_frac))`."""
    act, _, _, _, raw, bias_shift, out_frac = _forward_shapes(op, params, metas)
    x, w, b = data
    acc, bound = exact_matmul(x, w, f"{op} X @ W")
    shift = raw - out_frac
    bias_bound = max_abs(b) << bias_shift
    check_int64(round_bound(bound + bias_bound, shift), f"{op} bias and rounding")
    # round_shift(acc + (b << bias_shift), shift), fused into one in-place pass over acc
    offset = np.left_shift(b, bias_shift) + np.int64((1 << (shift - 1)) if shift else 0)
    acc += offset[np.newaxis, :]
    if shift:
        np.right_shift(acc, shift, out=acc)
    return [act.forward(acc, f"{op} activation")]


# --- dense_backward and dense_backward_params ----------------------------------------------------


def _backward_shapes(
    op: str, params: Params, inputs: Sequence[TensorMeta], with_dx: bool
) -> tuple[Activation, list[TensorMeta], int, int, int, int]:
    names = ("x", "w", "a", "da") if with_dx else ("x", "a", "da")
    check_arity(op, inputs, names)
    named = dict(zip(names, inputs, strict=True))
    x, a, da = named["x"], named["a"], named["da"]
    n, k = _matrix(x, op, "x")
    n2, m = _matrix(da, op, "da")
    if n != n2:
        raise KernelError(f"{op}: x has {n} rows but da has {n2}")
    if a.shape != da.shape:
        raise KernelError(f"{op}: a {a.shape} and da {da.shape} must have the same shape")
    act = Activation(params)
    outs: list[TensorMeta] = []
    dx_shift = 0
    if with_dx:
        w = named["w"]
        if w.shape != (k, m):
            raise KernelError(f"{op}: w must have shape ({k}, {m}), got {w.shape}")
        dx_frac = params.int("dx_frac", 0, min(da.frac_bits + w.frac_bits, MAX_FRAC_BITS))
        dx_shift = da.frac_bits + w.frac_bits - dx_frac
        outs.append(out_meta((n, k), dx_frac, op))
    dw_frac = params.int("dw_frac", 0, min(x.frac_bits + da.frac_bits, MAX_FRAC_BITS))
    dw_shift = x.frac_bits + da.frac_bits - dw_frac
    outs.append(out_meta((k, m), dw_frac, op))
    outs.append(out_meta((m,), da.frac_bits, op))
    params.done()
    return act, outs, dx_shift, dw_shift, n * k * m, n * m


def infer_dense_backward(op: str, params: Params, inputs: Sequence[TensorMeta]) -> JobSpec:
    _, outs, _, _, nkm, nm = _backward_shapes(op, params, inputs, with_dx=True)
    return JobSpec(tuple(outs), 2 * nkm + 4 * nm)


def infer_dense_backward_params(op: str, params: Params, inputs: Sequence[TensorMeta]) -> JobSpec:
    _, outs, _, _, nkm, nm = _backward_shapes(op, params, inputs, with_dx=False)
    return JobSpec(tuple(outs), nkm + 4 * nm)


def _grads(op: str, x: np.ndarray, dz: np.ndarray, dw_shift: int) -> tuple[np.ndarray, np.ndarray]:
    dw_raw, bound = exact_matmul(x.T, dz, f"{op} X^T @ dZ")
    check_int64(round_bound(bound, dw_shift), f"{op} dW rounding")
    check_int64(dz.shape[0] * max_abs(dz), f"{op} db sum")
    return round_shift(dw_raw, dw_shift), dz.sum(axis=0, dtype=np.int64)


def dense_backward(
    op: str, params: Params, metas: Sequence[TensorMeta], data: Sequence[np.ndarray]
) -> list[np.ndarray]:
    """`dz = da * act'(a)`; `dX = round(dz @ W^T)`, `dW = round(X^T @ dz)`, `db = sum(dz)`."""
    act, _, dx_shift, dw_shift, _, _ = _backward_shapes(op, params, metas, with_dx=True)
    x, w, a, da = data
    dz = act.backward(a, da, f"{op} activation derivative")
    dx_raw, bound = exact_matmul(dz, w.T, f"{op} dZ @ W^T")
    check_int64(round_bound(bound, dx_shift), f"{op} dX rounding")
    dw, db = _grads(op, x, dz, dw_shift)
    return [round_shift(dx_raw, dx_shift), dw, db]


def dense_backward_params(
    op: str, params: Params, metas: Sequence[TensorMeta], data: Sequence[np.ndarray]
) -> list[np.ndarray]:
    """`dense_backward` without dX (the first layer's input needs no gradient)."""
    act, _, _, dw_shift, _, _ = _backward_shapes(op, params, metas, with_dx=False)
    x, a, da = data
    dz = act.backward(a, da, f"{op} activation derivative")
    dw, db = _grads(op, x, dz, dw_shift)
    return [dw, db]
