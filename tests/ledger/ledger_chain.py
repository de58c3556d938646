"""Shared builders for the ledger tests: a harness with a store and tensors, and layer tensors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ledger.genesis import Params
from ledger.harness import ChainHarness
from ledger.tensor import Tensor, quantize
from ledger.transactions import tensor_input

RELU8 = {"act": "relu", "out_frac": 8}


def chain(tmp_path: Path, *, store: bool = True, **kwargs: Any) -> ChainHarness:
    """A harness with a tensor store, an SQLite ledger (unless store=False) and funded actors."""
    kwargs.setdefault("balances", {"alice": 1_000, "bob": 500})
    kwargs.setdefault("params", Params(audit_rate_ppm=0))
    return ChainHarness(
        tensor_dir=tmp_path / "tensors",
        db_url=str(tmp_path / "ledger.db") if store else None,
        **kwargs,
    )


def layer(seed: int, n: int, k: int, m: int) -> tuple[Tensor, Tensor, Tensor]:
    """x [n, k], w [k, m], b [m] at 8 / 8 / 16 frac bits (b at frac(x) + frac(w))."""
    rng = np.random.default_rng(seed)
    x = quantize(rng.normal(size=(n, k)), 8)
    w = quantize(rng.normal(size=(k, m)) * 0.5, 8)
    b = quantize(rng.normal(size=(m,)) * 0.1, 16)
    return x, w, b


def dense_inputs(c: ChainHarness, seed: int = 0, shape: tuple[int, int, int] = (4, 3, 2)) -> list:
    """Upload a dense layer's tensors and return post_job inputs naming them."""
    tensors = layer(seed, *shape)
    for t in tensors:
        c.put_tensor(t)
    return [tensor_input(t) for t in tensors]


def fake_output(tag: str) -> list[str]:
    """A made-up output hash list (what a lying miner reveals)."""
    import hashlib

    return [hashlib.sha256(tag.encode()).hexdigest()]
