"""The fixed parameters of a consensus instance, taken from the genesis file plus local timeouts."""

from __future__ import annotations

from dataclasses import dataclass

from ledger.certificate import quorum_size
from ledger.genesis import Genesis


@dataclass(frozen=True)
class ConsensusConfig:
    """Everything every replica of one chain must agree on, and this node's timeouts."""

    chain_id: str
    validators: tuple[str, ...]
    """Validator addresses in genesis order; the primary of view v is validators[v % n]."""
    genesis_hash: str
    """prev_hash of block 1."""
    checkpoint_interval: int = 16
    """K: a CHECKPOINT is signed after every K-th committed height."""
    watermark_window: int = 32
    """L: heights in (stable checkpoint, stable checkpoint + L] are accepted."""
    max_block_txs: int = 2000
    view_timeout_ms: int = 2000
    """Base view-change timeout; doubles with every consecutive view change without progress."""
    max_backoff_exponent: int = 6
    fetch_timeout_ms: int = 2000
    """State transfer: ask the next peer after this long without an answer."""
    max_pending_txs: int = 100_000
    """Bound on the client txs a replica holds (beyond it, new txs are dropped; clients retry)."""

    def __post_init__(self) -> None:
        if not self.validators:
            raise ValueError("the validator set is empty")
        if self.checkpoint_interval < 1 or self.watermark_window < self.checkpoint_interval:
            raise ValueError("need 1 <= checkpoint_interval <= watermark_window")

    @property
    def n(self) -> int:
        return len(self.validators)

    @property
    def f(self) -> int:
        return (self.n - 1) // 3

    @property
    def quorum(self) -> int:
        return quorum_size(self.n)

    def primary(self, view: int) -> str:
        return self.validators[view % self.n]

    @classmethod
    def from_genesis(cls, genesis: Genesis, **local: int) -> ConsensusConfig:
        """Chain parameters from `genesis`; `local` overrides the timeouts (view_timeout_ms...)."""
        return cls(
            chain_id=genesis.chain_id,
            validators=genesis.validator_addresses,
            genesis_hash=genesis.hash,
            checkpoint_interval=genesis.params.checkpoint_interval,
            watermark_window=genesis.params.watermark_window,
            max_block_txs=genesis.params.max_block_txs,
            **local,
        )
