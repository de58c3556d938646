"""Benchmark: the exact dense forward kernel against numpy float64 and float32 matmul.

    .venv/bin/python -m bench.exact_gemm [--repeats N]

For each shape N x K x M it times, in one process and on the same integer-valued data,
`execute("dense_forward", ...)` (identity activation, bias, one rounding shift: the whole kernel,
including range checks, conversions, int64 accumulation and the output tensor) and a bare
`np.matmul` in float64 and float32, and prints the exact kernel's throughput as a fraction of each
(ratio = t_float / t_exact; 1.0 means as fast). Inputs are at the training scales (activations
2^12, weights 2^20), which fit one float64 GEMM; the `limb split` row uses magnitudes whose sums
exceed 2^53, so the kernel splits an operand into limbs (its data-dependent slow path).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np

from ledger.kernels import execute
from ledger.tensor import Tensor

SHAPES = [
    ("256^3", 256, 256, 256, 16, 21),
    ("1024^3", 1024, 1024, 1024, 16, 21),
    ("2048^3", 2048, 2048, 2048, 16, 21),
    ("layer 128x784x256", 128, 784, 256, 16, 21),
    ("1024^3 limb split (x 2^30)", 1024, 1024, 1024, 30, 22),
]


def best_of(fns: list[Callable[[], object]], repeats: int) -> list[float]:
    """Minimum wall time of each function; the functions alternate within each repeat, so a
    change in machine load affects all of them alike."""
    for fn in fns:
        fn()  # warm up (thread pool, page faults)
    best = [float("inf")] * len(fns)
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            start = time.perf_counter()
            fn()
            best[i] = min(best[i], time.perf_counter() - start)
    return best


def measure(
    rng: np.random.Generator, n: int, k: int, m: int, xbits: int, wbits: int, repeats: int
) -> tuple[float, float, float]:
    """Best-of-`repeats` seconds for the exact kernel, float64 matmul and float32 matmul."""
    x = rng.integers(-(1 << xbits), 1 << xbits, (n, k), dtype=np.int64)
    w = rng.integers(-(1 << wbits), 1 << wbits, (k, m), dtype=np.int64)
    b = rng.integers(-(1 << 20), 1 << 20, (m,), dtype=np.int64)
    xt, wt, bt = Tensor(x, 12), Tensor(w, 20), Tensor(b, 20)
    params = {"act": "identity", "out_frac": 12}
    x64, w64 = x.astype(np.float64), w.astype(np.float64)
    x32, w32 = x.astype(np.float32), w.astype(np.float32)
    t_exact, t64, t32 = best_of(
        [
            lambda: execute("dense_forward", params, [xt, wt, bt]),
            lambda: np.matmul(x64, w64),
            lambda: np.matmul(x32, w32),
        ],
        repeats,
    )
    return t_exact, t64, t32


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    print(f"{'shape':<30}{'exact ms':>10}{'f64 ms':>10}{'f32 ms':>10}{'vs f64':>9}{'vs f32':>9}")
    for label, n, k, m, xbits, wbits in SHAPES:
        t_exact, t64, t32 = measure(rng, n, k, m, xbits, wbits, args.repeats)
        print(
            f"{label:<30}{t_exact * 1e3:>10.2f}{t64 * 1e3:>10.2f}{t32 * 1e3:>10.2f}"
            f"{t64 / t_exact:>9.2f}{t32 / t_exact:>9.2f}"
        )


if __name__ == "__main__":
    main()
