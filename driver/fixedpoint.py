"""Driver-side fixed-point arithmetic on Python integers: rates, initial weight ranges.

Anything that decides the bytes of the weights is computed here with exact integer or rational
arithmetic, never with floats, so it gives the same answer on every machine and Python build.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np

from ledger.errors import LedgerError


class FixedPointError(LedgerError):
    """A driver-side number (learning rate, slope, ...) cannot be represented as asked."""


def round_half_up_div(numerator: int, denominator: int) -> int:
    """`numerator / denominator` rounded to nearest, ties toward +infinity (the kernels' rule)."""
    if denominator <= 0:
        raise FixedPointError("denominator must be positive")
    return (2 * numerator + denominator) // (2 * denominator)


def parse_rate(text: str | int | Fraction) -> Fraction:
    """A positive rate from exact decimal text such as `"0.1"` or `"1/8"` (never a float)."""
    if isinstance(text, float):  # type: ignore[unreachable]
        raise FixedPointError("rates are given as exact decimal text, not floats")
    try:
        value = Fraction(text)
    except (ValueError, ZeroDivisionError) as exc:
        raise FixedPointError(f"not an exact decimal or fraction: {text!r}") from exc
    if value <= 0:
        raise FixedPointError(f"rate must be positive, got {text!r}")
    return value


def quantize_rate(rate: Fraction, divisor: int, shift: int) -> int:
    """The integer `num` with `num / 2^shift` nearest to `rate / divisor` (at least 1).

    Used to fold a batch mean's `1/divisor` into the SGD learning rate: the update kernel then sums
    gradients exactly and rounds once.
    """
    if divisor < 1:
        raise FixedPointError("divisor must be at least 1")
    scaled = rate * (1 << shift) / divisor
    num = round_half_up_div(scaled.numerator, scaled.denominator)
    if num < 1:
        raise FixedPointError(f"rate {rate}/{divisor} is below 2^-{shift}; it would round to 0")
    return num


def quantize_slope(slope: Fraction, shift: int) -> int:
    """Leaky-ReLU slope as `num / 2^shift`, strictly between 0 and 1."""
    num = round_half_up_div(slope.numerator << shift, slope.denominator)
    if not 0 < num < (1 << shift):
        raise FixedPointError(f"slope {slope} must lie strictly between 0 and 1")
    return num


def glorot_limit(fan_in: int, fan_out: int, frac_bits: int) -> int:
    """`floor(sqrt(6 / (fan_in + fan_out)) * 2^frac_bits)`, by integer square root."""
    return math.isqrt((6 << (2 * frac_bits)) // (fan_in + fan_out))


def seeded_raw(seed: int, stream: int, count: int) -> np.ndarray:
    """`count` raw 64-bit words of PCG64 seeded with `(seed, stream)`.

    numpy guarantees the raw bit stream of `PCG64(SeedSequence(...))` across versions and
    machines (unlike `Generator` methods, whose algorithms may change), so everything random in a
    run is derived from these words with integer arithmetic we control.
    """
    if seed < 0 or stream < 0:
        raise FixedPointError("seeds must be non-negative integers")
    bits = np.random.PCG64(np.random.SeedSequence([seed, stream]))
    return np.asarray(bits.random_raw(count), dtype=np.uint64)


def seeded_ints(seed: int, stream: int, low: int, high: int, shape: tuple[int, ...]) -> np.ndarray:
    """Integers in `[low, high]` as int64: `low + (top32(raw) * span) >> 32`, span < 2^31."""
    span = high - low + 1
    if not 1 <= span < (1 << 31):
        raise FixedPointError(f"range [{low}, {high}] must hold 1..2^31 - 1 values")
    count = math.prod(shape)
    top = seeded_raw(seed, stream, count) >> np.uint64(32)
    offsets = (top * np.uint64(span)) >> np.uint64(32)
    return (offsets.astype(np.int64) + np.int64(low)).reshape(shape)


def seeded_permutation(seed: int, stream: int, n: int) -> np.ndarray:
    """A permutation of `range(n)`: the stable argsort of `n` raw words."""
    return np.argsort(seeded_raw(seed, stream, n), kind="stable").astype(np.int64)
