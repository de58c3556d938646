"""Fixtures of the consensus tests."""

from __future__ import annotations

import pytest
from pbft_net import Net


@pytest.fixture
def net() -> Net:
    """A fresh 4-validator cluster (K = 4, L = 8, at most 8 txs per block)."""
    return Net()
