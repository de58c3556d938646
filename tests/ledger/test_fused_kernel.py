"""`mlp_grad` (PROTOCOL.md §4.5): one job computing a shard's forward pass, loss gradient and
backward pass, defined as the exact composition of the single-layer ops."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from ledger import kernels
from ledger.errors import KernelError
from ledger.kernels import TensorMeta
from ledger.tensor import Tensor, quantize

LEAKY = {"act": "leaky_relu", "slope_num": 13, "slope_shift": 7}


def _inputs(sizes: tuple[int, ...], rows: int = 6, seed: int = 0) -> list[Tensor]:
    rng = np.random.default_rng(seed)
    out = [
        quantize(rng.normal(size=(rows, sizes[0])), 12),
        Tensor(rng.integers(0, sizes[-1], size=rows), 0),
    ]
    for k, m in zip(sizes[:-1], sizes[1:], strict=True):
        out += [quantize(rng.normal(size=(k, m)) * 0.4, 12), quantize(rng.normal(size=m), 24)]
    return out


def _by_parts(hidden: dict[str, Any], inputs: list[Tensor]) -> list[Tensor]:
    """The composition written out with single-layer jobs, as a driver would post them."""
    x, labels, weights = inputs[0], inputs[1], inputs[2:]
    layers = len(weights) // 2
    act = [hidden if i < layers - 1 else {"act": "identity"} for i in range(layers)]
    acts = [x]
    for i in range(layers):
        (a,) = kernels.execute(
            "dense_forward",
            {**act[i], "out_frac": 12},
            [acts[-1], weights[2 * i], weights[2 * i + 1]],
        )
        acts.append(a)
    (g,) = kernels.execute("softmax_xent_grad", {"out_frac": 16}, [acts[-1], labels])
    grads: list[Tensor] = []
    for i in reversed(range(layers)):
        if i:
            g, dw, db = kernels.execute(
                "dense_backward",
                {**act[i], "dx_frac": 16, "dw_frac": 28},
                [acts[i], weights[2 * i], acts[i + 1], g],
            )
        else:
            dw, db = kernels.execute(
                "dense_backward_params", {**act[i], "dw_frac": 28}, [acts[0], acts[1], g]
            )
        grads = [dw, db, *grads]
    return [acts[-1], *grads]


def _params(layers: int, hidden: dict[str, Any]) -> dict[str, Any]:
    return {**hidden, "layers": layers, "act_frac": 12, "grad_frac": 16, "dw_frac": 28}


@pytest.mark.parametrize(
    ("sizes", "hidden"),
    [
        ((5, 3), {"act": "relu"}),
        ((5, 7, 3), {"act": "relu"}),
        ((5, 7, 4, 3), LEAKY),
        ((5, 7, 3), {"act": "identity"}),
    ],
)
def test_outputs_are_the_bytes_of_the_composition(
    sizes: tuple[int, ...], hidden: dict[str, Any]
) -> None:
    inputs = _inputs(sizes)
    params = _params(len(sizes) - 1, hidden)
    fused = kernels.execute("mlp_grad", params, inputs)
    parts = _by_parts(hidden, inputs)
    assert [t.hash for t in fused] == [t.hash for t in parts]
    spec = kernels.infer("mlp_grad", params, [TensorMeta.of_tensor(t) for t in inputs])
    assert [TensorMeta.of_tensor(t) for t in fused] == list(spec.outputs)
    assert spec.macs > 0


def test_cost_is_the_sum_of_the_parts() -> None:
    inputs = _inputs((5, 7, 3))
    metas = [TensorMeta.of_tensor(t) for t in inputs]
    whole = kernels.infer("mlp_grad", _params(2, {"act": "relu"}), metas).macs
    x, labels, w0, b0, w1, b1 = metas
    a1, a2 = TensorMeta("<i8", (6, 7), 12), TensorMeta("<i8", (6, 3), 12)
    g2, g1 = TensorMeta("<i8", (6, 3), 16), TensorMeta("<i8", (6, 7), 16)
    parts = [
        kernels.infer("dense_forward", {"act": "relu", "out_frac": 12}, [x, w0, b0]),
        kernels.infer("dense_forward", {"act": "identity", "out_frac": 12}, [a1, w1, b1]),
        kernels.infer("softmax_xent_grad", {"out_frac": 16}, [a2, labels]),
        kernels.infer(
            "dense_backward", {"act": "identity", "dx_frac": 16, "dw_frac": 28}, [a1, w1, a2, g2]
        ),
        kernels.infer("dense_backward_params", {"act": "relu", "dw_frac": 28}, [x, a1, g1]),
    ]
    assert whole == sum(p.macs for p in parts)


@pytest.mark.parametrize(
    ("params", "n_inputs", "needle"),
    [
        (_params(2, {"act": "relu"}), 5, "2 layers need 6 inputs"),
        (_params(8, {"act": "relu"}), 18, "'layers' = 8 outside 1..7"),
        ({**_params(2, {"act": "relu"}), "extra": 1}, 6, "unknown params"),
        ({k: v for k, v in _params(2, {"act": "relu"}).items() if k != "dw_frac"}, 6, "dw_frac"),
        (_params(2, {"act": "leaky_relu"}), 6, "slope_shift"),
        (_params(2, {"act": "relu"}) | {"act_frac": 31}, 6, "act_frac"),
    ],
)
def test_bad_params_are_refused(params: dict[str, Any], n_inputs: int, needle: str) -> None:
    inputs = _inputs((5, 7, 3))
    metas = [TensorMeta.of_tensor(t) for t in inputs]
    metas = (metas + metas)[:n_inputs]
    with pytest.raises(KernelError, match=needle):
        kernels.infer("mlp_grad", params, metas)


def test_a_shape_error_inside_names_the_part() -> None:
    inputs = _inputs((5, 7, 3))
    metas = [TensorMeta.of_tensor(t) for t in inputs]
    metas[4] = TensorMeta("<i8", (6, 3), 12)  # w1 should be [7, 3]
    with pytest.raises(KernelError, match="mlp_grad: dense_forward"):
        kernels.infer("mlp_grad", _params(2, {"act": "relu"}), metas)
