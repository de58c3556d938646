"""A validator dies (SIGKILL) in the middle of network training: the driver and the miners fail
over to the other validators, PBFT carries on with 3 of 4, and the weights still equal --local."""

from __future__ import annotations

import signal
from fractions import Fraction
from pathlib import Path

import pytest

from driver.devnet import start_devnet
from driver.local import LocalRunner
from driver.network import RoundStats
from driver.network_training import train_network
from driver.training import TrainConfig, train

pytestmark = pytest.mark.slow

CONFIG = TrainConfig(
    dataset="digits", epochs=1, batch=512, hidden=(8,), lr=Fraction(1, 2), seed=7, shards=2
)


def test_training_survives_the_death_of_the_node_it_talks_to(tmp_path: Path) -> None:
    net = start_devnet(tmp_path / "net", miners=3)
    killed: list[int] = []

    def on_round(stats: RoundStats) -> None:
        if stats.round == 1:
            net.processes.stop("node0", signal.SIGKILL)  # the driver's (and miner0's) node
            killed.append(stats.round)

    try:
        result = train_network(CONFIG, net.urls, net.client_key, run="failover", on_round=on_round)
        net.processes.check_alive()  # the miners survived the fail-over
    finally:
        net.processes.close()
    assert killed == [1]
    assert result.result.weights_hash == train(CONFIG, LocalRunner()).weights_hash
