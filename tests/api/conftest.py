"""Fixtures for the node tests: in-process apps and real 4-validator testnets on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from api.testing import LocalTestnet


@pytest.fixture(scope="module")
def testnet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalTestnet]:
    """Four `layerchain node` processes, healthy; every process is killed afterwards."""
    root: Path = tmp_path_factory.mktemp("testnet")
    with LocalTestnet(root, validators=4, miners=2) as net:
        net.start_all()
        net.wait_healthy(timeout=60)
        yield net
