"""Byzantine miners end to end: a lying miner and a copying miner beside two honest ones, on a real
4-validator testnet. No wrong result is ever settled, the liar is slashed, the copier earns
nothing, the honest are paid, and the training still matches the local run bit for bit."""

from __future__ import annotations

import json
from collections.abc import Iterator
from fractions import Fraction
from typing import Any

import httpx
import pytest

from driver.devnet import Devnet, start_devnet
from driver.local import LocalRunner
from driver.network_training import NetworkTrainResult, train_network
from driver.replay import replay_run
from driver.training import TrainConfig, train
from ledger.identity import Keypair
from ledger.store import Store
from ledger.tensorstore import TensorStore

pytestmark = pytest.mark.slow

CONFIG = TrainConfig(
    dataset="digits", epochs=1, batch=512, hidden=(8,), lr=Fraction(1, 2), seed=5, shards=2
)
HONEST, LIAR, COPIER = (0, 1), 2, 3


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Devnet]:
    devnet = start_devnet(
        tmp_path_factory.mktemp("byzantine"), miners=4, byzantine={LIAR: "lie", COPIER: "copy"}
    )
    try:
        yield devnet
    finally:
        devnet.processes.close()


@pytest.fixture(scope="module")
def trained(net: Devnet) -> NetworkTrainResult:
    return train_network(CONFIG, net.urls, net.client_key, run="byzantine")


def miner_record(net: Devnet, i: int) -> dict[str, Any]:
    key = Keypair.load(net.root / "miners" / f"miner{i}.pem")
    account = httpx.get(f"{net.urls[0]}/api/v1/accounts/{key.address}", timeout=10).json()
    return {"address": key.address, "balance": account["balance"], **(account["miner"] or {})}


def test_training_with_byzantine_miners_matches_local(trained: NetworkTrainResult) -> None:
    assert trained.result.weights_hash == train(CONFIG, LocalRunner()).weights_hash


def test_no_wrong_result_is_settled(trained: NetworkTrainResult, net: Devnet) -> None:
    """Replay re-executes every job of the run and compares with what the chain settled."""
    data = net.root / "node0" / "data"
    store = Store(str(data / "ledger.db"), create=False)
    report = replay_run(store, TensorStore(data / "tensors"), "byzantine")
    jobs = store.list_jobs(run="byzantine", limit=1000)
    store.close()
    assert report.jobs_checked == trained.jobs == len(jobs)
    assert all(job.status == "settled" for job in jobs)
    liar = miner_record(net, LIAR)["address"]
    assert all(job.verdicts.get(liar) != "right" for job in jobs)
    disputed = [job for job in jobs if liar in job.reveals]
    assert disputed, "the liar should have got some of its results revealed"
    assert all(job.settlement in ("reexecuted", "audited") for job in disputed)


def test_the_liar_is_slashed_and_the_honest_are_paid(
    trained: NetworkTrainResult, net: Devnet
) -> None:
    liar = miner_record(net, LIAR)
    assert liar["rejected"] and liar["earned"] == 0 and liar["slashed"]
    assert liar["accepted"] == 0
    for i in HONEST:
        honest = miner_record(net, i)
        assert honest["rejected"] == 0 and honest["slashed"] == 0
        assert honest["earned"] > 0 and honest["accepted"] > 0
    paid = sum(int(miner_record(net, i)["accepted"]) for i in HONEST)
    assert paid >= trained.jobs  # every job was settled by at least one honest result


def test_the_copier_earns_nothing(trained: NetworkTrainResult, net: Devnet) -> None:
    copier = miner_record(net, COPIER)
    assert copier.get("earned", 0) == 0 and copier.get("accepted", 0) == 0
    stats = json.loads((net.root / "logs" / f"miner{COPIER}.json").read_text())
    assert stats["computed"] == 0
