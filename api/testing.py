"""A testnet of real `layerchain node` processes on loopback, for end-to-end tests and benchmarks.

    with LocalTestnet(tmp_path, validators=4) as net:
        net.start_all()
        net.wait_healthy()
        httpx.post(net.url(0) + "/api/v1/txs", ...)
        net.kill(1)          # SIGKILL, like a crash
        net.start(1)         # restart from its home folder

Every process it starts is killed when the context exits, whatever happened inside it.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import httpx

from api.commands import write_testnet
from ledger.genesis import Genesis, Params
from ledger.identity import Keypair


def free_ports(count: int) -> list[int]:
    """`count` distinct TCP ports that were free on loopback a moment ago."""
    sockets, ports = [], []
    for _ in range(count):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        sockets.append(sock)
        ports.append(sock.getsockname()[1])
    for sock in sockets:
        sock.close()
    return ports


class LocalTestnet:
    """Write a testnet into `root` and run its validators as child processes."""

    def __init__(
        self,
        root: Path,
        validators: int = 4,
        miners: int = 1,
        params: Params | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.root = root
        self.ports = free_ports(validators)
        self.genesis: Genesis = write_testnet(
            root, validators, miners, ports=self.ports, params=params
        )
        self.client = Keypair.load(root / "client.pem")
        self.miners = [Keypair.load(root / "miners" / f"miner{i}.pem") for i in range(miners)]
        self.env = {**os.environ, "LAYERCHAIN_TEST_ADMIN": "true", **(env or {})}
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self._logs: dict[int, IO[bytes]] = {}

    @property
    def n(self) -> int:
        return self.genesis.n

    def home(self, i: int) -> Path:
        return self.root / f"node{i}"

    def url(self, i: int) -> str:
        return f"http://127.0.0.1:{self.ports[i]}"

    def start(self, i: int, extra_env: dict[str, str] | None = None) -> None:
        """Start validator `i` (its log goes to node.log in its home folder)."""
        if i in self.procs and self.procs[i].poll() is None:
            raise RuntimeError(f"node{i} is already running")
        log = open(self.home(i) / "node.log", "ab")  # noqa: SIM115 - closed in _reap
        self._logs[i] = log
        self.procs[i] = subprocess.Popen(
            [sys.executable, "-m", "layerchain", "node", "--home", str(self.home(i))],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**self.env, **(extra_env or {})},
            start_new_session=True,
        )

    def start_all(self) -> None:
        for i in range(self.n):
            self.start(i)

    def kill(self, i: int, sig: int = signal.SIGKILL) -> None:
        """Send `sig` (default SIGKILL: a crash) to node `i` and wait for it to exit."""
        proc = self.procs.get(i)
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        self._reap(i)

    def stop(self, i: int) -> None:
        """Graceful stop (SIGTERM)."""
        self.kill(i, signal.SIGTERM)

    def _reap(self, i: int) -> None:
        self.procs.pop(i, None)
        log = self._logs.pop(i, None)
        if log is not None:
            log.close()

    def running(self, i: int) -> bool:
        proc = self.procs.get(i)
        return proc is not None and proc.poll() is None

    def get(self, i: int, path: str, **kwargs: Any) -> Any:
        """GET a JSON route of node `i`; raises on non-2xx."""
        kwargs.setdefault("timeout", 10)
        response = httpx.get(self.url(i) + path, **kwargs)
        response.raise_for_status()
        return response.json()

    def post(self, i: int, path: str, **kwargs: Any) -> httpx.Response:
        kwargs.setdefault("timeout", 10)
        return httpx.post(self.url(i) + path, **kwargs)

    def health(self, i: int) -> dict[str, Any] | None:
        try:
            response = httpx.get(self.url(i) + "/api/v1/health", timeout=2)
        except httpx.HTTPError:
            return None
        return response.json() if response.status_code == 200 else None

    def wait_healthy(self, nodes: list[int] | None = None, timeout: float = 30.0) -> None:
        """Wait until every listed node (default: all running) answers /health with 200."""
        nodes = list(self.procs) if nodes is None else nodes
        deadline = time.monotonic() + timeout
        pending = set(nodes)
        while pending:
            for i in list(pending):
                if not self.running(i):
                    raise RuntimeError(f"node{i} exited: {self.log_tail(i)}")
                if self.health(i) is not None:
                    pending.discard(i)
            if pending and time.monotonic() > deadline:
                raise TimeoutError(f"nodes {sorted(pending)} not healthy after {timeout}s")
            time.sleep(0.05)

    def height(self, i: int) -> int:
        return int(self.get(i, "/api/v1/status")["height"])

    def wait_height(
        self, height: int, nodes: list[int] | None = None, timeout: float = 30.0
    ) -> None:
        """Wait until every listed node has committed at least `height`."""
        nodes = list(self.procs) if nodes is None else nodes
        deadline = time.monotonic() + timeout
        while True:
            heights = {}
            for i in nodes:
                try:
                    heights[i] = self.height(i)
                except httpx.HTTPError:
                    heights[i] = -1
            if all(h >= height for h in heights.values()):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"heights {heights} did not all reach {height} in {timeout}s")
            time.sleep(0.05)

    def partition(self, i: int, isolated: bool) -> None:
        """Cut node `i` off from its peers (both directions) or heal it (test-admin route)."""
        response = self.post(i, "/p2p/admin/partition", json={"isolated": isolated})
        response.raise_for_status()

    def log_tail(self, i: int, lines: int = 30) -> str:
        path = self.home(i) / "node.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def close(self) -> None:
        for i in list(self.procs):
            self.kill(i)

    def __enter__(self) -> LocalTestnet:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def sign_transfers(
    net: LocalTestnet, count: int, *, start_nonce: int | None = None, amount: int = 1
) -> list[dict[str, Any]]:
    """`count` signed transfers from the testnet's client key, with consecutive nonces."""
    from ledger.transactions import TRANSFER, sign_tx, transfer_body

    if start_nonce is None:
        start_nonce = next_nonce(net, net.client.address)
    to = net.miners[0].address if net.miners else net.client.address
    return [
        sign_tx(
            net.client, net.genesis.chain_id, TRANSFER, start_nonce + i, transfer_body(to, amount)
        ).to_dict()
        for i in range(count)
    ]


def next_nonce(net: LocalTestnet, address: str, nodes: list[int] | None = None) -> int:
    """The highest next-nonce any running node reports for `address`."""
    best = 0
    for i in nodes if nodes is not None else list(net.procs):
        try:
            best = max(best, int(net.get(i, f"/api/v1/accounts/{address}")["nonce"]))
        except httpx.HTTPError:
            continue
    return best


def wait_committed(
    net: LocalTestnet, tx_hashes: list[str], nodes: list[int], timeout: float = 30.0
) -> dict[str, tuple[int, int]]:
    """Wait until every tx is committed on every listed node; (height, index) of each."""
    deadline = time.monotonic() + timeout
    where: dict[str, tuple[int, int]] = {}
    for i in nodes:
        for tx_hash in tx_hashes:
            while True:
                response = httpx.get(f"{net.url(i)}/api/v1/txs/{tx_hash}", timeout=10)
                if response.status_code == 200 and response.json()["status"] == "committed":
                    body = response.json()
                    where[tx_hash] = (body["height"], body["index"])
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"tx {tx_hash} not committed on node{i} in {timeout}s")
                time.sleep(0.05)
    return where
