"""An in-process one-validator chain (n = 1 commits alone) reached through httpx.ASGITransport.

Tests are plain functions that `asyncio.run` a scenario inside `in_process_chain(tmp_path)`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from api.commands import write_testnet
from api.core.config import load_settings
from api.core.node import Node
from api.main import create_app
from api.testing import free_ports
from ledger.genesis import Params
from ledger.identity import Keypair

BASE = "http://node0.test"


@dataclass
class InProcessChain:
    node: Node
    transport: httpx.ASGITransport
    client_key: Keypair
    miner_keys: list[Keypair]


@asynccontextmanager
async def in_process_chain(
    root: Path, params: Params | None = None
) -> AsyncIterator[InProcessChain]:
    write_testnet(root, validators=1, miners=3, ports=[free_ports(1)[0]], params=params)
    settings = load_settings(root / "node0")
    app = create_app(settings)
    node: Node = app.state.node
    await node.start()
    try:
        yield InProcessChain(
            node,
            httpx.ASGITransport(app=app),
            Keypair.load(root / "client.pem"),
            [Keypair.load(root / "miners" / f"miner{i}.pem") for i in range(3)],
        )
    finally:
        await node.stop()
