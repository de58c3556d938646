"""Unicode digits such as '²' pass str.isdigit() but not int(): they must get a 4xx, never a 500."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from api.core.node import Node
from ledger.identity import Keypair


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/blocks/²",
        "/api/v1/blocks/²/certificate",
        "/api/v1/search?q=²",
        "/api/v1/search?q=١٢",
    ],
)
def test_non_ascii_digits_are_a_client_error(
    single_node: tuple[TestClient, Node, Keypair], path: str
) -> None:
    client, _, _ = single_node
    response = client.get(path)
    assert 400 <= response.status_code < 500, (path, response.status_code, response.text)
    assert response.json()
