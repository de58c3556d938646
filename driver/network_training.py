"""Training through the chain: `driver.training.train` with a `NetworkRunner`, plus checkpoints.

The training loop is the local one, unchanged; only the runner differs, so the weights hash equals
`--local`'s for the same `TrainConfig`. After each epoch a `checkpoint` tx records the model hash
with integer metrics (the explorer draws the loss curve from them; `driver.replay` reads the
learning rate from them):

| metric               | meaning                                    |
|----------------------|--------------------------------------------|
| `loss_ppm`           | mean training loss × 10^6                  |
| `train_accuracy_ppm` | training accuracy during the epoch × 10^6  |
| `test_accuracy_ppm`  | held-out accuracy after the epoch × 10^6   |
| `lr_num`, `lr_den`   | the exact learning rate `lr_num / lr_den`  |
| `batch`, `shards`, `seed`, `jobs` | the configuration and the jobs posted so far |

The per-epoch test accuracy is evaluated locally (it never affects the weights).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import httpx

from driver import datasets
from driver.local import LocalRunner
from driver.model import Architecture, weights_hash
from driver.network import NetworkRunner, RoundStats
from driver.plan import Plan
from driver.training import EpochStats, TrainConfig, TrainResult, train
from ledger.identity import Keypair
from ledger.tensor import Tensor

PPM = 1_000_000


@dataclass
class NetworkTrainResult:
    """The training result plus where it lives on the chain."""

    result: TrainResult
    run: str
    checkpoints: list[str]
    """Checkpoint tx hashes, one per epoch."""
    jobs: int
    seconds: float
    height: int
    disagreements: int = 0
    """Read-backs where a node's settled outputs differed from f + 1 other validators'."""


def default_run_name(config: TrainConfig) -> str:
    """A fresh run name: dataset, seed and 8 random hex digits (run names are first-come)."""
    return f"{config.dataset}-s{config.seed}-{secrets.token_hex(4)}"


def epoch_metrics(stats: EpochStats, config: TrainConfig, jobs: int) -> dict[str, int]:
    return {
        "loss_ppm": round(stats.loss * PPM),
        "train_accuracy_ppm": round(stats.train_accuracy * PPM),
        "test_accuracy_ppm": round(stats.test_accuracy * PPM),
        "lr_num": config.lr.numerator,
        "lr_den": config.lr.denominator,
        "batch": config.batch,
        "shards": config.shards,
        "seed": config.seed,
        "jobs": jobs,
    }


class _Recording:
    """Wraps the network runner to remember the newest weights a training step produced."""

    def __init__(self, runner: NetworkRunner, names: list[str]) -> None:
        self.runner = runner
        self.names = names
        self.weights: dict[str, Tensor] = {}

    def run(self, plan: Plan) -> dict[str, Tensor]:
        results = self.runner.run(plan)
        if all(name in results for name in self.names):
            self.weights = {name: results[name] for name in self.names}
        return results


def train_network(
    config: TrainConfig,
    urls: Sequence[str],
    key: Keypair,
    *,
    run: str | None = None,
    replication: int = 2,
    reward: int = 10,
    on_step: Callable[[int, int, int], None] | None = None,
    on_epoch: Callable[[EpochStats], None] | None = None,
    on_round: Callable[[RoundStats], None] | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> NetworkTrainResult:
    """Train `config` with every layer job computed by the network's miners; checkpoint each
    epoch on the chain. Raises LedgerError subclasses when the chain cannot do the work."""
    run = run or default_run_name(config)
    data = datasets.load(config.dataset)
    arch = Architecture(
        (data.n_features, *config.hidden, data.n_classes), activation=config.activation
    )
    checkpoints: list[str] = []
    with NetworkRunner(
        urls,
        key,
        run=run,
        replication=replication,
        reward=reward,
        on_round=on_round,
        transport=transport,
    ) as runner:
        recording = _Recording(runner, arch.param_names())

        def checkpoint(stats: EpochStats) -> None:
            model_hash = weights_hash(arch, recording.weights)
            metrics = epoch_metrics(stats, config, runner.totals.jobs)
            checkpoints.append(runner.checkpoint(stats.epoch, model_hash, metrics))
            if on_epoch is not None:
                on_epoch(stats)

        result = train(
            config, recording, on_step=on_step, on_epoch=checkpoint, eval_runner=LocalRunner()
        )
        totals = runner.totals
    return NetworkTrainResult(
        result=result,
        run=run,
        checkpoints=checkpoints,
        jobs=totals.jobs,
        seconds=totals.seconds,
        height=totals.height,
        disagreements=totals.disagreements,
    )
