"""The exact integer core every kernel is built from: range checks, exact GEMM, the rounding rule.

Exact GEMM. `A @ B` for integer matrices is defined as the mathematical integer sum. It is
computed, and refused only if `K * max|A| * max|B| > 2^63 - 1` (the sum might not fit in int64).

Float64 BLAS is exact on integers under one condition: every value the BLAS kernel forms is an
integer of magnitude at most 2^53. Any classical GEMM (blocked, vectorised, with or without FMA,
split accumulators, any summation order or thread split) only forms sums of subsets of the
products `a[i,k] * b[k,j]` of one output element, so if `K * max|A| * max|B| <= 2^53`, one BLAS
call is exact. Otherwise the operands are split into limbs, `A = sum_i A_i 2^(i La)` with the low
limbs in `[0, 2^La)` and the top limb signed (arithmetic shift), likewise `B`, with limb widths
chosen so `K * 2^La * 2^Lb <= 2^53`; each `A_i @ B_j` is then one exact BLAS call, and the
results are combined as `sum (A_i @ B_j) << (i La + j Lb)` in 64-bit two's-complement arithmetic
(mod 2^64), which equals the true sum because the true sum fits in int64. At most three BLAS calls
are ever needed (see `limb_plan`). None of this depends on the machine, and the result does not
depend on it at all, so every machine returns the same bytes.

Rounding rule (the only one in the kernel set): `round_shift(v, s) = (v + 2^(s-1)) >> s` for
`s > 0`, with `>>` the arithmetic (flooring) shift; `round_shift(v, 0) = v`. That is round to
nearest, ties toward +infinity.
"""

from __future__ import annotations

import numpy as np

from ledger.errors import ExactRangeError

#: Largest magnitude a float64 partial sum may reach and still be an exact integer.
FLOAT_EXACT_BITS = 53
FLOAT_EXACT = 1 << FLOAT_EXACT_BITS
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
            f"{what}: values could reach {bound} > 2^63 - 1; refusing to compute "
            "(scale the inputs down or use fewer frac bits)"
        )


def limb_plan(k: int, bits_a: int, bits_b: int) -> tuple[int, int, int, int]:
    """Limb counts and widths `(na, nb, La, Lb)` so every limb product sum stays within 2^53.

    `bits_a`, `bits_b` are the bit lengths of `max|A|`, `max|B|`. Limbs are bounded by `2^La`
    and `2^Lb`, and `La + Lb = 53 - ceil(log2 K)`; among those widths the plan with the fewest
    BLAS calls `na * nb` (then the fewest A limbs, then the smallest La) is chosen.
    """
    budget = FLOAT_EXACT_BITS - (k - 1).bit_length()
    best: tuple[tuple[int, int], tuple[int, int, int, int]] | None = None
    for width_a in range(1, budget):
        width_b = budget - width_a
        na = max(1, -(-bits_a // width_a))
        nb = max(1, -(-bits_b // width_b))
        key = (na * nb, na)
        if best is None or key < best[0]:
            best = (key, (na, nb, width_a, width_b))
    assert best is not None  # budget >= 29 because K <= 2^24
    return best[1]


def _limbs(a: np.ndarray, count: int, width: int) -> list[tuple[int, np.ndarray]]:
    """`a = sum(limb << shift)`: low limbs `(a >> shift) & (2^width - 1)`, top limb `a >> shift`."""
    if count == 1:
        return [(0, a)]
    mask = np.int64((1 << width) - 1)
    out = [
        (i * width, np.bitwise_and(np.right_shift(a, i * width), mask)) for i in range(count - 1)
    ]
    top = (count - 1) * width
    out.append((top, np.right_shift(a, top)))
    return out


def exact_matmul(a: np.ndarray, b: np.ndarray, what: str) -> tuple[np.ndarray, int]:
    """The exact product `a @ b` of int64 matrices, and the bound `K max|a| max|b|`.

    Raises ExactRangeError, computing nothing, if the bound exceeds 2^63 - 1.
    """
    n, k = a.shape
    m = b.shape[1]
    ma, mb = max_abs(a), max_abs(b)
    bound = k * ma * mb
    check_int64(bound, what)
    if bound == 0:
        return np.zeros((n, m), dtype=np.int64), 0
    if bound <= FLOAT_EXACT:
        return np.matmul(a.astype(np.float64), b.astype(np.float64)).astype(np.int64), bound
    na, nb, width_a, width_b = limb_plan(k, ma.bit_length(), mb.bit_length())
    b_limbs = [(s, limb.astype(np.float64)) for s, limb in _limbs(b, nb, width_b)]
    total = np.zeros((n, m), dtype=np.uint64)  # two's complement, mod 2^64
    for shift_a, limb_a in _limbs(a, na, width_a):
        fa = limb_a.astype(np.float64)
        for shift_b, fb in b_limbs:
            shift = shift_a + shift_b
            if shift >= 64:  # contributes 0 mod 2^64
                continue
            part = np.matmul(fa, fb).astype(np.int64).view(np.uint64)
            total += np.left_shift(part, np.uint64(shift))
    return total.view(np.int64), bound


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
