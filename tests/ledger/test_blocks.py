"""Blocks: Merkle tx root, header hash and parsing, and each validation rule."""

from __future__ import annotations

import dataclasses
import hashlib

import pytest

from ledger.blocks import (
    Block,
    BlockHeader,
    make_block,
    validate_block,
    validate_certificate,
    validate_header,
)
from ledger.encoding import digest
from ledger.errors import InvalidBlock
from ledger.genesis import Params
from ledger.harness import ChainHarness, actor_key
from ledger.merkle import EMPTY_ROOT, merkle_proof, merkle_root, verify_proof
from ledger.transactions import Tx


def _hashes(n: int) -> list[str]:
    return [hashlib.sha256(str(i).encode()).hexdigest() for i in range(n)]


def _leaf(h: str) -> bytes:
    return hashlib.sha256(b"\x00" + bytes.fromhex(h)).digest()


def _node(a: bytes, b: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + a + b).digest()


def test_merkle_root_follows_the_documented_rule() -> None:
    a, b, c = _hashes(3)
    assert merkle_root([]) == EMPTY_ROOT == hashlib.sha256(b"").hexdigest()
    assert merkle_root([a]) == _leaf(a).hex()
    assert merkle_root([a, b]) == _node(_leaf(a), _leaf(b)).hex()
    # an odd node is carried up unchanged, never paired with itself
    assert merkle_root([a, b, c]) == _node(_node(_leaf(a), _leaf(b)), _leaf(c)).hex()
    assert merkle_root([a, b, c]) != merkle_root([a, b, c, c])
    assert merkle_root([a, b]) != merkle_root([b, a])


@pytest.mark.parametrize("n", range(1, 12))
def test_merkle_proofs_verify_every_leaf(n: int) -> None:
    hashes = _hashes(n)
    root = merkle_root(hashes)
    for i, h in enumerate(hashes):
        path = merkle_proof(hashes, i)
        assert verify_proof(h, path, root)
        assert not verify_proof(_hashes(n + 1)[-1], path, root)


def test_merkle_refuses_malformed_hashes() -> None:
    with pytest.raises(InvalidBlock, match="not hex"):
        merkle_root(["zz"])
    with pytest.raises(InvalidBlock, match="not 32 bytes"):
        merkle_root(["abcd"])
    with pytest.raises(InvalidBlock, match="outside"):
        merkle_proof(_hashes(2), 2)


@pytest.fixture
def chain() -> ChainHarness:
    return ChainHarness(balances={"alice": 100})


def _txs(chain: ChainHarness, n: int) -> list[Tx]:
    return [chain.transfer("alice", "bob", 1) for _ in range(n)]


def test_header_hash_and_round_trip(chain: ChainHarness) -> None:
    block = chain.make_block(_txs(chain, 3))
    assert block.hash == digest(block.header.to_dict())
    assert block.header.tx_root == merkle_root([tx.hash for tx in block.txs])
    again = Block.from_dict(block.to_dict())
    assert again.hash == block.hash and again.txs == block.txs
    assert block.header.prev_hash == chain.genesis.hash  # block 1 links to the genesis
    assert block.header.app_hash == chain.state.root


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("height", -1, "non-negative integer"),
        ("view", True, "non-negative integer"),
        ("prev_hash", "x", "64 lowercase hex"),
        ("chain_id", 5, "chain_id must be a string"),
        ("extra", 1, "fields must be exactly"),
    ],
)
def test_header_parsing_refuses_bad_fields(
    chain: ChainHarness, field: str, value: object, message: str
) -> None:
    raw = chain.make_block().header.to_dict()
    raw[field] = value
    with pytest.raises(InvalidBlock, match=message):
        BlockHeader.from_dict(raw)


def test_block_parsing_refuses_a_malformed_tx(chain: ChainHarness) -> None:
    raw = chain.make_block(_txs(chain, 1)).to_dict()
    raw["txs"][0]["nonce"] = "zero"
    with pytest.raises(InvalidBlock, match="tx 0: nonce"):
        Block.from_dict(raw)


def test_valid_chain_of_headers(chain: ChainHarness) -> None:
    first = chain.commit_block(_txs(chain, 2))
    assert first.height == 1
    block = chain.make_block(_txs(chain, 1))
    validate_block(block, chain.genesis, chain.head, app_hash=chain.state.root)


def _replace(header: BlockHeader, **changes: object) -> BlockHeader:
    return dataclasses.replace(header, **changes)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"chain_id": "other"}, "is not this chain's"),
        ({"height": 3}, "does not follow"),
        ({"prev_hash": "00" * 32}, "prev_hash does not match"),
        ({"time_ms": 0}, "is before the parent's"),
        ({"proposer": actor_key("mallory").address}, "proposer is not a genesis validator"),
        ({"app_hash": "00" * 32}, "is not the state root"),
    ],
)
def test_each_header_rule(chain: ChainHarness, changes: dict[str, object], message: str) -> None:
    chain.commit_block()
    header = _replace(chain.make_block().header, **changes)
    with pytest.raises(InvalidBlock, match=message):
        validate_header(header, chain.genesis, chain.head, app_hash=chain.state.root)


def test_block_size_limit() -> None:
    chain = ChainHarness(balances={"alice": 100}, params=Params(max_block_txs=2))
    block = chain.make_block(_txs(chain, 3))
    with pytest.raises(InvalidBlock, match="3 txs; the limit is 2"):
        validate_block(block, chain.genesis, None)


def test_body_must_match_header(chain: ChainHarness) -> None:
    block = chain.make_block(_txs(chain, 2))
    with pytest.raises(InvalidBlock, match="header says 2 txs, body has 1"):
        validate_block(Block(block.header, block.txs[:1]), chain.genesis, None)
    swapped = Block(block.header, (block.txs[1], block.txs[0]))
    with pytest.raises(InvalidBlock, match="tx_root does not match"):
        validate_block(swapped, chain.genesis, None)


def test_a_badly_signed_tx_invalidates_the_block(chain: ChainHarness) -> None:
    tx = _txs(chain, 1)[0]
    forged = Tx(tx.type, tx.sender, tx.nonce, {**tx.body, "amount": 99}, tx.signature)
    block = chain.make_block([forged])
    with pytest.raises(InvalidBlock, match="tx 0: .*signature"):
        validate_block(block, chain.genesis, None)
    validate_block(block, chain.genesis, None, check_signatures=False)


def test_certificates(chain: ChainHarness) -> None:
    block = chain.make_block()
    validate_certificate(chain.certify(block), chain.genesis, block.header)
    few = chain.certify(block, chain.validator_keys[:2])
    with pytest.raises(InvalidBlock, match="a quorum is 3"):
        validate_certificate(few, chain.genesis, block.header)
    outsider = chain.certify(block, [*chain.validator_keys[:2], actor_key("mallory")])
    with pytest.raises(InvalidBlock, match="not a genesis validator"):
        validate_certificate(outsider, chain.genesis, block.header)
    other = chain.make_block(_txs(chain, 1))
    with pytest.raises(InvalidBlock, match="different block hash"):
        validate_certificate(chain.certify(block), chain.genesis, other.header)


def test_make_block_counts_txs(chain: ChainHarness) -> None:
    txs = _txs(chain, 4)
    block = make_block(
        chain_id=chain.chain_id,
        height=1,
        prev_hash=chain.genesis.hash,
        time_ms=chain.genesis.genesis_time_ms,
        proposer=chain.validator_keys[0].address,
        view=0,
        app_hash=chain.state.root,
        txs=txs,
    )
    assert block.header.n_txs == 4
    validate_block(block, chain.genesis, None, app_hash=chain.state.root)
