"""Fixtures for the node tests: in-process apps and real 4-validator testnets on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.commands import write_testnet
from api.core.config import load_settings
from api.core.node import Node
from api.main import create_app
from api.testing import LocalTestnet, free_ports
from ledger.identity import Keypair


@pytest.fixture(scope="module")
def testnet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalTestnet]:
    """Four `layerchain node` processes, healthy; every process is killed afterwards."""
    root: Path = tmp_path_factory.mktemp("testnet")
    with LocalTestnet(root, validators=4, miners=2) as net:
        net.start_all()
        net.wait_healthy(timeout=60)
        yield net


@pytest.fixture
def single_node(tmp_path: Path) -> Iterator[tuple[TestClient, Node, Keypair]]:
    """An in-process one-validator chain (n=1 commits alone): (client, node, funded client key)."""
    write_testnet(tmp_path, validators=1, miners=1, ports=[free_ports(1)[0]])
    settings = load_settings(tmp_path / "node0", test_admin=True)
    app = create_app(settings)
    with TestClient(app) as client:
        yield client, app.state.node, Keypair.load(tmp_path / "client.pem")
