"""`layerchain train --node URL ...` (progress display, report) and `layerchain replay`."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from driver.network import RoundStats
from driver.network_training import NetworkTrainResult, train_network
from driver.training import EpochStats, TrainConfig
from ledger.errors import LedgerError
from ledger.identity import Keypair


def resolve_key(key: Path | None, nodes: list[str]) -> Keypair:
    """The driver's key: `--key`, else ./client.pem (what `layerchain testnet` writes)."""
    path = key or Path("client.pem")
    if not path.is_file():
        raise LedgerError(
            f"key file {path} does not exist: pass --key (a funded account of the chain at "
            f"{nodes[0]}; `layerchain testnet` writes client.pem)"
        )
    return Keypair.load(path)


def train_with_network_progress(
    config: TrainConfig,
    nodes: list[str],
    key: Keypair,
    *,
    run: str | None = None,
    replication: int = 2,
    console: Console | None = None,
) -> NetworkTrainResult:
    """Train through `nodes` with a progress bar: loss, accuracy, jobs/s and chain height."""
    err = console or Console(stderr=True, highlight=False)
    err.print(
        f"training {config.dataset} through {nodes[0]}"
        f"{f' (+{len(nodes) - 1} fail-over)' if len(nodes) > 1 else ''}: hidden {config.hidden}, "
        f"batch {config.batch}, lr {float(config.lr):g}, {config.epochs} epochs, "
        f"{config.shards} shard(s), replication {replication}, seed {config.seed}"
    )
    progress = Progress(
        TextColumn("epoch {task.fields[epoch]}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]}  acc {task.fields[acc]}"),
        TextColumn("{task.fields[rate]} jobs/s  height {task.fields[height]}"),
        TimeElapsedColumn(),
        console=err,
        transient=True,
    )
    jobs, started = 0, time.monotonic()

    def on_round(stats: RoundStats) -> None:
        nonlocal jobs
        jobs += stats.jobs
        rate = jobs / max(time.monotonic() - started, 1e-9)
        progress.update(task, rate=f"{rate:.1f}", height=stats.height)

    def on_step(epoch: int, step: int, steps: int) -> None:
        progress.update(task, completed=step + 1, total=steps, epoch=f"{epoch + 1}/{config.epochs}")

    def on_epoch(stats: EpochStats) -> None:
        progress.update(task, loss=f"{stats.loss:.3f}", acc=f"{stats.test_accuracy:.1%}")
        progress.console.print(
            f"epoch {stats.epoch:>3}/{config.epochs}  loss {stats.loss:.4f}  "
            f"train {stats.train_accuracy:.2%}  test {stats.test_accuracy:.2%}  "
            f"(checkpointed on chain)"
        )

    with progress:
        task = progress.add_task(
            "train", total=None, epoch=f"1/{config.epochs}", loss="-", acc="-", rate="0", height=0
        )
        result = train_network(
            config,
            nodes,
            key,
            run=run,
            replication=replication,
            on_step=on_step,
            on_epoch=on_epoch,
            on_round=on_round,
        )
    err.print(
        f"done in {time.monotonic() - started:.1f} s: {result.jobs} jobs settled "
        f"({result.jobs / max(result.seconds, 1e-9):.1f} jobs/s), chain height {result.height}"
    )
    return result


def report(result: NetworkTrainResult, explorer: str | None = None) -> None:
    """What `train --node` prints on stdout."""
    out = Console(highlight=False)
    out.print(f"test accuracy: {result.result.test_accuracy:.2%}")
    out.print(f"weights hash: {result.result.weights_hash}")
    out.print(f"run id: {result.run}")
    if explorer:
        out.print(f"explorer: {explorer}")


def exit_on_error(exc: LedgerError) -> typer.Exit:
    typer.echo(f"error: {exc}", err=True)
    return typer.Exit(1)


