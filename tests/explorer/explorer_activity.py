"""Real activity on a running testnet, through its REST API only, for the explorer tests.

Everything here is what a driver and miners do: upload tensors, sign and submit txs with the
right nonces, compute job outputs with the exact kernels, commit, wait for the commit phase to
close, reveal. PBFT orders it all into blocks; nothing is written to a database directly.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from api.testing import LocalTestnet
from ledger import kernels
from ledger.encoding import digest
from ledger.identity import Keypair
from ledger.tensor import Tensor
from ledger.transactions import (
    CHECKPOINT,
    COMMIT_RESULT,
    POST_JOB,
    REVEAL_RESULT,
    TRANSFER,
    checkpoint_body,
    commit_body,
    job_input,
    post_job_body,
    reveal_body,
    sign_tx,
    tensor_input,
    transfer_body,
)

SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
RUN = "mlp-digits"
PARAMS = {"act": "relu", "out_frac": 8}
CURVE = [  # (loss, accuracy) per epoch, in parts per million
    (2_302_585, 112_000),
    (1_412_000, 611_000),
    (802_000, 842_000),
    (511_000, 905_000),
    (384_000, 931_000),
]


def tensor(seed: int, shape: tuple[int, ...], frac: int = 8) -> Tensor:
    rng = np.random.default_rng(seed)
    return Tensor(rng.integers(-300, 300, size=shape, dtype=np.int64), frac)


class Activity:
    """Drives a LocalTestnet through node 0 and remembers what it created."""

    def __init__(self, net: LocalTestnet, node: int = 0) -> None:
        self.net = net
        self.node = node
        self.chain_id = net.genesis.chain_id
        self.client = net.client
        self.miners = net.miners
        self.nonces: dict[str, int] = {}
        self.http = httpx.Client(base_url=net.url(node), timeout=20)
        self.jobs: dict[str, str] = {}
        """Role ("agreed", "disputed", "dag", "expired", ...) -> job id."""
        self.txs: dict[str, str] = {}
        """Role ("transfer", "failed", ...) -> tx hash."""
        self.settlements: dict[str, str] = {}

    @property
    def url(self) -> str:
        return self.net.url(self.node)

    # ------------------------------------------------------------------ primitives

    def submit(self, key: Keypair, tx_type: str, body: dict[str, Any]) -> str:
        nonce = self.nonces.get(key.address, 0)
        self.nonces[key.address] = nonce + 1
        tx = sign_tx(key, self.chain_id, tx_type, nonce, body)
        response = self.http.post("/api/v1/txs", json=tx.to_dict())
        assert response.status_code == 202, response.text
        return tx.hash

    def wait_tx(self, tx_hash: str, timeout: float = 30) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            response = self.http.get(f"/api/v1/txs/{tx_hash}")
            if response.status_code == 200 and response.json()["status"] == "committed":
                return dict(response.json())
            time.sleep(0.05)
        raise TimeoutError(f"tx {tx_hash} not committed in {timeout}s")

    def job(self, job_id: str) -> dict[str, Any]:
        response = self.http.get(f"/api/v1/jobs/{job_id}")
        response.raise_for_status()
        return dict(response.json())

    def wait_job(self, job_id: str, statuses: set[str], timeout: float = 30) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self.job(job_id)
            if job["status"] in statuses:
                return job
            time.sleep(0.05)
        raise TimeoutError(f"job {job_id} not in {statuses} after {timeout}s")

    def upload(self, t: Tensor) -> str:
        response = self.http.put("/api/v1/tensors", content=t.to_bytes())
        assert response.status_code == 201, response.text
        return t.hash

    def transfer(self, key: Keypair, to: str, amount: int) -> str:
        return self.submit(key, TRANSFER, transfer_body(to, amount))

    def post(self, inputs: list[dict[str, Any]], label: str, run: str | None = RUN) -> str:
        p = self.net.genesis.params
        body = post_job_body(
            op="dense_forward",
            kernel_version=kernels.KERNEL_VERSION,
            inputs=inputs,
            params=PARAMS,
            replication=2,
            reward=p.reward_per_job,
            deadline=p.commit_blocks,
            run=run,
            label=label,
        )
        return self.submit(self.client, POST_JOB, body)

    def compute(self, job_id: str) -> list[str]:
        """What an honest miner does: fetch inputs, run the exact kernel, upload the outputs."""
        job = self.job(job_id)
        inputs = []
        for h in job["input_hashes"]:
            blob = self.http.get(f"/api/v1/tensors/{h}").content
            inputs.append(Tensor.from_bytes(blob, expected_hash=h))
        outputs = kernels.execute(job["op"], job["params"], inputs)
        return [self.upload(t) for t in outputs]

    def settle(self, job_id: str, results: dict[int, list[str]]) -> dict[str, Any]:
        """Miners (by index) commit their outputs, then reveal once the commit phase closed."""
        self.wait_job(job_id, {"open"})
        salts = {i: secrets.token_hex(32) for i in results}
        commits = [
            self.submit(
                self.miners[i],
                COMMIT_RESULT,
                commit_body(job_id, self.miners[i].address, outputs, salts[i]),
            )
            for i, outputs in results.items()
        ]
        for h in commits:
            self.wait_tx(h)
        self.wait_job(job_id, {"revealing"})
        reveals = [
            self.submit(self.miners[i], REVEAL_RESULT, reveal_body(job_id, outputs, salts[i]))
            for i, outputs in results.items()
        ]
        for h in reveals:
            self.wait_tx(h)
        return self.wait_job(job_id, {"settled", "failed", "expired"})

    # ------------------------------------------------------------------ the scenario

    def run_scenario(self) -> None:
        self.txs["transfer"] = self.transfer(self.client, self.miners[0].address, 5_000)
        self.wait_tx(self.txs["transfer"])
        # A tx that passes the stateless checks but fails in execution: kept with its receipt.
        self.txs["failed"] = self.transfer(self.miners[2], self.client.address, 10**15)
        self.wait_tx(self.txs["failed"])

        x, w, b = tensor(1, (4, 3)), tensor(2, (3, 2)), tensor(3, (2,), 16)
        for t in (x, w, b):
            self.upload(t)
        inputs = [tensor_input(x), tensor_input(w), tensor_input(b)]
        for i in range(3):
            job_id = self.post(inputs, f"layer1/batch{i}")
            self.wait_tx(job_id)
            outputs = self.compute(job_id)
            done = self.settle(job_id, {0: outputs, 1: outputs})
            self.settlements[job_id] = done["settlement"]
            role = "agreed" if done["settlement"] == "agreed" else "audited"
            self.jobs.setdefault(role, job_id)
        assert "agreed" in self.jobs, self.settlements

        disputed = self.post(inputs, "layer1/disputed")
        self.wait_tx(disputed)
        honest = self.compute(disputed)
        lie = [self.upload(tensor(99, (4, 2)))]
        done = self.settle(disputed, {0: honest, 2: lie})
        assert done["settlement"] == "reexecuted", done
        self.jobs["disputed"] = disputed

        w2, b2 = tensor(4, (2, 2)), tensor(5, (2,), 16)
        for t in (w2, b2):
            self.upload(t)
        dag = self.post(
            [job_input(self.jobs["agreed"], 0), tensor_input(w2), tensor_input(b2)],
            "layer2/batch0",
        )
        self.wait_tx(dag)
        self.settle(dag, {1: self.compute(dag), 2: self.compute(dag)})
        self.jobs["dag"] = dag

        expired = self.post(inputs, "layer1/unclaimed", run=None)
        self.wait_tx(expired)
        while self.job(expired)["status"] != "expired":
            self.wait_tx(self.transfer(self.client, self.miners[1].address, 1))
        self.jobs["expired"] = expired

        for epoch, (loss, acc) in enumerate(CURVE):
            model = hashlib.sha256(f"model-{epoch}".encode()).hexdigest()
            metrics = {"loss_ppm": loss, "accuracy_ppm": acc}
            self.txs[f"checkpoint{epoch}"] = self.submit(
                self.client, CHECKPOINT, checkpoint_body(RUN, epoch, model, metrics)
            )
        self.wait_tx(self.txs[f"checkpoint{len(CURVE) - 1}"])

    def head(self) -> int:
        return int(self.http.get("/api/v1/status").json()["height"])

    def new_block(self) -> tuple[str, int]:
        """Commit one more block (a transfer); returns its tx hash and height."""
        tx_hash = self.transfer(self.client, self.miners[1].address, 2)
        return tx_hash, int(self.wait_tx(tx_hash)["height"])


def screenshot(page: Any, name: str) -> None:
    """Save a full-page screenshot for the README when LAYERCHAIN_SCREENSHOTS=1."""
    if os.environ.get("LAYERCHAIN_SCREENSHOTS") == "1":
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


__all__ = ["Activity", "RUN", "CURVE", "digest", "screenshot"]
