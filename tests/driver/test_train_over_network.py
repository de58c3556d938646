"""Training through a real testnet (4 validator processes, 3 miner processes): the weights hash is
identical to `--local`, every epoch is checkpointed, and `layerchain replay` re-derives the run."""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from fractions import Fraction
from pathlib import Path

import httpx
import pytest

from driver.devnet import Devnet, start_devnet
from driver.local import LocalRunner
from driver.network_training import NetworkTrainResult, train_network
from driver.replay import ReplayMismatch, replay_run
from driver.training import TrainConfig, train
from ledger.errors import TensorError
from ledger.store import Store
from ledger.tensorstore import TensorStore

pytestmark = pytest.mark.slow

#: Small on purpose: 2 epochs of 3 steps, each step one fused `mlp_grad` job per shard (2 shards).
CONFIG = TrainConfig(
    dataset="digits", epochs=2, batch=512, hidden=(8,), lr=Fraction(1, 2), seed=3, shards=2
)
#: The same model planned as a DAG (per shard: 2 forward, loss, 2 backward jobs), one epoch.
DAG_CONFIG = replace(CONFIG, epochs=1, fused=False)


@pytest.fixture(scope="module")
def devnet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Devnet]:
    net = start_devnet(tmp_path_factory.mktemp("devnet"), miners=3)
    try:
        yield net
    finally:
        net.processes.close()


@pytest.fixture(scope="module")
def trained(devnet: Devnet) -> NetworkTrainResult:
    return train_network(CONFIG, devnet.urls, devnet.client_key, run="test-run")


@pytest.fixture(scope="module")
def trained_dag(devnet: Devnet) -> NetworkTrainResult:
    return train_network(DAG_CONFIG, devnet.urls, devnet.client_key, run="test-dag")


def test_network_training_matches_local_bit_for_bit(trained: NetworkTrainResult) -> None:
    local = train(CONFIG, LocalRunner())
    assert trained.result.weights_hash == local.weights_hash
    assert [h.loss for h in trained.result.history] == [h.loss for h in local.history]
    assert trained.jobs == 2 * 3 * 2


def test_a_dag_of_layer_jobs_trains_the_same_bytes(
    trained: NetworkTrainResult, trained_dag: NetworkTrainResult, devnet: Devnet
) -> None:
    """Jobs reading earlier jobs' outputs (waiting until they settle) give what `--local` does,
    which is what the fused op gives: the first epoch's losses agree."""
    local = train(DAG_CONFIG, LocalRunner())
    assert trained_dag.result.weights_hash == local.weights_hash
    assert trained_dag.jobs == 3 * 10
    assert trained_dag.result.history[0].loss == trained.result.history[0].loss
    data = devnet.root / "node1" / "data"
    store = Store(str(data / "ledger.db"), create=False)
    report = replay_run(store, TensorStore(data / "tensors"), "test-dag")
    store.close()
    assert report.weights_hash == trained_dag.result.weights_hash
    assert report.jobs_checked == trained_dag.jobs


def test_every_epoch_is_checkpointed_with_its_model_hash(
    trained: NetworkTrainResult, devnet: Devnet
) -> None:
    store = Store(str(devnet.root / "node1" / "data" / "ledger.db"), create=False)
    checkpoints = store.checkpoints("test-run")
    store.close()
    assert [c["epoch"] for c in checkpoints] == [1, 2]
    assert checkpoints[-1]["model_hash"] == trained.result.weights_hash
    metrics = checkpoints[-1]["metrics"]
    assert metrics["lr_num"] == 1 and metrics["lr_den"] == 2
    assert metrics["test_accuracy_ppm"] == round(trained.result.test_accuracy * 1_000_000)


def test_replay_rederives_the_run_from_a_ledger(
    trained: NetworkTrainResult, devnet: Devnet
) -> None:
    data = devnet.root / "node2" / "data"
    store = Store(str(data / "ledger.db"), create=False)
    report = replay_run(store, TensorStore(data / "tensors"), "test-run")
    store.close()
    assert report.weights_hash == trained.result.weights_hash
    assert [e for e, _ in report.checkpoints] == [1, 2]
    assert report.jobs_checked == trained.jobs


def test_replay_cli_confirms_and_fails_on_an_unknown_run(
    trained: NetworkTrainResult, devnet: Devnet
) -> None:
    ledger = devnet.root / "node0" / "data" / "ledger.db"
    replay = [sys.executable, "-m", "layerchain", "replay", "--ledger", str(ledger)]
    ok = subprocess.run(
        [*replay, "--run", "test-run"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert ok.returncode == 0, ok.stderr
    assert re.search(r"2 checkpoints\s+confirmed", ok.stdout)
    assert trained.result.weights_hash in ok.stdout.replace("\n", "")
    bad = subprocess.run(
        [*replay, "--run", "nope"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert bad.returncode == 1
    assert "has no checkpoint" in bad.stderr


def test_replay_detects_a_tampered_tensor_store(
    trained: NetworkTrainResult, devnet: Devnet, tmp_path: Path
) -> None:
    """Swap the first round's batch for another batch: the re-derived outputs must disagree."""
    import shutil

    data = devnet.root / "node3" / "data"
    copy = tmp_path / "tensors"
    shutil.copytree(data / "tensors", copy)
    store = Store(str(data / "ledger.db"), create=False)
    jobs = {j.label: j for j in store.list_jobs(run="test-run", limit=1000)}
    x0 = jobs["r1/step/s0"].inputs[0]["tensor"]
    x1 = jobs["r1/step/s1"].inputs[0]["tensor"]
    tensors = TensorStore(copy)
    with sqlite3.connect(tensors.pack_path) as db:  # batches are small: packed, not files
        swapped = db.execute(
            "UPDATE tensors SET blob = (SELECT blob FROM tensors WHERE hash = ?) WHERE hash = ?",
            (x1, x0),
        )
        assert swapped.rowcount == 1
    try:
        with pytest.raises((ReplayMismatch, TensorError)):
            replay_run(store, tensors, "test-run")
    finally:
        store.close()
        tensors.close()


class LyingNode(httpx.AsyncBaseTransport):
    """Real HTTP to the devnet, except that one node lies: its answers to `POST /work/results`
    name other output hashes for every settled job (a Byzantine validator)."""

    def __init__(self, liar: str) -> None:
        self.real = httpx.AsyncHTTPTransport()
        self.liar = httpx.URL(liar)
        self.lies = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.real.handle_async_request(request)
        if (request.url.host, request.url.port) != (self.liar.host, self.liar.port) or (
            not request.url.path.endswith("/work/results")
        ):
            return response
        await response.aread()
        body = json.loads(response.content)
        for job in body["jobs"]:
            if job["outputs"]:
                job["outputs"] = [("0" if h[0] != "0" else "1") + h[1:] for h in job["outputs"]]
                self.lies += 1
        return httpx.Response(response.status_code, json=body, request=request)

    async def aclose(self) -> None:
        await self.real.aclose()


def test_a_lying_node_cannot_feed_the_driver_wrong_outputs(devnet: Devnet) -> None:
    """The driver's first node names false output hashes for every settled job; the driver
    confirms every read-back with f + 1 validators, uses their answer, and trains the bytes
    `--local` trains."""
    config = replace(CONFIG, epochs=1, batch=1024)
    liar = LyingNode(devnet.urls[0])
    trained = train_network(config, devnet.urls, devnet.client_key, run="test-liar", transport=liar)
    assert liar.lies > 0
    assert trained.disagreements >= 1
    assert trained.result.weights_hash == train(config, LocalRunner()).weights_hash
