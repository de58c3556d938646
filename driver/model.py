"""The MLP: its architecture, fixed-point scales, seeded integer initialisation and weights hash.

Scales (fractional bits), chosen so every kernel stays far inside its exact range:

| quantity                          | frac bits |
|-----------------------------------|-----------|
| inputs and activations            | 12 (`ACT_FRAC`) |
| weights and biases                | 20 (`WEIGHT_FRAC`) |
| loss gradient and backpropagated dA | 16 (`GRAD_FRAC`) |
| per-shard dW (exact, unrounded)   | 28 = ACT_FRAC + GRAD_FRAC |
| per-shard db (exact)              | 16 = GRAD_FRAC |

Weights hash: `digest({"domain": "layerchain/weights/v1", "tensors": [[name, tensor hash], ...]})`
over the parameters in layer order `w0, b0, w1, b1, ...` (see docs/PROTOCOL.md section 4).
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np

from driver.datasets import INPUT_FRAC
from driver.fixedpoint import FixedPointError, glorot_limit, quantize_slope, seeded_ints
from ledger.encoding import digest
from ledger.tensor import Tensor

ACT_FRAC = INPUT_FRAC
WEIGHT_FRAC = 20
GRAD_FRAC = 16
DW_FRAC = ACT_FRAC + GRAD_FRAC
SLOPE_SHIFT = 16
ACTIVATIONS = ("relu", "leaky_relu")
#: PRNG streams: layer i is initialised from stream INIT_STREAM + i, epoch e shuffled by
#: SHUFFLE_STREAM + e.
INIT_STREAM = 0
SHUFFLE_STREAM = 1 << 20


@dataclass(frozen=True)
class Architecture:
    """Layer sizes `(inputs, hidden..., classes)` and the hidden layers' activation."""

    sizes: tuple[int, ...]
    activation: str = "relu"
    leaky_slope: Fraction = Fraction(1, 16)

    def __post_init__(self) -> None:
        if len(self.sizes) < 2 or any(s < 1 for s in self.sizes):
            raise FixedPointError(f"layer sizes {self.sizes} must be at least two positive ints")
        if self.activation not in ACTIVATIONS:
            raise FixedPointError(f"activation must be one of {ACTIVATIONS}")

    @property
    def n_layers(self) -> int:
        return len(self.sizes) - 1

    def act_params(self, layer: int) -> dict[str, Any]:
        """Kernel params naming the activation of `layer` (the last layer is linear: logits)."""
        if layer == self.n_layers - 1:
            return {"act": "identity"}
        if self.activation == "relu":
            return {"act": "relu"}
        return {
            "act": "leaky_relu",
            "slope_num": quantize_slope(self.leaky_slope, SLOPE_SHIFT),
            "slope_shift": SLOPE_SHIFT,
        }

    def param_names(self) -> list[str]:
        """Parameter names in hash order: `w0, b0, w1, b1, ...`."""
        return [f"{kind}{i}" for i in range(self.n_layers) for kind in ("w", "b")]


def init_weights(arch: Architecture, seed: int) -> dict[str, Tensor]:
    """Glorot-uniform integer weights from the seeded PCG64 stream `(seed, layer)`, zero biases."""
    weights: dict[str, Tensor] = {}
    for i in range(arch.n_layers):
        fan_in, fan_out = arch.sizes[i], arch.sizes[i + 1]
        limit = glorot_limit(fan_in, fan_out, WEIGHT_FRAC)
        w = seeded_ints(seed, INIT_STREAM + i, -limit, limit, (fan_in, fan_out))
        weights[f"w{i}"] = Tensor(w, WEIGHT_FRAC)
        weights[f"b{i}"] = Tensor(np.zeros(fan_out, dtype=np.int64), WEIGHT_FRAC)
    return weights


def weights_hash(arch: Architecture, weights: dict[str, Tensor]) -> str:
    """One digest naming every parameter tensor, in layer order."""
    return digest(
        {
            "domain": "layerchain/weights/v1",
            "tensors": [[name, weights[name].hash] for name in arch.param_names()],
        }
    )
