"""Subprocess helper: run a fixed set of kernel jobs and print their output hashes as JSON.

Run by test_kernels_determinism.py under different BLAS thread counts and OpenBLAS core types;
every configuration must print the same hashes. The jobs are large enough that OpenBLAS uses
its multi-threaded and architecture-specific code paths, and one forces the limb split.
"""

from __future__ import annotations

import json
import sys

import numpy as np

from ledger.kernels import execute
from ledger.tensor import Tensor


def _ints(seed: int, shape: tuple[int, ...], bound: int) -> np.ndarray:
    raw = np.random.PCG64(seed).random_raw(int(np.prod(shape))).astype(np.uint64)
    return (raw % np.uint64(2 * bound + 1)).astype(np.int64).reshape(shape) - bound


def jobs() -> list[tuple[str, dict[str, object], list[Tensor]]]:
    x = Tensor(_ints(1, (192, 384), 1 << 16), 12)
    w = Tensor(_ints(2, (384, 160), 1 << 21), 20)
    b = Tensor(_ints(3, (160,), 1 << 20), 20)
    a = Tensor(_ints(4, (192, 160), 1 << 14), 12)
    da = Tensor(_ints(5, (192, 160), 1 << 16), 16)
    big_x = Tensor(_ints(6, (96, 256), 1 << 28), 0)
    big_w = Tensor(_ints(7, (256, 64), 1 << 26), 0)  # 2^62 over K: split into limbs
    leaky = {"act": "leaky_relu", "slope_num": 1, "slope_shift": 4}
    return [
        ("dense_forward", {"act": "relu", "out_frac": 12}, [x, w, b]),
        ("dense_forward", {**leaky, "out_frac": 12}, [x, w, b]),
        ("dense_backward", {**leaky, "dx_frac": 16, "dw_frac": 28}, [x, w, a, da]),
        ("dense_backward_params", {"act": "relu", "dw_frac": 20}, [x, a, da]),
        (
            "dense_forward",
            {"act": "identity", "out_frac": 0},
            [big_x, big_w, Tensor(np.zeros(64, np.int64), 0)],
        ),
        (
            "softmax_xent_grad",
            {"out_frac": 16},
            [Tensor(_ints(8, (192, 10), 1 << 16), 12), Tensor(_ints(9, (192,), 4) + 4, 0)],
        ),
    ]


def main() -> None:
    import threadpoolctl

    blas = [
        {
            "api": i.get("internal_api"),
            "arch": i.get("architecture"),
            "threads": i.get("num_threads"),
        }
        for i in threadpoolctl.threadpool_info()
        if i.get("user_api") == "blas"
    ]
    hashes = [[t.hash for t in execute(op, params, inputs)] for op, params, inputs in jobs()]
    json.dump({"blas": blas, "hashes": hashes}, sys.stdout)


if __name__ == "__main__":
    main()
