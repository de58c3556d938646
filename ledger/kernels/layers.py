"""The per-layer ops by name, with their infer and execute functions (the registry's core).

Shared by the package's registry (`ledger.kernels`) and by `mlp_grad` (`ledger.kernels.fused`),
which is defined as a composition of exactly these ops.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from ledger.kernels import dense, softmax
from ledger.kernels._meta import JobSpec, Params, TensorMeta

Infer = Callable[[str, Params, Sequence[TensorMeta]], JobSpec]
Exec = Callable[[str, Params, Sequence[TensorMeta], Sequence[np.ndarray]], list[np.ndarray]]

LAYER_OPS: dict[str, tuple[Infer, Exec]] = {
    "dense_forward": (dense.infer_dense_forward, dense.dense_forward),
    "dense_backward": (dense.infer_dense_backward, dense.dense_backward),
    "dense_backward_params": (dense.infer_dense_backward_params, dense.dense_backward_params),
    "softmax_xent_grad": (softmax.infer_softmax_xent_grad, softmax.softmax_xent_grad),
}
