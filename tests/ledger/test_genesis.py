"""The genesis file: parsing, refusals, hash, quorum arithmetic."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ledger.encoding import digest
from ledger.errors import GenesisError
from ledger.genesis import Genesis, Params
from ledger.harness import actor_key

A = actor_key("v0").address
B = actor_key("v1").address


def _raw(**changes: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "chain_id": "test",
        "validators": [{"address": A, "name": "v0", "url": "http://a"}, {"address": B}],
        "params": {"replication": 3},
        "balances": {A: 10},
        "genesis_time_ms": 5,
    }
    raw.update(changes)
    return raw


def test_parse_save_load_and_hash(tmp_path: Path) -> None:
    genesis = Genesis.from_dict(_raw())
    assert (
        genesis.params.replication == 3 and genesis.params.reward_per_job == Params().reward_per_job
    )
    assert genesis.validator_addresses == (A, B)
    assert genesis.hash == digest(genesis.to_dict())
    genesis.save(tmp_path / "g.json")
    assert Genesis.load(tmp_path / "g.json") == genesis
    assert Genesis.load(tmp_path / "g.json").hash == genesis.hash


@pytest.mark.parametrize(
    ("n", "f", "quorum"), [(1, 0, 1), (3, 0, 2), (4, 1, 3), (7, 2, 5), (10, 3, 7)]
)
def test_fault_tolerance_arithmetic(n: int, f: int, quorum: int) -> None:
    validators = [{"address": actor_key(f"v{i}").address} for i in range(n)]
    genesis = Genesis.from_dict(_raw(validators=validators))
    assert (genesis.n, genesis.f, genesis.quorum) == (n, f, quorum)
    assert 2 * genesis.quorum - n >= f + 1  # any two quorums share an honest validator


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"chain_id": ""}, "chain_id"),
        ({"validators": []}, "empty"),
        ({"validators": [{"address": A}, {"address": A}]}, "twice"),
        ({"validators": [{"name": "x"}]}, "address"),
        ({"validators": [{"address": "xyz"}]}, "validator address"),
        ({"params": {"replication": -1}}, "non-negative"),
        ({"params": {"turbo": 1}}, "unknown genesis parameters"),
        ({"balances": {A: -5}}, "non-negative"),
        ({"balances": {"bob": 5}}, "balance address"),
        ({"genesis_time_ms": "now"}, "genesis_time_ms"),
        ({"colour": "blue"}, "unknown genesis fields"),
    ],
)
def test_refusals(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(GenesisError, match=message):
        Genesis.from_dict(_raw(**changes))


def test_missing_fields_and_bad_files(tmp_path: Path) -> None:
    with pytest.raises(GenesisError, match="missing"):
        Genesis.from_dict({"chain_id": "x"})
    with pytest.raises(GenesisError, match="cannot read"):
        Genesis.load(tmp_path / "none.json")
    (tmp_path / "float.json").write_text(json.dumps(_raw(genesis_time_ms=1.5)))
    with pytest.raises(GenesisError, match="float"):
        Genesis.load(tmp_path / "float.json")
