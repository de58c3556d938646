"""Transactions: envelope, hash, signature, and every stateless check with its message."""

from __future__ import annotations

import copy
import random
from typing import Any

import numpy as np  # noqa: I001
import pytest

from ledger.encoding import canonical_json, digest, parse_json, signing_bytes
from ledger.errors import InvalidTransaction
from ledger.genesis import Params
from ledger.harness import actor_key
from ledger.tensor import Tensor
from ledger.transactions import (
    CHECKPOINT,
    COMMIT_RESULT,
    POST_JOB,
    REVEAL_RESULT,
    SUBMIT_RESULT,
    TRANSFER,
    Tx,
    check_signature,
    check_tx,
    checkpoint_body,
    commit_body,
    commitment,
    job_input,
    parse_tx,
    post_job_body,
    reveal_body,
    sign_tx,
    submit_body,
    tensor_input,
    transfer_body,
    tx_signing_bytes,
)

CHAIN = "test-chain"
KEY = actor_key("alice")
H = "ab" * 32


def _tensor() -> Tensor:
    return Tensor(np.arange(6, dtype=np.int32).reshape(2, 3), 4)


def _bodies() -> dict[str, dict[str, Any]]:
    return {
        TRANSFER: transfer_body(actor_key("bob").address, 5),
        POST_JOB: post_job_body(
            op="dense_forward",
            kernel_version="exact-v1",
            inputs=[tensor_input(_tensor()), job_input(H, 1)],
            params={"act": "relu", "out_frac": 8},
            replication=2,
            reward=10,
            deadline=20,
            run="run-1",
            label="layer0/batch3",
        ),
        COMMIT_RESULT: commit_body(H, KEY.address, [H], "cd" * 32),
        REVEAL_RESULT: reveal_body(H, [H, H], "cd" * 32),
        SUBMIT_RESULT: submit_body(H, [H]),
        CHECKPOINT: checkpoint_body("run-1", 3, H, {"loss_micro": 123, "accuracy_ppm": -1}),
    }


@pytest.mark.parametrize("tx_type", sorted(_bodies()))
def test_every_type_signs_parses_and_verifies(tx_type: str) -> None:
    tx = sign_tx(KEY, CHAIN, tx_type, 7, _bodies()[tx_type])
    assert tx.hash == digest(tx.envelope())
    assert tx.encoded_envelope == canonical_json(tx.envelope())
    assert tx.body_json == canonical_json(tx.body).decode()
    assert tx_signing_bytes(tx, CHAIN) == signing_bytes("tx", CHAIN, tx.envelope())
    assert tx.signature == KEY.sign("tx", CHAIN, tx.envelope())  # what sign_tx signs, spliced
    wire = parse_json(canonical_json(tx.to_dict()))
    again = parse_tx(wire, CHAIN, Params())
    assert again == tx and again.hash == tx.hash
    assert tx.size == len(canonical_json(tx.to_dict()))


def test_signature_is_bound_to_chain_body_and_sender() -> None:
    tx = sign_tx(KEY, CHAIN, TRANSFER, 0, transfer_body(H, 5))
    check_signature(tx, CHAIN)
    with pytest.raises(InvalidTransaction, match="signature"):
        check_signature(tx, "other-chain")
    forged = Tx(tx.type, tx.sender, tx.nonce, {**tx.body, "amount": 6}, tx.signature)
    with pytest.raises(InvalidTransaction, match="signature"):
        check_signature(forged, CHAIN)
    stolen = Tx(tx.type, actor_key("mallory").address, tx.nonce, tx.body, tx.signature)
    with pytest.raises(InvalidTransaction, match="signature"):
        check_signature(stolen, CHAIN)


def test_size_limit_is_enforced() -> None:
    tx = sign_tx(KEY, CHAIN, POST_JOB, 0, _bodies()[POST_JOB])
    check_tx(tx, CHAIN, Params(max_tx_bytes=tx.size))
    with pytest.raises(InvalidTransaction, match="bytes; the limit"):
        check_tx(tx, CHAIN, Params(max_tx_bytes=tx.size - 1))


def _wire(tx_type: str = TRANSFER) -> dict[str, Any]:
    return sign_tx(KEY, CHAIN, tx_type, 0, _bodies()[tx_type]).to_dict()


def _mutated(tx_type: str, path: list[Any], value: Any) -> dict[str, Any]:
    raw = copy.deepcopy(_wire(tx_type))
    target = raw
    for key in path[:-1]:
        target = target[key]
    if value is _DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return raw


_DELETE = object()

