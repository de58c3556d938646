"""`layerchain miner`: run a miner against one or more validator nodes."""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path
from typing import Annotated

import typer

from ledger.errors import LedgerError
from ledger.gcpolicy import tune_gc
from ledger.identity import Keypair
from miner.client import NodeClient
from miner.worker import BYZANTINE_MODES, Miner, MinerConfig, MinerStats


def miner(
    node: Annotated[
        list[str],
        typer.Option("--node", help="Validator URL; repeat for fail-over between nodes."),
    ],
    key: Annotated[Path, typer.Option("--key", help="The miner's key file (PEM).")],
    create_key: Annotated[
        bool,
        typer.Option("--create-key", help="Create the key file if missing (scaled containers)."),
    ] = False,
    workers: Annotated[int, typer.Option("--workers", help="Jobs computed at once.")] = 2,
    stats: Annotated[
        Path | None, typer.Option("--stats", help="Write counters and earnings here as JSON.")
    ] = None,
    poll: Annotated[float, typer.Option("--poll", help="Long-poll seconds per request.")] = 10.0,
    grace: Annotated[
        float, typer.Option("--grace", help="Seconds to finish work after Ctrl-C.")
    ] = 30.0,
    log_level: Annotated[str, typer.Option("--log-level")] = "info",
    byzantine: Annotated[
        str | None, typer.Option("--byzantine", hidden=True, help="Tests only: lie | copy.")
    ] = None,
    simulate_ms: Annotated[
        int, typer.Option("--simulate-ms", hidden=True, help="Benchmarks: extra ms per job.")
    ] = 0,
) -> None:
    """Compute layer jobs for the chain: commit, reveal, get paid. Ctrl-C finishes cleanly
    (a second Ctrl-C abandons the work in flight)."""
    logging.basicConfig(
        level=getattr(logging, log_level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # httpx logs every request at INFO: a line per poll, download, upload and tx batch costs the
    # miner more CPU than its bookkeeping. Its warnings still show; --log-level debug shows all.
    if logging.getLogger().level > logging.DEBUG:
        for noisy in ("httpx", "httpcore"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
    if byzantine is not None and byzantine not in BYZANTINE_MODES:
        raise typer.BadParameter(f"--byzantine must be one of {BYZANTINE_MODES}")
    if not key.is_file() and create_key:
        key.parent.mkdir(parents=True, exist_ok=True)
        Keypair.generate().save(key)
    if not key.is_file():
        typer.echo(
            f"error: key file {key} does not exist (create one: layerchain keygen)", err=True
        )
        raise typer.Exit(1)
    try:
        keypair = Keypair.load(key)
        config = MinerConfig(
            workers=workers,
            poll_wait_s=poll,
            grace_s=grace,
            stats_file=stats,
            byzantine=byzantine,
            simulate_ms=simulate_ms,
        )
        tune_gc()
        result = asyncio.run(_run(node, keypair, config))
    except LedgerError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    chain = result.chain
    typer.echo(
        f"miner {keypair.address[:16]}… stopped: computed {result.computed}, committed "
        f"{result.committed}, revealed {result.revealed}; on chain: accepted "
        f"{chain.get('accepted', 0)}, rejected {chain.get('rejected', 0)}, earned "
        f"{chain.get('earned', 0)}, balance {chain.get('balance', '?')}"
    )


async def _run(urls: list[str], key: Keypair, config: MinerConfig) -> MinerStats:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    async with NodeClient(urls) as client:
        worker = Miner(client, key, config)

        def on_signal() -> None:
            if stop.is_set():
                logging.getLogger("layerchain.miner").warning("abandoning work in flight")
                worker.abandon()
            else:
                logging.getLogger("layerchain.miner").info(
                    "stopping: finishing started jobs (Ctrl-C again to abandon them)"
                )
                stop.set()

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, on_signal)
        try:
            return await worker.run(stop)
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
