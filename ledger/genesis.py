"""The genesis file: the one thing an auditor trusts. Chain id, validator set, parameters, balances.

Everything else on the chain is checked against it: certificates against its validator set,
signatures against its chain id, job limits against its parameters.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from ledger.certificate import quorum_size
from ledger.encoding import EncodingError, digest, parse_json
from ledger.errors import GenesisError, IdentityError
from ledger.identity import check_address


@dataclass(frozen=True)
class Params:
    """Chain parameters. Every field is an integer so the genesis hash is canonical."""

    replication: int = 2
    """Default number of independent miners whose matching results settle a job (r)."""
    reward_per_job: int = 10
    """Default reward, in credits, escrowed per job and split among the miners who were right."""
    commit_blocks: int = 20
    """Blocks after posting (or after becoming runnable) in which miners may commit results."""
    reveal_blocks: int = 20
    """Blocks after the commit phase closes in which committed miners must reveal."""
    slash_amount: int = 20
    """Credits taken from a miner whose revealed result was wrong."""
    audit_rate_ppm: int = 20_000
    """Parts per million of settled jobs that are re-executed as a random audit."""
    max_job_macs: int = 1 << 28
    """Upper bound on a job's multiply-accumulates, so re-execution cannot stall consensus."""
    max_tensor_elements: int = 1 << 22
    """Largest tensor a job may read or write."""
    max_block_txs: int = 2000
    """Most transactions in one block."""
    max_tx_bytes: int = 16_384
    """Largest canonical transaction encoding."""
    checkpoint_interval: int = 16
    """PBFT checkpoint period K, in blocks."""
    watermark_window: int = 32
    """PBFT high watermark = stable checkpoint + this many heights."""

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Params:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(raw) - known
        if unknown:
            raise GenesisError(f"unknown genesis parameters: {sorted(unknown)}")
        for key, value in raw.items():
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise GenesisError(f"genesis parameter {key} must be a non-negative integer")
        return cls(**raw)


@dataclass(frozen=True)
class Validator:
    """A member of the validator set."""

    address: str
    """Ed25519 public key, hex."""
    name: str = ""
    """Human-friendly name shown by the explorer."""
    url: str = ""
    """Base URL of the node's HTTP server (peers reach /p2p there)."""


@dataclass(frozen=True)
class Genesis:
    """The parsed genesis file."""

    chain_id: str
    validators: tuple[Validator, ...]
    params: Params = field(default_factory=Params)
    balances: dict[str, int] = field(default_factory=dict)
    genesis_time_ms: int = 0

    @cached_property
    def validator_addresses(self) -> tuple[str, ...]:
        """Asked for every peer message and push a validator receives: computed once."""
        return tuple(v.address for v in self.validators)

    @property
    def n(self) -> int:
        return len(self.validators)

    @property
    def f(self) -> int:
        """Most faulty validators tolerated: the largest f with n >= 3f + 1."""
        return (self.n - 1) // 3

    @property
    def quorum(self) -> int:
        """Votes needed for a certificate: any two quorums share at least f + 1 validators.

        For n = 3f + 1 this is 2f + 1; for other n it is ceil((n + f + 1) / 2).
        """
        return quorum_size(self.n)

    def to_dict(self) -> dict[str, Any]:
        return {
            "chain_id": self.chain_id,
            "genesis_time_ms": self.genesis_time_ms,
            "validators": [dataclasses.asdict(v) for v in self.validators],
            "params": dataclasses.asdict(self.params),
            "balances": dict(sorted(self.balances.items())),
        }

    @property
    def hash(self) -> str:
        """Digest of the canonical genesis; the prev_hash of block 1."""
        return digest(self.to_dict())

    @classmethod
    def from_dict(cls, raw: Any) -> Genesis:
        if not isinstance(raw, dict):
            raise GenesisError("genesis must be a JSON object")
        required = {"chain_id", "validators"}
        missing = required - set(raw)
        if missing:
            raise GenesisError(f"genesis is missing {sorted(missing)}")
        unknown = set(raw) - {"chain_id", "validators", "params", "balances", "genesis_time_ms"}
        if unknown:
            raise GenesisError(f"unknown genesis fields: {sorted(unknown)}")
        chain_id = raw["chain_id"]
        if not isinstance(chain_id, str) or not 1 <= len(chain_id) <= 64:
            raise GenesisError("chain_id must be a string of 1 to 64 characters")
        validators = []
        for item in raw["validators"]:
            if not isinstance(item, dict) or "address" not in item:
                raise GenesisError("each validator needs at least an address")
            try:
                check_address(item["address"])
            except IdentityError as exc:
                raise GenesisError(f"validator address: {exc}") from exc
            validators.append(
                Validator(item["address"], str(item.get("name", "")), str(item.get("url", "")))
            )
        if not validators:
            raise GenesisError("the validator set is empty")
        if len({v.address for v in validators}) != len(validators):
            raise GenesisError("the validator set lists an address twice")
        balances = raw.get("balances", {})
        if not isinstance(balances, dict):
            raise GenesisError("balances must map addresses to integers")
        for address, amount in balances.items():
            try:
                check_address(address)
            except IdentityError as exc:
                raise GenesisError(f"balance address: {exc}") from exc
            if not isinstance(amount, int) or isinstance(amount, bool) or amount < 0:
                raise GenesisError(f"balance of {address} must be a non-negative integer")
        time_ms = raw.get("genesis_time_ms", 0)
        if not isinstance(time_ms, int) or isinstance(time_ms, bool) or time_ms < 0:
            raise GenesisError("genesis_time_ms must be a non-negative integer")
        return cls(
            chain_id=chain_id,
            validators=tuple(validators),
            params=Params.from_dict(raw.get("params", {})),
            balances=dict(balances),
            genesis_time_ms=time_ms,
        )

    @classmethod
    def load(cls, path: str | Path) -> Genesis:
        try:
            text = Path(path).read_bytes()
        except OSError as exc:
            raise GenesisError(f"cannot read genesis file {path}: {exc.strerror}") from exc
        try:
            return cls.from_dict(parse_json(text))
        except EncodingError as exc:
            raise GenesisError(f"genesis file {path}: {exc}") from exc

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")
