"""Consensus messages on the wire, with ledger blocks inside them.

The message and record formats are the consensus core's (`ledger.consensus.wire`, see
docs/PROTOCOL.md §7); the node supplies the block codec: a block travels as
`ledger.blocks.Block.to_dict()` = {"header": {...}, "txs": [signed tx, ...]}, and is parsed with
`Block.from_dict` (form checks; signatures and chain rules are checked by the application).
Malformed input raises `EncodingError`/`InvalidBlock` and the receiver drops it: never a crash.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from ledger.blocks import Block, BlockHeader
from ledger.consensus.wire import (
    message_from_wire,
    message_to_wire,
    record_from_wire,
    record_to_wire,
)
from ledger.errors import EncodingError, InvalidBlock, InvalidTransaction
from ledger.transactions import Tx

TxLookup = Callable[[Any], Tx | None]


@dataclass(frozen=True, eq=False)
class ConsensusBlock:
    """A ledger block as the consensus core sees it (height, prev_hash, hash, tx hashes)."""

    block: Block
    wire: dict[str, Any] | None = field(default=None, repr=False)
    """The block's dict form, kept when it came off the wire so re-encoding is free."""

    @property
    def height(self) -> int:
        return self.block.header.height

    @property
    def prev_hash(self) -> str:
        return self.block.header.prev_hash

    @property
    def hash(self) -> str:
        return self.block.header.hash

    @cached_property
    def tx_hashes(self) -> Sequence[str]:
        return tuple(tx.hash for tx in self.block.txs)

    def to_dict(self) -> dict[str, Any]:
        return self.wire if self.wire is not None else self.block.to_dict()

    @classmethod
    def from_dict(cls, raw: Any, known: TxLookup | None = None) -> ConsensusBlock:
        """Parse like `Block.from_dict`, reusing already parsed txs that `known` recognises."""
        if known is None:
            return cls(Block.from_dict(raw), raw)
        if not isinstance(raw, dict) or set(raw) != {"header", "txs"}:
            raise InvalidBlock('a block must be an object with exactly "header" and "txs"')
        if not isinstance(raw["txs"], list):
            raise InvalidBlock("block txs must be a list")
        header = BlockHeader.from_dict(raw["header"])
        txs = []
        for i, item in enumerate(raw["txs"]):
            tx = known(item)
            if tx is None:
                try:
                    tx = Tx.from_dict(item)
                except InvalidTransaction as exc:
                    raise InvalidBlock(f"block {header.height} tx {i}: {exc}") from exc
            txs.append(tx)
        return cls(Block(header, tuple(txs)), raw)


class MessageCodec:
    """Encode and decode the core's messages and WAL records, with ledger blocks inside.

    The message format is the consensus core's (`ledger.consensus.wire`, PROTOCOL.md §7); this
    class only supplies the block codec: a block travels as `ledger.blocks.Block.to_dict()`.
    """

    def __init__(self, chain_id: str, known: TxLookup | None = None) -> None:
        self.chain_id = chain_id
        self.known = known

    def decode_block(self, raw: Any) -> ConsensusBlock:
        return ConsensusBlock.from_dict(raw, self.known)

    def encode_message(self, msg: Any) -> dict[str, Any]:
        return message_to_wire(msg, encode_block)

    def decode_message(self, raw: Any) -> Any:
        """The message object for `raw`, or EncodingError if it is malformed."""
        return message_from_wire(raw, self.decode_block)

    def encode_record(self, record: Any) -> dict[str, Any]:
        """A persisted consensus record as JSON (what `ConsensusWal` stores)."""
        return record_to_wire(record, encode_block)

    def decode_record(self, raw: Any) -> Any:
        return record_from_wire(raw, decode_block)


def encode_block(block: Any) -> Any:
    if isinstance(block, ConsensusBlock):
        return block.to_dict()
    raise EncodingError(f"cannot encode block of type {type(block).__name__}")


def decode_block(raw: Any) -> ConsensusBlock:
    """A ledger block from its dict form; InvalidBlock (a LedgerError) when malformed."""
    return ConsensusBlock.from_dict(raw)
