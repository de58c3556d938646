"""`layerchain train`: train an MLP with the exact kernels, locally or through validator nodes."""

from __future__ import annotations

import time
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from driver.datasets import DATASETS
from driver.fixedpoint import parse_rate
from driver.local import LocalRunner
from driver.training import DEFAULTS, EpochStats, TrainConfig, TrainResult
from driver.training import train as run_training
from ledger.errors import LedgerError


class Activation(StrEnum):
    relu = "relu"
    leaky_relu = "leaky_relu"


def train(
    dataset: Annotated[
        str, typer.Option(help=f"Bundled dataset: {', '.join(DATASETS)}.")
    ] = "digits",
    local: Annotated[
        bool, typer.Option("--local", help="Run every kernel job in this process.")
    ] = False,
    node: Annotated[
        list[str] | None,
        typer.Option(help="Validator URL to train through; repeat for fail-over."),
    ] = None,
    key: Annotated[
        Path | None, typer.Option(help="Funded key paying for the jobs (default ./client.pem).")
    ] = None,
    replication: Annotated[
        int, typer.Option(help="Miners that must agree on each job (network training).")
    ] = 2,
    run: Annotated[
        str | None, typer.Option(help="Run id on the chain (default: dataset, seed, random).")
    ] = None,
    epochs: Annotated[int | None, typer.Option(help="Passes over the training set.")] = None,
    batch: Annotated[int | None, typer.Option(help="Rows per SGD step.")] = None,
    hidden: Annotated[int | None, typer.Option(help="Width of the hidden layer.")] = None,
    lr: Annotated[
        str | None, typer.Option(help="Learning rate as exact decimal text, e.g. 0.1.")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of initial weights and shuffles.")] = 0,
    shards: Annotated[
        int | None,
        typer.Option(
            help="Split each batch into this many jobs (same weights for any K); default 1 "
            "locally, 4 through the network."
        ),
    ] = None,
    activation: Annotated[
        Activation, typer.Option(help="Hidden-layer activation.")
    ] = Activation.relu,
    dag: Annotated[
        bool,
        typer.Option(
            "--dag",
            help="Plan each step as a DAG of per-layer jobs instead of one mlp_grad job per "
            "shard (same weights; many more job rounds on a chain).",
        ),
    ] = False,
) -> None:
    """Train an MLP with the exact fixed-point kernels; print accuracy and the weights hash."""
    if local == bool(node):
        typer.echo("error: give either --local or --node URL (network training)", err=True)
        raise typer.Exit(2)
    defaults = DEFAULTS.get(dataset, DEFAULTS["digits"])
    try:
        config = TrainConfig(
            dataset=dataset,
            epochs=epochs if epochs is not None else int(str(defaults["epochs"])),
            batch=batch if batch is not None else int(str(defaults["batch"])),
            hidden=(hidden if hidden is not None else int(str(defaults["hidden"])),),
            lr=parse_rate(lr if lr is not None else str(defaults["lr"])),
            seed=seed,
            shards=shards if shards is not None else (1 if local else 4),
            activation=activation.value,
            fused=not dag,
        )
        if node:
            from driver import network_commands

            trained = network_commands.train_with_network_progress(
                config,
                node,
                network_commands.resolve_key(key, node),
                run=run,
                replication=replication,
            )
            network_commands.report(trained)
            return
        result = _train_with_progress(config)
    except LedgerError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    out = Console(highlight=False)
    out.print(f"test accuracy: {result.test_accuracy:.2%}")
    out.print(f"weights hash: {result.weights_hash}")


def _train_with_progress(config: TrainConfig) -> TrainResult:
    err = Console(stderr=True, highlight=False)
    err.print(
        f"training {config.dataset}: hidden {config.hidden}, {config.activation}, "
        f"batch {config.batch}, lr {float(config.lr):g}, {config.epochs} epochs, "
        f"{config.shards} shard(s), seed {config.seed}, local exact kernels"
    )
    started = time.monotonic()
    progress = Progress(
        TextColumn("epoch {task.fields[epoch]}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=True,
    )

    def on_step(epoch: int, step: int, steps: int) -> None:
        progress.update(task, completed=step + 1, total=steps, epoch=f"{epoch + 1}/{config.epochs}")

    def on_epoch(stats: EpochStats) -> None:
        progress.console.print(
            f"epoch {stats.epoch:>3}/{config.epochs}  loss {stats.loss:.4f}  "
            f"train {stats.train_accuracy:.2%}  test {stats.test_accuracy:.2%}"
        )

    with progress:
        task = progress.add_task("train", total=None, epoch=f"1/{config.epochs}")
        result = run_training(config, LocalRunner(), on_step=on_step, on_epoch=on_epoch)
    err.print(f"done in {time.monotonic() - started:.1f} s")
    return result