BAD_ENVELOPES = [
    (TRANSFER, ["type"], "mint", "unknown transaction type"),
    (TRANSFER, ["sender"], "AB" * 32, "sender must be an address"),
    (TRANSFER, ["nonce"], -1, "nonce must be an integer"),
    (TRANSFER, ["nonce"], True, "nonce must be an integer"),
    (TRANSFER, ["signature"], "00", "signature must be 128"),
    (TRANSFER, ["body"], [], "body must be a JSON object"),
    (TRANSFER, ["extra"], 1, "unknown fields"),
    (TRANSFER, ["nonce"], _DELETE, "missing"),
    (TRANSFER, ["body", "amount"], 0, "amount = 0 outside"),
    (TRANSFER, ["body", "amount"], "5", "amount must be an integer"),
    (TRANSFER, ["body", "to"], "x", "to must be 64 lowercase hex"),
    (TRANSFER, ["body", "memo"], "hi", "unknown fields"),
    (POST_JOB, ["body", "op"], "", "op must be 1 to"),
    (POST_JOB, ["body", "inputs"], [], "inputs must be a list of 1 to"),
    (POST_JOB, ["body", "inputs", 0, "dtype"], "<f8", "dtype must be"),
    (POST_JOB, ["body", "inputs", 0, "shape"], [0], "shape must be"),
    (POST_JOB, ["body", "inputs", 0, "frac_bits"], 31, "frac_bits = 31 outside"),
    (POST_JOB, ["body", "inputs", 1, "output"], -1, "output = -1 outside"),
    (POST_JOB, ["body", "inputs", 1], {"job": H}, "missing"),
    (POST_JOB, ["body", "inputs", 1], {"blob": H}, "must name a 'tensor' or a 'job'"),
    (POST_JOB, ["body", "params"], [], "params must be an object"),
    (POST_JOB, ["body", "params", "lr"], 0.5, "float"),
    (POST_JOB, ["body", "replication"], 0, "replication = 0 outside"),
    (POST_JOB, ["body", "reward"], -1, "reward = -1 outside"),
    (POST_JOB, ["body", "deadline"], 0, "deadline = 0 outside"),
    (POST_JOB, ["body", "run"], "has space", "run must be"),
    (POST_JOB, ["body", "kernel_version"], _DELETE, "missing"),
    (COMMIT_RESULT, ["body", "commitment"], "zz", "commitment must be 64"),
    (REVEAL_RESULT, ["body", "outputs"], [], "outputs must be a list of 1 to"),
    (REVEAL_RESULT, ["body", "outputs"], ["x"], r"outputs\[0\] must be 64"),
    (REVEAL_RESULT, ["body", "salt"], "short", "salt must be 64"),
    (SUBMIT_RESULT, ["body", "job_id"], 5, "job_id must be 64"),
    (CHECKPOINT, ["body", "epoch"], -2, "epoch = -2 outside"),
    (CHECKPOINT, ["body", "metrics"], {"loss": 0.5}, "loss must be an integer"),
    (CHECKPOINT, ["body", "metrics"], {f"m{i}": 1 for i in range(17)}, "at most 16"),
]


@pytest.mark.parametrize(("tx_type", "path", "value", "message"), BAD_ENVELOPES)
def test_stateless_checks_name_the_problem(
    tx_type: str, path: list[Any], value: Any, message: str
) -> None:
    with pytest.raises(InvalidTransaction, match=message):
        Tx.from_dict(_mutated(tx_type, path, value))


def test_not_an_object_is_refused() -> None:
    with pytest.raises(InvalidTransaction, match="JSON object"):
        Tx.from_dict([1, 2])


def test_commitment_binds_job_miner_outputs_and_salt() -> None:
    base = commitment(H, KEY.address, [H], "cd" * 32)
    assert base == digest({"job_id": H, "miner": KEY.address, "outputs": [H], "salt": "cd" * 32})
    assert commitment(H, actor_key("bob").address, [H], "cd" * 32) != base
    assert commitment("cd" * 32, KEY.address, [H], "cd" * 32) != base
    assert commitment(H, KEY.address, ["cd" * 32], "cd" * 32) != base
    assert commitment(H, KEY.address, [H], "ef" * 32) != base


def test_commitment_text_is_the_canonical_json_of_its_value() -> None:
    """`commitment` writes the canonical text of hex-only values by hand; it must hash exactly
    `digest(value)`, for any number of outputs (non-hex values take the generic encoder)."""
    rng = random.Random(7)
    for _ in range(200):
        hexes = ["".join(rng.choice("0123456789abcdef") for _ in range(64)) for _ in range(20)]
        job_id, miner, salt, *outputs = hexes[: 3 + rng.randint(1, 16)]
        value = {"job_id": job_id, "miner": miner, "outputs": outputs, "salt": salt}
        assert commitment(job_id, miner, outputs, salt) == digest(value)
    odd = {"job_id": "x", "miner": KEY.address, "outputs": ["é"], "salt": "cd" * 32}
    assert commitment("x", KEY.address, ["é"], "cd" * 32) == digest(odd)


def test_tensor_input_carries_the_hashed_metadata() -> None:
    t = _tensor()
    assert tensor_input(t) == {"tensor": t.hash, "dtype": "<i4", "shape": [2, 3], "frac_bits": 4}
    assert job_input(H, 2) == {"job": H, "output": 2}


def test_deeply_nested_params_are_refused_not_crashing() -> None:
    raw = _wire(POST_JOB)
    nested: Any = 1
    for _ in range(5000):
        nested = [nested]
    raw["body"]["params"] = {"x": nested}
    with pytest.raises(InvalidTransaction, match="nested too deeply"):
        Tx.from_dict(raw)
