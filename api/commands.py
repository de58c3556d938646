"""`layerchain testnet` (keys, genesis and a home folder per node) and `layerchain node`.

The testnet layout, as `cometbft testnet` writes it::

    OUT/genesis.json            chain id, validators with their URLs, parameters, balances
    OUT/client.pem              the funded key of the training driver / REST client
    OUT/miners/minerI.pem       one funded key per miner
    OUT/nodeI/config.toml       the node's settings (port, name, ...)
    OUT/nodeI/node_key.pem      the validator's key (mode 0600)
    OUT/nodeI/genesis.json      a copy of the genesis file
    OUT/nodeI/data/             ledger database, tensor store, consensus log (created on start)
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path
from typing import Annotated

import typer

from api.core.config import CONFIG_FILE, load_settings
from ledger.genesis import Genesis, Params, Validator
from ledger.identity import Keypair

CLIENT_BALANCE = 10**15
MINER_BALANCE = 10**9


def write_testnet(
    out: Path,
    validators: int = 4,
    miners: int = 3,
    base_port: int = 26600,
    chain_id: str = "layerchain-testnet",
    host: str = "127.0.0.1",
    ports: list[int] | None = None,
    params: Params | None = None,
) -> Genesis:
    """Write a testnet into `out` (which must not hold one already) and return its genesis."""
    if validators < 1:
        raise typer.BadParameter("a testnet needs at least one validator")
    if miners < 0:
        raise typer.BadParameter("the number of miners cannot be negative")
    if (out / "genesis.json").exists():
        raise typer.BadParameter(f"{out} already holds a testnet (genesis.json exists)")
    ports = ports or [base_port + i for i in range(validators)]
    if len(ports) != validators:
        raise typer.BadParameter("give one port per validator")
    out.mkdir(parents=True, exist_ok=True)
    keys = [Keypair.generate() for _ in range(validators)]
    client = Keypair.generate()
    miner_keys = [Keypair.generate() for _ in range(miners)]
    balances = {client.address: CLIENT_BALANCE}
    balances.update({m.address: MINER_BALANCE for m in miner_keys})
    genesis = Genesis(
        chain_id=chain_id,
        validators=tuple(
            Validator(k.address, f"node{i}", f"http://{host.format(i=i)}:{ports[i]}")
            for i, k in enumerate(keys)
        ),
        params=params or Params(),
        balances=balances,
        genesis_time_ms=int(time.time() * 1000),
    )
    genesis.save(out / "genesis.json")
    client.save(out / "client.pem")
    for i, miner in enumerate(miner_keys):
        miner.save(out / "miners" / f"miner{i}.pem")
    for i, key in enumerate(keys):
        home = out / f"node{i}"
        home.mkdir(parents=True, exist_ok=True)
        key.save(home / "node_key.pem")
        shutil.copyfile(out / "genesis.json", home / "genesis.json")
        (home / CONFIG_FILE).write_text(
            f'name = "node{i}"\nhost = "{host.format(i=i)}"\nport = {ports[i]}\n'
            'genesis_file = "genesis.json"\nkey_file = "node_key.pem"\n'
        )
    return genesis


def testnet(
    out: Annotated[Path, typer.Option("--out", help="Folder to write the testnet into.")],
    validators: Annotated[int, typer.Option("--validators", "-v", help="Validators (3f+1).")] = 4,
    miners: Annotated[int, typer.Option("--miners", "-m", help="Funded miner keys.")] = 3,
    base_port: Annotated[int, typer.Option("--base-port", help="Port of node0; +1 each.")] = 26600,
    chain_id: Annotated[str, typer.Option("--chain-id")] = "layerchain-testnet",
    host: Annotated[
        str,
        typer.Option(
            "--host",
            help="Host in the validators' URLs; {i} becomes the validator's index "
            "(docker compose: validator{i}).",
        ),
    ] = "127.0.0.1",
    keep_existing: Annotated[
        bool, typer.Option("--keep-existing", help="Exit 0 if OUT already holds a testnet.")
    ] = False,
) -> None:
    """Write keys, genesis.json and a home folder per validator, like `cometbft testnet`."""
    if keep_existing and (out / "genesis.json").exists():
        typer.echo(f"{out} already holds a testnet; keeping it")
        return
    genesis = write_testnet(out, validators, miners, base_port, chain_id, host)
    typer.echo(f"wrote testnet {genesis.chain_id} ({genesis.n} validators, f={genesis.f}) to {out}")
    for i, v in enumerate(genesis.validators):
        typer.echo(f"  layerchain node --home {out / f'node{i}'}   # {v.url}")


def node(
    home: Annotated[Path, typer.Option("--home", help="The node's home folder.")],
    port: Annotated[
        int | None, typer.Option("--port", help="Override the configured port.")
    ] = None,
) -> None:
    """Run a validator: the HTTP API, the PBFT consensus driver, the ledger and the tensor store."""
    import uvicorn

    from api.main import create_app

    overrides = {"port": port} if port is not None else {}
    settings = load_settings(home, **overrides)
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # Their per-request debug lines would drown the node's own consensus trace.
    for noisy in ("httpcore", "httpx"):
        logging.getLogger(noisy).setLevel(max(logging.INFO, logging.getLogger().level))
    app = create_app(settings)

    def serve() -> None:
        uvicorn.run(
            app,
            host=settings.host,
            port=settings.port,
            log_level=settings.log_level,
            access_log=False,
            timeout_graceful_shutdown=3,
            # The streaming peer lanes (api/p2p/streamserver.py) read a chunked request body as
            # it arrives, which uvicorn's h11 protocol delivers piece by piece; with httptools
            # (installed by uvicorn[standard]) the stream stalls and consensus stops.
            http="h11",
        )

    profile = os.environ.get("LAYERCHAIN_PROFILE")
    if profile:  # development aid: cProfile the whole node, stats written on clean exit;
        # "{name}" in the path becomes the node's name (several nodes profiled at once)
        import cProfile
        import signal
        import sys

        # uvicorn re-raises SIGTERM after its graceful shutdown; exit cleanly instead so the
        # profile gets written.
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        profiler = cProfile.Profile()
        try:
            profiler.runcall(serve)
        finally:
            name = settings.name or Path(settings.key_file).resolve().parent.name
            profiler.dump_stats(profile.replace("{name}", name))
    else:
        serve()
