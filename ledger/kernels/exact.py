"""The exact integer core every kernel is built from: range checks, exact GEMM, the rounding rule.

Exact GEMM. The result of `A @ B` for integer matrices is defined as the mathematical integer sum;
we compute it with float64 BLAS, which is exact under one condition: every value the BLAS kernel
can form is an integer of magnitude at most 2^53. Any classical GEMM (blocked, vectorised, with or
without FMA, split accumulators, any summation order or thread split) only forms sums of subsets of
the products `a[i,k] * b[k,j]` of one output element, so if `kc * max|A| * max|B| <= 2^53`, every
partial sum over a chunk of `kc` consecutive `k` is exact. We therefore split `K` into chunks of
`kc = floor(2^53 / (max|A| * max|B|))` (usually one chunk: the whole `K`) and add the chunk results
in int64. The chunk size depends on the data, not the machine, and the result does not depend on
it at all, so every machine returns the same bytes.

Rounding rule (the only one in the kernel set): `round_shift(v, s) = (v + 2^(s-1)) >> s` for
`s > 0`, with `>>` the arithmetic (flooring) shift; `round_shift(v, 0) = v`. That is round to
nearest, ties toward +infinity.
"""

from __future__ import annotations

import numpy as np

from ledger.errors import ExactRangeError

#: Largest magnitude a float64 partial sum may reach and still be an exact integer.
FLOAT_EXACT = 1 << 53
INT64_MAX = (1 << 63) - 1


def max_abs(a: np.ndarray) -> int:
    """`max |a|` as a Python int (safe for int64's minimum, whose numpy `abs` overflows)."""
    if a.size == 0:
        return 0
    return max(int(a.max()), -int(a.min()))


def check_int64(bound: int, what: str) -> None:
    """Refuse a computation whose worst-case intermediate `bound` does not fit in int64."""
    if bound > INT64_MAX:
        raise ExactRangeError(
            f"{what}: intermediate values could reach {bound} > 2^63 - 1; refusing to compute "
            "(scale the inputs down or use fewer frac bits)"
        )


def exact_matmul(a: np.ndarray, b: np.ndarray, what: str) -> tuple[np.ndarray, int]:
    """The exact product `a @ b` of integer matrices, as int64, and the bound `K max|a| max|b|`.

    Raises ExactRangeError, computing nothing, if one product exceeds 2^53 in magnitude or the
    sum could overflow int64.
    """
    n, k = a.shape
    m = b.shape[1]
    ma, mb = max_abs(a), max_abs(b)
    per_product = ma * mb
    if per_product > FLOAT_EXACT:
        raise ExactRangeError(
            f"{what}: max|a| * max|b| = {ma} * {mb} exceeds 2^53, so a single product cannot be "
            "computed exactly; refusing"
        )
    bound = k * per_product
    check_int64(bound, what)
    if per_product == 0:
        return np.zeros((n, m), dtype=np.int64), 0
    af = a.astype(np.float64)
    bf = b.astype(np.float64)
    chunk = FLOAT_EXACT // per_product
    if chunk >= k:
        return np.matmul(af, bf).astype(np.int64), bound
    out = np.zeros((n, m), dtype=np.int64)
    for k0 in range(0, k, chunk):
        out += np.matmul(af[:, k0 : k0 + chunk], bf[k0 : k0 + chunk]).astype(np.int64)
    return out, bound


def round_shift(v: np.ndarray, shift: int) -> np.ndarray:
    """The rounding rule: `(v + 2^(shift-1)) >> shift` (ties toward +inf); identity for 0.

    The caller has checked that `max|v| + 2^(shift-1)` fits in int64.
    """
    if shift == 0:
        return v
    return np.right_shift(v + np.int64(1 << (shift - 1)), shift)


def round_bound(bound: int, shift: int) -> int:
    """Worst case of `v + 2^(shift-1)` for `|v| <= bound` (what `round_shift` adds)."""
    return bound + ((1 << (shift - 1)) if shift > 0 else 0)
