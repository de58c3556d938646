"""`mlp_grad`: one shard's whole training step (forward, loss gradient, backward) as one job.

Posted as separate jobs, a training step of an L-layer MLP is a DAG of depth 2L + 1 (forward per
layer, the loss gradient, backward per layer). Each level is at least two blocks on the chain
(commit, then reveal), so a 2-layer step is ~11 sequential blocks. `mlp_grad` is the same
computation as **one** job: it is *defined* as the exact composition below of the existing ops,
with exactly their params, so its outputs are bit-identical to the DAG's and a run trained either
way has the same weights hash.

Inputs: `x, labels, w0, b0, ..., w{L-1}, b{L-1}`. Params (flat ints and strings, like every op):
`layers` = L (1..7), `act` the hidden layers' activation (`relu`, `leaky_relu` with `slope_num`
and `slope_shift`, or `identity`), `act_frac`, `grad_frac`, `dw_frac`. The last layer is linear.

    a_0 = x
    for l = 0..L-1:   a_{l+1} = dense_forward({act_l, out_frac: act_frac}, a_l, w_l, b_l)
    g_L = softmax_xent_grad({out_frac: grad_frac}, a_L, labels)
    for l = L-1..1:   g_l, dw_l, db_l = dense_backward({act_l, dx_frac: grad_frac, dw_frac},
                                                        a_l, w_l, a_{l+1}, g_{l+1})
    dw_0, db_0 = dense_backward_params({act_0, dw_frac}, a_0, a_1, g_1)

where act_l is the hidden activation for l < L - 1 and `identity` for the last layer.

Outputs: `a_L` (the logits), then `dw_0, db_0, dw_1, db_1, ...`. Cost: the sum of the parts.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import numpy as np

from ledger.errors import KernelError
from ledger.kernels._meta import JobSpec, Params, TensorMeta
from ledger.kernels.activation import ACTIVATIONS, MAX_SLOPE_SHIFT
from ledger.kernels.layers import LAYER_OPS
from ledger.tensor import MAX_FRAC_BITS

MAX_LAYERS = 7
"""2 + 2L inputs and 1 + 2L outputs stay within a job's 16."""

T = TypeVar("T")
Evaluate = Callable[[str, dict[str, Any], list[T]], list[T]]
"""Evaluate one part (op name, its params, its inputs) on metadata or on data."""


def _compose(op: str, params: Params, inputs: Sequence[T], evaluate: Evaluate[T]) -> list[T]:
    """The composition of the module docstring, on whatever `evaluate` works on."""
    layers = params.int("layers", 1, MAX_LAYERS)
    act = params.choice("act", ACTIVATIONS)
    hidden: dict[str, Any] = {"act": act}
    if act == "leaky_relu":
        hidden["slope_shift"] = params.int("slope_shift", 1, MAX_SLOPE_SHIFT)
        hidden["slope_num"] = params.int("slope_num", 1, (1 << hidden["slope_shift"]) - 1)
    act_frac = params.int("act_frac", 0, MAX_FRAC_BITS)
    grad_frac = params.int("grad_frac", 1, MAX_FRAC_BITS)
    dw_frac = params.int("dw_frac", 0, MAX_FRAC_BITS)
    params.done()
    if len(inputs) != 2 + 2 * layers:
        raise KernelError(
            f"{op}: {layers} layers need {2 + 2 * layers} inputs (x, labels, w0, b0, ...), "
            f"got {len(inputs)}"
        )
    x, labels, weights = inputs[0], inputs[1], inputs[2:]

    def act_of(layer: int) -> dict[str, Any]:
        return {"act": "identity"} if layer == layers - 1 else dict(hidden)

    acts = [x]
    for layer in range(layers):
        w, b = weights[2 * layer], weights[2 * layer + 1]
        sub = {**act_of(layer), "out_frac": act_frac}
        (a,) = evaluate("dense_forward", sub, [acts[-1], w, b])
        acts.append(a)
    (grad,) = evaluate("softmax_xent_grad", {"out_frac": grad_frac}, [acts[-1], labels])
    grads: list[T] = []
    for layer in reversed(range(layers)):
        if layer > 0:
            sub = {**act_of(layer), "dx_frac": grad_frac, "dw_frac": dw_frac}
            grad, dw, db = evaluate(
                "dense_backward", sub, [acts[layer], weights[2 * layer], acts[layer + 1], grad]
            )
        else:
            sub = {**act_of(layer), "dw_frac": dw_frac}
            dw, db = evaluate("dense_backward_params", sub, [acts[0], acts[1], grad])
        grads = [dw, db, *grads]
    return [acts[-1], *grads]


def infer_mlp_grad(op: str, params: Params, inputs: Sequence[TensorMeta]) -> JobSpec:
    macs = 0

    def evaluate(name: str, sub: dict[str, Any], ins: list[TensorMeta]) -> list[TensorMeta]:
        nonlocal macs
        try:
            spec = LAYER_OPS[name][0](name, Params(name, sub), ins)
        except KernelError as exc:
            raise KernelError(f"{op}: {exc}") from exc
        macs += spec.macs
        return list(spec.outputs)

    return JobSpec(tuple(_compose(op, params, inputs, evaluate)), macs)


def mlp_grad(
    op: str, params: Params, metas: Sequence[TensorMeta], data: Sequence[np.ndarray]
) -> list[np.ndarray]:
    """Run the composition: each part exactly as `execute` would run it alone."""
    Pair = tuple[TensorMeta, np.ndarray]

    def evaluate(name: str, sub: dict[str, Any], ins: list[Pair]) -> list[Pair]:
        infer_fn, exec_fn = LAYER_OPS[name]
        in_metas = [m for m, _ in ins]
        spec = infer_fn(name, Params(name, sub), in_metas)
        outs = exec_fn(name, Params(name, sub), in_metas, [a for _, a in ins])
        return list(zip(spec.outputs, outs, strict=True))

    pairs = list(zip(metas, data, strict=True))
    return [arr for _, arr in _compose(op, params, pairs, evaluate)]
