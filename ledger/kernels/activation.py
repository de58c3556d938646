"""Activations and their derivatives, on fixed-point integers.

`leaky_relu` has the slope `slope_num / 2^slope_shift` (strictly between 0 and 1), applied with the
rounding rule. The derivative is read off the activation's *output* `a`, never its input: for all
three activations `a > 0` exactly when the pre-activation `z > 0` (a negative `z` maps to `a <= 0`),
so the backward job needs only the forward job's output.
"""

from __future__ import annotations

import numpy as np

from ledger.kernels._meta import Params
from ledger.kernels.exact import check_int64, max_abs, round_bound, round_shift

ACTIVATIONS = ("identity", "relu", "leaky_relu")
MAX_SLOPE_SHIFT = 30


class Activation:
    """One parsed activation: its name and, for leaky ReLU, the slope as `num / 2^shift`."""

    def __init__(self, params: Params) -> None:
        self.name = params.choice("act", ACTIVATIONS)
        self.slope_num = 0
        self.slope_shift = 0
        if self.name == "leaky_relu":
            self.slope_shift = params.int("slope_shift", 1, MAX_SLOPE_SHIFT)
            self.slope_num = params.int("slope_num", 1, (1 << self.slope_shift) - 1)

    def _scale_negative(self, v: np.ndarray, what: str) -> np.ndarray:
        """`round_shift(v * slope_num, slope_shift)`, refusing int64 overflow."""
        check_int64(round_bound(max_abs(v) * self.slope_num, self.slope_shift), what)
        return round_shift(v * np.int64(self.slope_num), self.slope_shift)

    def forward(self, z: np.ndarray, what: str) -> np.ndarray:
        """`act(z)` on int64 fixed point (same scale in and out)."""
        if self.name == "identity":
            return z
        if self.name == "relu":
            return np.maximum(z, 0)
        return np.where(z > 0, z, self._scale_negative(z, what))

    def backward(self, a: np.ndarray, da: np.ndarray, what: str) -> np.ndarray:
        """`dz = da * act'(z)`, with `act'` read off the output `a` (1 where `a > 0`)."""
        if self.name == "identity":
            return da
        if self.name == "relu":
            return np.where(a > 0, da, 0)
        return np.where(a > 0, da, self._scale_negative(da, what))
