"""Blocks: the header, its hash, and the validation rules every component shares.

The header commits to the previous block (`prev_hash`), the transactions (`tx_root`) and the state
root after the previous block (`app_hash`, as in Tendermint), so a primary can propose before it
executes and every block commits to the state before it. Block hash = digest(header).

`validate_header` and `validate_block` are plain functions raising InvalidBlock; the node, the
consensus adapter, `layerchain verify` and the explorer all call them, none re-implements a rule.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from ledger.certificate import CommitCertificate, verify_certificate
from ledger.encoding import HEX64, digest
from ledger.errors import InvalidBlock, InvalidTransaction, LedgerError
from ledger.genesis import Genesis
from ledger.merkle import merkle_root
from ledger.transactions import Tx, check_tx

HEADER_FIELDS = (
    "chain_id",
    "height",
    "prev_hash",
    "time_ms",
    "proposer",
    "view",
    "tx_root",
    "app_hash",
    "n_txs",
)


@dataclass(frozen=True)
class BlockHeader:
    """The signed-over part of a block (through the commit certificate on its hash)."""

    chain_id: str
    """The genesis chain id."""
    height: int
    """1 for the first block after genesis."""
    prev_hash: str
    """Hash of block height-1; the genesis hash for block 1."""
    time_ms: int
    """Proposer's clock, ms since the epoch; never less than the parent's (or genesis time)."""
    proposer: str
    """Address of the validator that proposed the block."""
    view: int
    """PBFT view in which the block was proposed."""
    tx_root: str
    """Merkle root of the tx hashes (ledger.merkle)."""
    app_hash: str
    """State root after executing block height-1 (the initial root for block 1)."""
    n_txs: int
    """Number of transactions."""

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in HEADER_FIELDS}

    @cached_property
    def hash(self) -> str:
        """digest(header): what the commit certificate signs and the next block links to."""
        return digest(self.to_dict())

    @classmethod
    def from_dict(cls, raw: Any) -> BlockHeader:
        """Parse a header, checking field types and formats (not its place in a chain)."""
        if not isinstance(raw, dict):
            raise InvalidBlock("a block header must be a JSON object")
        if set(raw) != set(HEADER_FIELDS):
            raise InvalidBlock(
                f"block header fields must be exactly {list(HEADER_FIELDS)}, got {sorted(raw)}"
            )
        for name in ("height", "time_ms", "view", "n_txs"):
            value = raw[name]
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise InvalidBlock(f"header {name} must be a non-negative integer")
        for name in ("prev_hash", "proposer", "tx_root", "app_hash"):
            if not isinstance(raw[name], str) or not HEX64.match(raw[name]):
                raise InvalidBlock(f"header {name} must be 64 lowercase hex characters")
        if not isinstance(raw["chain_id"], str):
            raise InvalidBlock("header chain_id must be a string")
        return cls(**{name: raw[name] for name in HEADER_FIELDS})


@dataclass(frozen=True)
class Block:
    """A header and its transactions in order."""

    header: BlockHeader
    txs: tuple[Tx, ...]

    @property
    def hash(self) -> str:
        return self.header.hash

    @property
    def height(self) -> int:
        return self.header.height

    def to_dict(self) -> dict[str, Any]:
        return {"header": self.header.to_dict(), "txs": [tx.to_dict() for tx in self.txs]}

    @classmethod
    def from_dict(cls, raw: Any) -> Block:
        """Parse the wire form; transactions are form-checked (signatures by validate_block)."""
        if not isinstance(raw, dict) or set(raw) != {"header", "txs"}:
            raise InvalidBlock('a block must be an object with exactly "header" and "txs"')
        if not isinstance(raw["txs"], list):
            raise InvalidBlock("block txs must be a list")
        header = BlockHeader.from_dict(raw["header"])
        txs = []
        for i, item in enumerate(raw["txs"]):
            try:
                txs.append(Tx.from_dict(item))
            except InvalidTransaction as exc:
                raise InvalidBlock(f"block {header.height} tx {i}: {exc}") from exc
        return cls(header, tuple(txs))


def make_block(
    *,
    chain_id: str,
    height: int,
    prev_hash: str,
    time_ms: int,
    proposer: str,
    view: int,
    app_hash: str,
    txs: Sequence[Tx],
) -> Block:
    """Assemble a block, computing tx_root and n_txs from `txs`."""
    header = BlockHeader(
        chain_id=chain_id,
        height=height,
        prev_hash=prev_hash,
        time_ms=time_ms,
        proposer=proposer,
        view=view,
        tx_root=merkle_root([tx.hash for tx in txs]),
        app_hash=app_hash,
        n_txs=len(txs),
    )
    return Block(header, tuple(txs))


def validate_header(
    header: BlockHeader,
    genesis: Genesis,
    parent: BlockHeader | None,
    *,
    app_hash: str | None = None,
) -> None:
    """Raise InvalidBlock unless `header` may follow `parent` (None: it is block 1).

    `app_hash`, when given, is the state root the validator computed after the parent; the header
    must carry exactly it. Which validator may propose in which view is the consensus layer's rule;
    here the proposer need only be a genesis validator.
    """
    if header.chain_id != genesis.chain_id:
        raise InvalidBlock(f"chain_id {header.chain_id!r} is not this chain's {genesis.chain_id!r}")
    if parent is None:
        want_height, want_prev, min_time = 1, genesis.hash, genesis.genesis_time_ms
    else:
        want_height, want_prev, min_time = parent.height + 1, parent.hash, parent.time_ms
    if header.height != want_height:
        raise InvalidBlock(f"height {header.height} does not follow {want_height - 1}")
    if header.prev_hash != want_prev:
        raise InvalidBlock(f"block {header.height}: prev_hash does not match the parent's hash")
    if header.time_ms < min_time:
        raise InvalidBlock(
            f"block {header.height}: time_ms {header.time_ms} is before the parent's {min_time}"
        )
    if header.proposer not in genesis.validator_addresses:
        raise InvalidBlock(f"block {header.height}: proposer is not a genesis validator")
    if header.n_txs > genesis.params.max_block_txs:
        raise InvalidBlock(
            f"block {header.height}: {header.n_txs} txs; the limit is "
            f"{genesis.params.max_block_txs}"
        )
    if app_hash is not None and header.app_hash != app_hash:
        raise InvalidBlock(
            f"block {header.height}: app_hash {header.app_hash[:16]}… is not the state root "
            f"{app_hash[:16]}… after block {header.height - 1}"
        )


def validate_block(
    block: Block,
    genesis: Genesis,
    parent: BlockHeader | None,
    *,
    app_hash: str | None = None,
    check_signatures: bool = True,
) -> None:
    """validate_header, then the body: n_txs, tx_root, and every tx's stateless checks.

    Pass `check_signatures=False` only for txs whose signatures this process already verified
    (e.g. on mempool admission); everything else is always checked.
    """
    header = block.header
    validate_header(header, genesis, parent, app_hash=app_hash)
    if header.n_txs != len(block.txs):
        raise InvalidBlock(
            f"block {header.height}: header says {header.n_txs} txs, body has {len(block.txs)}"
        )
    root = merkle_root([tx.hash for tx in block.txs])
    if root != header.tx_root:
        raise InvalidBlock(f"block {header.height}: tx_root does not match its transactions")
    for i, tx in enumerate(block.txs):
        try:
            check_tx(tx, genesis.chain_id, genesis.params, signature=check_signatures)
        except InvalidTransaction as exc:
            raise InvalidBlock(f"block {header.height} tx {i}: {exc}") from exc


def validate_certificate(cert: CommitCertificate, genesis: Genesis, header: BlockHeader) -> None:
    """Raise InvalidBlock unless `cert` is a quorum of genesis validators committing `header`."""
    try:
        verify_certificate(
            cert,
            genesis.chain_id,
            genesis.validator_addresses,
            height=header.height,
            block_hash=header.hash,
        )
    except InvalidBlock as exc:
        raise InvalidBlock(f"block {header.height}: {exc}") from exc
    except LedgerError as exc:  # a malformed signature string, say
        raise InvalidBlock(f"block {header.height}: certificate: {exc}") from exc
