"""The plan: a DAG of exact kernel jobs, checked from metadata, whose result does not depend on
how the batch is sharded."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from driver.datasets import load
from driver.local import LocalRunner
from driver.model import Architecture, init_weights, weights_hash
from driver.plan import (
    JobOutput,
    Plan,
    PlannedJob,
    TensorInput,
    forward_plan,
    gather_logits,
    shard_bounds,
    train_step_plan,
)
from ledger.errors import KernelError
from ledger.kernels import KERNEL_VERSION
from ledger.tensor import Tensor


@pytest.fixture(scope="module")
def batch() -> tuple[Architecture, dict[str, Tensor], np.ndarray, np.ndarray]:
    data = load("digits")
    arch = Architecture((64, 32, 10), activation="leaky_relu")
    return arch, init_weights(arch, 7), data.x_train[:37], data.y_train[:37]


def test_shard_bounds_cover_rows_in_order() -> None:
    assert shard_bounds(10, 3) == [(0, 3), (3, 6), (6, 10)]
    assert shard_bounds(2, 5) == [(0, 1), (1, 2)]
    with pytest.raises(KernelError):
        shard_bounds(0, 1)


def test_plan_structure(
    batch: tuple[Architecture, dict[str, Tensor], np.ndarray, np.ndarray],
) -> None:
    arch, weights, x, y = batch
    plan = train_step_plan(arch, weights, x, y, shards=3, lr=Fraction(1, 10))
    assert plan.kernel_version == KERNEL_VERSION
    specs = plan.specs()
    assert len(specs) == len(plan.jobs)
    # per shard: 2 forward, 1 loss, 2 backward; then add + sgd per parameter on the driver
    network = [j for j in plan.jobs if not j.driver_side]
    driver = [j for j in plan.jobs if j.driver_side]
    assert len(network) == 3 * 5 and len(driver) == 2 * 4
    assert {j.op for j in driver} == {"add", "sgd_update"}
    # network jobs never wait on driver-side jobs, so a whole step can be posted at once
    driver_numbers = {i for i, j in enumerate(plan.jobs) if j.driver_side}
    for job in network:
        assert not any(isinstance(r, JobOutput) and r.job in driver_numbers for r in job.inputs)
    assert set(plan.results) == {"w0", "b0", "w1", "b1", "logits/0", "logits/1", "logits/2"}
    assert specs[plan.results["w0"].job].outputs[0].shape == (64, 32)


def test_sharded_and_unsharded_steps_give_identical_weights(
    batch: tuple[Architecture, dict[str, Tensor], np.ndarray, np.ndarray],
) -> None:
    arch, weights, x, y = batch
    runs = []
    for shards in (1, 2, 5, 37):
        results = LocalRunner().run(train_step_plan(arch, weights, x, y, shards, Fraction(1, 10)))
        new = {name: results[name] for name in arch.param_names()}
        runs.append((weights_hash(arch, new), gather_logits(results).tobytes()))
    assert len(set(runs)) == 1
    assert runs[0][0] != weights_hash(arch, weights)  # the step did change the weights


def test_forward_plan_matches_training_logits(
    batch: tuple[Architecture, dict[str, Tensor], np.ndarray, np.ndarray],
) -> None:
    arch, weights, x, y = batch
    step = LocalRunner().run(train_step_plan(arch, weights, x, y, 2, Fraction(1, 10)))
    fwd = LocalRunner().run(forward_plan(arch, weights, x, 4))
    assert np.array_equal(gather_logits(step), gather_logits(fwd))


def test_specs_refuse_bad_references() -> None:
    t = Tensor(np.ones((2, 2), dtype=np.int64), 0)
    forward_ref = PlannedJob("add", {}, (TensorInput("t"), JobOutput(0, 0)))
    with pytest.raises(KernelError, match="not an earlier job"):
        Plan({"t": t}, (forward_ref,), {}).specs()
    missing = PlannedJob("add", {}, (TensorInput("t"), TensorInput("nope")))
    with pytest.raises(KernelError, match="no tensor named 'nope'"):
        Plan({"t": t}, (missing,), {}).specs()
    ok = PlannedJob("add", {}, (TensorInput("t"), TensorInput("t")))
    with pytest.raises(KernelError, match="has no output 1"):
        Plan({"t": t}, (ok, PlannedJob("add", {}, (JobOutput(0, 1), TensorInput("t")))), {}).specs()
    with pytest.raises(KernelError, match="result 'r'"):
        Plan({"t": t}, (ok,), {"r": JobOutput(1, 0)}).specs()
    bad_op = PlannedJob("add", {"x": 1}, (TensorInput("t"), TensorInput("t")), label="sum/x")
    with pytest.raises(KernelError, match=r"plan job 0 \(sum/x\): add: unknown params"):
        Plan({"t": t}, (bad_op,), {}).specs()


def test_local_runner_returns_named_results() -> None:
    t = Tensor(np.arange(4, dtype=np.int64), 3)
    plan = Plan(
        {"t": t},
        (
            PlannedJob("add", {}, (TensorInput("t"), TensorInput("t"))),
            PlannedJob("add", {}, (JobOutput(0, 0), TensorInput("t")), driver_side=True),
        ),
        {"triple": JobOutput(1, 0)},
    )
    runner = LocalRunner()
    out = runner.run(plan)
    assert out["triple"].data.tolist() == [0, 3, 6, 9] and out["triple"].frac_bits == 3
    assert runner.jobs_run == 2


@pytest.mark.parametrize(
    ("sizes", "activation"),
    [((64, 10), "relu"), ((64, 32, 10), "relu"), ((64, 24, 16, 10), "leaky_relu")],
)
def test_a_fused_step_gives_the_bytes_of_the_job_dag(
    sizes: tuple[int, ...], activation: str
) -> None:
    """`mlp_grad` is defined as the DAG: weights and logits must be identical, for any sharding."""
    data = load("digits")
    arch = Architecture(sizes, activation=activation)
    weights = init_weights(arch, 3)
    x, y = data.x_train[:29], data.y_train[:29]
    outcomes = set()
    for fused in (False, True):
        for shards in (1, 4):
            plan = train_step_plan(arch, weights, x, y, shards, Fraction(1, 4), fused=fused)
            if fused:
                network = [j for j in plan.jobs if not j.driver_side]
                assert [j.op for j in network] == ["mlp_grad"] * shards
                assert [j.label for j in network] == [f"step/s{s}" for s in range(shards)]
            results = LocalRunner().run(plan)
            new = {name: results[name] for name in arch.param_names()}
            outcomes.add((weights_hash(arch, new), gather_logits(results).tobytes()))
    assert len(outcomes) == 1
