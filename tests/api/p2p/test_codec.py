"""Consensus messages and WAL records survive the JSON wire form; malformed input is refused."""

from __future__ import annotations

import json

import pytest

from api.p2p.codec import ConsensusBlock, MessageCodec
from ledger.blocks import make_block
from ledger.consensus.messages import (
    Checkpoint,
    Commit,
    NewView,
    Prepare,
    PreparedCert,
    PrePrepare,
    Verifier,
    ViewChange,
    sign_message,
)
from ledger.consensus.records import PreparedRecord, StableRecord, VoteRecord
from ledger.errors import EncodingError
from ledger.identity import Keypair
from ledger.transactions import TRANSFER, sign_tx, transfer_body

CHAIN = "codec-chain"
KEYS = [Keypair.from_seed(bytes([i]) * 32) for i in range(1, 5)]
CODEC = MessageCodec(CHAIN)


def _block() -> ConsensusBlock:
    tx = sign_tx(KEYS[0], CHAIN, TRANSFER, 0, transfer_body(KEYS[1].address, 5))
    block = make_block(
        chain_id=CHAIN,
        height=1,
        prev_hash="0" * 64,
        time_ms=1,
        proposer=KEYS[0].address,
        view=0,
        app_hash="1" * 64,
        txs=[tx],
    )
    return ConsensusBlock(block)


def _roundtrip(msg):
    wire = json.loads(json.dumps(CODEC.encode_message(msg)))
    return CODEC.decode_message(wire)


def test_pre_prepare_roundtrip_keeps_signature_valid_and_block() -> None:
    block = _block()
    pp = sign_message(
        KEYS[0], CHAIN, PrePrepare, view=0, height=1, block_hash=block.hash, block=block
    )
    back = _roundtrip(pp)
    assert isinstance(back, PrePrepare)
    assert back.block.hash == block.hash
    assert back.block.tx_hashes == block.tx_hashes
    assert Verifier().message(back, CHAIN)


def test_view_change_and_new_view_roundtrip() -> None:
    block = _block()
    pp = sign_message(
        KEYS[0], CHAIN, PrePrepare, view=0, height=1, block_hash=block.hash, block=block
    )
    prepares = tuple(
        sign_message(k, CHAIN, Prepare, view=0, height=1, block_hash=block.hash) for k in KEYS[1:3]
    )
    cps = tuple(sign_message(k, CHAIN, Checkpoint, height=0, block_hash="a" * 64) for k in KEYS[:3])
    vc = sign_message(
        KEYS[1],
        CHAIN,
        ViewChange,
        view=1,
        stable_height=0,
        stable_hash="a" * 64,
        checkpoint_proof=cps,
        prepared=(PreparedCert(pp, prepares),),
    )
    nv = sign_message(KEYS[1], CHAIN, NewView, view=1, view_changes=(vc,), pre_prepares=(pp,))
    back = _roundtrip(nv)
    assert isinstance(back, NewView)
    assert Verifier().message(back, CHAIN)
    assert Verifier().message(back.view_changes[0], CHAIN)
    assert back.view_changes[0].prepared[0].pre_prepare.block.hash == block.hash
    commit = sign_message(KEYS[2], CHAIN, Commit, view=0, height=1, block_hash=block.hash)
    assert Verifier().message(_roundtrip(commit), CHAIN)


def test_records_roundtrip() -> None:
    block = _block()
    pp = sign_message(
        KEYS[0], CHAIN, PrePrepare, view=0, height=1, block_hash=block.hash, block=block
    )
    cps = tuple(sign_message(k, CHAIN, Checkpoint, height=16, block_hash="b" * 64) for k in KEYS)
    for record in (
        VoteRecord("prepare", 0, 1, block.hash),
        PreparedRecord(PreparedCert(pp, ())),
        StableRecord(16, "b" * 64, cps),
    ):
        wire = json.loads(json.dumps(CODEC.encode_record(record)))
        back = CODEC.decode_record(wire)
        assert type(back) is type(record)
        assert CODEC.encode_record(back) == wire


@pytest.mark.parametrize(
    "raw",
    [
        None,
        [],
        {"type": "prepare"},
        {
            "type": "prepare",
            "view": -1,
            "height": 1,
            "block_hash": "a",
            "sender": "s",
            "signature": "x",
        },
        {
            "type": "pre-prepare",
            "view": 0,
            "height": 1,
            "block_hash": "a",
            "sender": "s",
            "signature": "x",
            "block": {"header": {}, "txs": []},
        },
        {"type": "nonsense", "sender": "s", "signature": "x"},
        {
            "type": "new-view",
            "view": 1,
            "view_changes": [{"type": "prepare"}],
            "pre_prepares": [],
            "sender": "s",
            "signature": "x",
        },
    ],
)
def test_malformed_messages_raise_encoding_error(raw) -> None:
    with pytest.raises(EncodingError):
        CODEC.decode_message(raw)
