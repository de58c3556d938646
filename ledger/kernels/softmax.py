"""`softmax_xent_grad`: the gradient of softmax cross-entropy, `softmax(z) - onehot(label)`.

Computed with integers only, so it is exact and the same everywhere (no `np.exp`):

    t    = z - max(z, row)                          (<= 0, scale F_z)
    u    = round_shift(t * LOG2E, F_z)              (log2-domain exponent, <= 0, scale 2^-30)
    q, r = (-u) >> 30, (-u) & (2^30 - 1)            (2^u = 2^-q * 2^(-r / 2^30))
    E    = Horner over COEFFS at r, scale 2^-30     (2^(-r/2^30) by its degree-10 Taylor series)
    e    = round_shift(E, min(q, 62))
    p    = floor((2 e 2^F + S) / (2 S)),  S = sum(e, row)   (p = e / S to F bits, ties up)
    g    = p - (2^F where column == label)

The row maximum gives `e = 2^30` exactly, so `S >= 2^30`. Relative error of `e` is below 2^-27.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ledger.errors import ExactRangeError, KernelError
from ledger.kernels._meta import JobSpec, Params, TensorMeta, check_arity, out_meta
from ledger.kernels.exact import max_abs, round_shift

EXP_BITS = 30
#: round_half_up(log2(e) * 2^30)
LOG2E = 1549082005
#: round_half_up((-ln 2)^k / k! * 2^30) for k = 0..10: the Taylor series of 2^-x = e^(-x ln 2).
COEFFS = (
    1073741824,
    -744261118,
    257941248,
    -59597083,
    10327387,
    -1431680,
    165394,
    -16377,
    1419,
    -109,
    8,
)
#: |z| must stay below this so `t * LOG2E` fits in int64.
MAX_LOGIT = 1 << 31
MAX_CLASSES = 1 << 20


def _shapes(op: str, params: Params, inputs: Sequence[TensorMeta]) -> tuple[int, TensorMeta]:
    check_arity(op, inputs, ("z", "labels"))
    z, labels = inputs
    if len(z.shape) != 2:
        raise KernelError(f"{op}: z must be 2-D [rows, classes], got shape {z.shape}")
    n, c = z.shape
    if c > MAX_CLASSES:
        raise KernelError(f"{op}: {c} classes exceed the limit {MAX_CLASSES}")
    if labels.shape != (n,) or labels.frac_bits != 0:
        raise KernelError(f"{op}: labels must have shape ({n},) and frac_bits 0")
    out_frac = params.int("out_frac", 1, 30)
    params.done()
    return out_frac, out_meta((n, c), out_frac, op)


def infer_softmax_xent_grad(op: str, params: Params, inputs: Sequence[TensorMeta]) -> JobSpec:
    _, out = _shapes(op, params, inputs)
    return JobSpec((out,), 16 * out.size)


def exp2_neg(u: np.ndarray) -> np.ndarray:
    """`2^u` for fixed-point `u <= 0` at scale 2^-30, as integers at scale 2^-30."""
    v = -u
    q = np.minimum(np.right_shift(v, EXP_BITS), 62)
    r = np.bitwise_and(v, (1 << EXP_BITS) - 1)
    acc = np.full(u.shape, COEFFS[-1], dtype=np.int64)
    for coeff in reversed(COEFFS[:-1]):
        acc = coeff + round_shift(acc * r, EXP_BITS)
    half = np.where(q > 0, np.left_shift(np.int64(1), np.maximum(q - 1, 0)), 0)
    return np.right_shift(acc + half, q)


def softmax_xent_grad(
    op: str, params: Params, metas: Sequence[TensorMeta], data: Sequence[np.ndarray]
) -> list[np.ndarray]:
    """`softmax(z) - onehot(labels)` at `out_frac` bits (see the module docstring)."""
    out_frac, _ = _shapes(op, params, metas)
    z, labels = data
    n, c = z.shape
    if max_abs(z) >= MAX_LOGIT:
        raise ExactRangeError(f"{op}: |z| must stay below 2^31, got {max_abs(z)}")
    if labels.size and (int(labels.min()) < 0 or int(labels.max()) >= c):
        raise KernelError(f"{op}: labels must lie in 0..{c - 1}")
    t = z - z.max(axis=1, keepdims=True)
    u = round_shift(t * np.int64(LOG2E), metas[0].frac_bits)
    e = exp2_neg(u)
    s = e.sum(axis=1, keepdims=True)
    p = (2 * np.left_shift(e, out_frac) + s) // (2 * s)
    p[np.arange(n), labels] -= np.int64(1 << out_frac)
    return [p]