def replay(
    ledger: Annotated[Path, typer.Option("--ledger", help="A node's ledger database (SQLite).")],
    run: Annotated[str, typer.Option("--run", help="The run id (printed by train and devnet).")],
    tensors: Annotated[
        Path | None,
        typer.Option(help="Tensor store folder (default: `tensors` next to the ledger file)."),
    ] = None,
) -> None:
    """Re-derive a training run from a ledger and tensor store alone; confirm its checkpoints."""
    from driver.replay import replay_run
    from ledger.store import Store
    from ledger.tensorstore import TensorStore

    if not ledger.is_file():
        raise exit_on_error(LedgerError(f"{ledger} does not exist"))
    folder = tensors or ledger.parent / "tensors"
    if not folder.is_dir():
        raise exit_on_error(LedgerError(f"tensor store {folder} does not exist (pass --tensors)"))
    err = Console(stderr=True, highlight=False)
    try:
        store = Store(str(ledger), create=False)
        try:
            with err.status("replaying...") as status:
                report_ = replay_run(
                    store,
                    TensorStore(folder),
                    run,
                    on_round=lambda done, total: status.update(f"replaying round {done}/{total}"),
                )
        finally:
            store.close()
    except LedgerError as exc:
        raise exit_on_error(exc) from exc
    out = Console(highlight=False)
    for epoch, model_hash in report_.checkpoints:
        out.print(f"epoch {epoch}: model hash {model_hash} confirmed")
    out.print(
        f"run {run}: {report_.rounds} rounds, {report_.jobs_checked} jobs re-executed, "
        f"{len(report_.checkpoints)} checkpoints confirmed; weights hash {report_.weights_hash}"
    )


def devnet(
    keep: Annotated[
        bool, typer.Option("--keep", help="After training, keep the testnet up until Ctrl-C.")
    ] = False,
    out: Annotated[
        Path | None, typer.Option("--dir", help="Folder for the testnet (default: a new temp dir).")
    ] = None,
    validators: Annotated[int, typer.Option(help="Validators (3f+1).")] = 4,
    miners: Annotated[int, typer.Option(help="Miner processes.")] = 3,
    epochs: Annotated[int, typer.Option(help="Passes over digits.")] = 5,
    batch: Annotated[int, typer.Option(help="Rows per SGD step.")] = 64,
    hidden: Annotated[int, typer.Option(help="Width of the hidden layer.")] = 32,
    lr: Annotated[str, typer.Option(help="Learning rate as exact decimal text.")] = "0.5",
    shards: Annotated[int, typer.Option(help="Jobs per layer per step (miners in parallel).")] = 4,
    replication: Annotated[int, typer.Option(help="Miners that must agree on each job.")] = 2,
    seed: Annotated[int, typer.Option(help="Seed of initial weights and shuffles.")] = 0,
    verify_local: Annotated[
        bool, typer.Option(help="Also train locally and compare the weights hash.")
    ] = True,
) -> None:
    """Start 4 validators and 3 miners on loopback, train an MLP on digits through them, print
    the accuracy, run id and explorer URL. Ctrl-C stops everything; nothing is left running."""
    from driver.devnet import default_root, devnet_config, start_devnet, train_on_devnet
    from driver.fixedpoint import parse_rate

    err = Console(stderr=True, highlight=False)
    root = out or default_root()
    try:
        config = devnet_config(epochs, batch, hidden, parse_rate(lr), seed, shards)
        err.print(f"devnet in {root}: starting {validators} validators and {miners} miners...")
        net = start_devnet(root, validators=validators, miners=miners)
    except LedgerError as exc:
        raise exit_on_error(exc) from exc
    try:
        err.print(f"healthy: {', '.join(net.urls)}")
        result = train_on_devnet(net, config, replication=replication, verify_local=verify_local)
        report(result.trained, net.explorer)
        if result.local_hash is not None:
            same = result.local_hash == result.trained.result.weights_hash
            Console(highlight=False).print(
                "local check: weights hash identical to --local"
                if same
                else f"local check: MISMATCH (--local gives {result.local_hash})"
            )
            if not same:
                raise typer.Exit(1)
        ledger = root / "node0" / "data" / "ledger.db"
        err.print(f"replay it: layerchain replay --ledger {ledger} --run {result.trained.run}")
        if keep:
            err.print(f"testnet running; explorer at {net.explorer} — Ctrl-C to stop")
            while True:
                time.sleep(1.0)
                net.processes.check_alive()
    except KeyboardInterrupt:
        err.print("interrupted: stopping the devnet")
        raise typer.Exit(130) from None
    except LedgerError as exc:
        raise exit_on_error(exc) from exc
    finally:
        net.processes.close()
        err.print("devnet stopped; every process has exited")
