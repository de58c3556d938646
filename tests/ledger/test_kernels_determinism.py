"""Bit-exactness across BLAS configurations: the same jobs give byte-identical output hashes in
subprocesses with different thread counts and OpenBLAS kernels (core types)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

HELPER = Path(__file__).with_name("kernel_job.py")
ROOT = Path(__file__).resolve().parents[2]
THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def run_helper(threads: int, coretype: str | None) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if k not in THREAD_VARS + ("OPENBLAS_CORETYPE",)}
    env.update({var: str(threads) for var in THREAD_VARS})
    env["PYTHONPATH"] = str(ROOT)
    if coretype:
        env["OPENBLAS_CORETYPE"] = coretype
    proc = subprocess.run(
        [sys.executable, str(HELPER)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


@pytest.fixture(scope="module")
def baseline() -> dict[str, Any]:
    return run_helper(1, None)


@pytest.mark.parametrize(
    ("threads", "coretype", "arch"),
    [
        (2, None, None),
        (1, "Haswell", "haswell"),
        (2, "Haswell", "haswell"),
        (2, "SandyBridge", "sandybridge"),
        (1, "Nehalem", "nehalem"),
        (2, "Prescott", None),  # OpenBLAS serves Prescott with its generic (Katmai) kernels
        (2, "SkylakeX", None),  # only honoured on AVX-512 machines
    ],
)
def test_same_hashes_under_other_blas_configurations(
    baseline: dict[str, Any], threads: int, coretype: str | None, arch: str | None
) -> None:
    other = run_helper(threads, coretype)
    assert other["hashes"] == baseline["hashes"]
    if other["blas"] and other["blas"][0]["api"] == "openblas":
        assert other["blas"][0]["threads"] == threads
        if arch is not None:
            assert str(other["blas"][0]["arch"]).lower() == arch


def test_hashes_equal_in_process_results(baseline: dict[str, Any]) -> None:
    sys.path.insert(0, str(HELPER.parent))
    try:
        import kernel_job
    finally:
        sys.path.pop(0)
    from ledger.kernels import execute

    local = [[t.hash for t in execute(op, p, inputs)] for op, p, inputs in kernel_job.jobs()]
    assert local == baseline["hashes"]
