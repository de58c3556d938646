"""`layerchain devnet`: a whole testnet on loopback that trains a network, in one command.

    layerchain devnet            # 4 validators + 3 miners, train on digits, print results, stop
    layerchain devnet --keep     # ... then keep the testnet (and its explorer) up until Ctrl-C

It writes a testnet (`api.commands.write_testnet`) on free loopback ports, starts every validator
and miner as a child process (`driver.processes.Processes`: own session each, stopped by process
group on exit, Ctrl-C, SIGTERM or an exception), waits until all validators answer
`/api/v1/health`, trains through them with `driver.network_training.train_network`, checks the
weights hash against a local run of the same configuration, and prints the accuracy, the run id
and the explorer URL.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

from api.commands import write_testnet
from api.testing import free_ports
from driver.local import LocalRunner
from driver.network_commands import train_with_network_progress
from driver.network_training import NetworkTrainResult
from driver.processes import Processes
from driver.training import TrainConfig, train
from ledger.genesis import Genesis, Params
from ledger.identity import Keypair

#: Reveal phases long enough for miners on a busy laptop (blocks are fast when idle).
DEVNET_PARAMS = Params(commit_blocks=200, reveal_blocks=200)


@dataclass
class Devnet:
    """A running devnet: where it lives and how to reach it."""

    root: Path
    genesis: Genesis
    ports: list[int]
    processes: Processes
    miners: int
    urls: list[str] = field(default_factory=list)

    @property
    def explorer(self) -> str:
        return self.urls[0] + "/"

    @property
    def client_key(self) -> Keypair:
        return Keypair.load(self.root / "client.pem")


def start_devnet(
    root: Path,
    *,
    validators: int = 4,
    miners: int = 3,
    miner_workers: int = 2,
    params: Params = DEVNET_PARAMS,
    byzantine: dict[int, str] | None = None,
    health_timeout_s: float = 90.0,
) -> Devnet:
    """Write a testnet into `root`, start its validators and miners, wait until healthy.

    `byzantine` maps a miner index to a test-only misbehaviour (`lie`, `copy`). The caller owns
    the returned `Devnet.processes` (close it to stop everything).
    """
    ports = free_ports(validators)
    genesis = write_testnet(root, validators, miners, ports=ports, params=params)
    net = Devnet(root, genesis, ports, Processes(root / "logs"), miners)
    net.urls = [f"http://127.0.0.1:{p}" for p in ports]
    try:
        for i in range(validators):
            net.processes.start(f"node{i}", ["node", "--home", str(root / f"node{i}")])
        net.processes.wait_healthy(
            {f"node{i}": f"{url}/api/v1/health" for i, url in enumerate(net.urls)},
            timeout=health_timeout_s,
        )
        for i in range(miners):
            start_miner(net, i, workers=miner_workers, byzantine=(byzantine or {}).get(i))
        time.sleep(0.2)
        net.processes.check_alive()
    except BaseException:
        net.processes.close()
        raise
    return net


def start_miner(net: Devnet, i: int, workers: int = 2, byzantine: str | None = None) -> None:
    """Start miner `i` with every validator URL, its own node first (fail-over order)."""
    order = net.urls[i % len(net.urls) :] + net.urls[: i % len(net.urls)]
    args = ["miner", "--key", str(net.root / "miners" / f"miner{i}.pem")]
    for url in order:
        args += ["--node", url]
    args += ["--workers", str(workers), "--stats", str(net.root / "logs" / f"miner{i}.json")]
    args += ["--poll", "5", "--grace", "10"]
    if byzantine:
        args += ["--byzantine", byzantine]
    net.processes.start(f"miner{i}", args)


@dataclass
class DevnetResult:
    trained: NetworkTrainResult
    local_hash: str | None


def train_on_devnet(
    net: Devnet, config: TrainConfig, replication: int = 2, verify_local: bool = True
) -> DevnetResult:
    """Train `config` through the devnet; with `verify_local`, also run it locally to compare."""
    trained = train_with_network_progress(config, net.urls, net.client_key, replication=replication)
    local_hash = train(config, LocalRunner()).weights_hash if verify_local else None
    return DevnetResult(trained, local_hash)


def devnet_config(
    epochs: int = 5,
    batch: int = 64,
    hidden: int = 32,
    lr: Fraction = Fraction(1, 2),
    seed: int = 0,
    shards: int = 4,
) -> TrainConfig:
    """The devnet's default run: 93% on digits in 5 epochs, 115 training steps of 4 `mlp_grad`
    jobs (one per shard, posted as one tx)."""
    return TrainConfig(
        dataset="digits",
        epochs=epochs,
        batch=batch,
        hidden=(hidden,),
        lr=lr,
        seed=seed,
        shards=shards,
    )


def default_root() -> Path:
    return Path(tempfile.mkdtemp(prefix="layerchain-devnet-"))
