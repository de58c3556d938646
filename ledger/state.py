"""The ledger state: accounts, jobs, miners and training runs, and how its root is chained.

The state is held in memory (the state machine in `ledger.execution` reads and changes it); the
store keeps a projection of it in SQL tables for queries and rebuilds it on restart. Every record
has a canonical dict form (`to_dict`), which is what a block's state diff lists and what the
state root hashes:

    root(0) = digest({"genesis_hash": genesis.hash})
    root(h) = SHA-256(bytes(root(h-1)) || canonical_json(diff(h)))

where diff(h) holds the final value of every record block h wrote (PROTOCOL.md §6.4).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from ledger.encoding import MAX_SAFE_INT, digest, sha256_hex
from ledger.errors import GenesisError, StoreError
from ledger.genesis import Genesis

# Job statuses (PROTOCOL.md §5.5).
WAITING = "waiting"
"""Some input is the output of a job that has not settled yet."""
OPEN = "open"
"""Commit phase: miners may commit (or, for replication 1, submit) results."""
REVEALING = "revealing"
"""Commit phase closed: committed miners reveal their outputs and salts."""
SETTLED = "settled"
"""Final: `outputs` is the chain's result for the job."""
EXPIRED = "expired"
"""Final: no miner produced a result in time (or an input expired); escrow refunded."""
FAILED = "failed"
"""Final: the job cannot be computed (kernel refused its inputs); escrow refunded."""
JOB_STATUSES = (WAITING, OPEN, REVEALING, SETTLED, EXPIRED, FAILED)
FINAL_STATUSES = (SETTLED, EXPIRED, FAILED)

# How a settled job got its outputs.
AGREED = "agreed"
"""Replication-many identical reveals, not audited."""
REEXECUTED = "reexecuted"
"""Reveals disagreed or were too few: the state machine computed the outputs itself."""
AUDITED = "audited"
"""Reveals agreed, and a random audit re-executed the job before releasing its outputs."""

# Per-miner verdicts on a job.
RIGHT = "right"
WRONG = "wrong"
MISSED = "missed"
"""Committed but never revealed."""


def _copy_json(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _copy_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy_json(v) for v in value]
    return value


@dataclass(slots=True)
class Account:
    """Credits and the next nonce of an address. Every address implicitly exists with zeros."""

    balance: int = 0
    nonce: int = 0
    """Nonce the next transaction from this address must carry."""

    def to_dict(self) -> dict[str, Any]:
        return {"balance": self.balance, "nonce": self.nonce}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Account:
        return cls(int(raw["balance"]), int(raw["nonce"]))

    def copy(self) -> Account:
        return Account(self.balance, self.nonce)


@dataclass(slots=True)
class MinerStats:
    """What the chain knows of a miner's record. Its credits are its account balance."""

    accepted: int = 0
    """Results found right (paid)."""
    rejected: int = 0
    """Results found wrong (slashed)."""
    missed: int = 0
    """Commitments never revealed (slashed)."""
    earned: int = 0
    """Total credits paid for right results."""
    slashed: int = 0
    """Total credits taken for wrong or missing results."""
    reputation: int = 0
    """+REPUTATION_GAIN per right result, -REPUTATION_PENALTY per wrong or missed one."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "accepted": self.accepted,
            "rejected": self.rejected,
            "missed": self.missed,
            "earned": self.earned,
            "slashed": self.slashed,
            "reputation": self.reputation,
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> MinerStats:
        return cls(**{f.name: int(raw[f.name]) for f in dataclasses.fields(cls)})

    def copy(self) -> MinerStats:
        return MinerStats(
            self.accepted, self.rejected, self.missed, self.earned, self.slashed, self.reputation
        )


@dataclass(slots=True)
class Run:
    """A training run: a name owned by the account that recorded its first checkpoint."""

    owner: str
    created_height: int
    last_epoch: int = -1
    last_model_hash: str = ""
    n_checkpoints: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "owner": self.owner,
            "created_height": self.created_height,
            "last_epoch": self.last_epoch,
            "last_model_hash": self.last_model_hash,
            "n_checkpoints": self.n_checkpoints,
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Run:
        return cls(
            str(raw["owner"]),
            int(raw["created_height"]),
            int(raw["last_epoch"]),
            str(raw["last_model_hash"]),
            int(raw["n_checkpoints"]),
        )

    def copy(self) -> Run:
        return Run(
            self.owner,
            self.created_height,
            self.last_epoch,
            self.last_model_hash,
            self.n_checkpoints,
        )


@dataclass(slots=True)
class Job:
    """A layer-compute job and everything the chain decided about it."""

    id: str
    """Hash of the post_job tx."""
    poster: str
    op: str
    kernel_version: str
    inputs: list[dict[str, Any]]
    """As posted: tensor refs with metadata, or {"job", "output"} refs."""
    params: dict[str, Any]
    replication: int
    reward: int
    """Escrowed at posting; paid to right miners, the rest refunded."""
    deadline: int
    """Length of the commit phase, in blocks, counted from the block where the job opens."""
    output_metas: list[dict[str, Any]]
    """{"dtype", "shape", "frac_bits"} of each output, from kernels.infer."""
    macs: int
    posted_height: int
    status: str = WAITING
    run: str | None = None
    label: str | None = None
    open_height: int | None = None
    commit_deadline: int | None = None
    """Last height whose end still belongs to the commit phase."""
    closed_height: int | None = None
    """Height where the commit phase closed."""
    reveal_deadline: int | None = None
    """Last height whose end still belongs to the reveal phase."""
    commits: dict[str, str] = field(default_factory=dict)
    """miner -> commitment."""
    reveals: dict[str, list[str]] = field(default_factory=dict)
    """miner -> revealed (or, for replication 1, submitted) output hashes."""
    outputs: list[str] | None = None
    """The settled output hashes."""
    settled_height: int | None = None
    """Height where the job reached a final status."""
    settlement: str | None = None
    """AGREED, REEXECUTED or AUDITED for settled jobs."""
    verdicts: dict[str, str] = field(default_factory=dict)
    """miner -> RIGHT / WRONG / MISSED, once final."""
    paid: dict[str, int] = field(default_factory=dict)
    slashed: dict[str, int] = field(default_factory=dict)
    refund: int = 0
    """Escrow returned to the poster."""
    reason: str = ""
    """Why a job expired or failed."""

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in _JOB_FIELDS}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Job:
        if set(raw) != set(_JOB_FIELDS):
            raise StoreError(f"job record fields differ: {sorted(set(raw) ^ set(_JOB_FIELDS))}")
        return cls(**_copy_json(raw))

    def copy(self) -> Job:
        """A copy safe to mutate as the state machine does: it only ever assigns fields and
        adds to the per-miner maps, never mutates inputs, params, output metas or a stored
        list of outputs, so those are shared."""
        job = object.__new__(Job)  # ~20x faster than dataclasses.replace for 30 fields
        for name in _JOB_FIELDS:
            setattr(job, name, getattr(self, name))
        job.commits = dict(self.commits)
        job.reveals = dict(self.reveals)
        job.verdicts = dict(self.verdicts)
        job.paid = dict(self.paid)
        job.slashed = dict(self.slashed)
        return job

    def input_jobs(self) -> list[str]:
        """Ids of the jobs whose outputs this job reads."""
        return [ref["job"] for ref in self.inputs if "job" in ref]


_JOB_FIELDS = tuple(f.name for f in dataclasses.fields(Job))


def initial_root(genesis: Genesis) -> str:
    """State root before block 1: it commits to the whole genesis (balances included)."""
    return digest({"genesis_hash": genesis.hash})


def next_root(prev_root: str, diff_bytes: bytes) -> str:
    """State root after a block: SHA-256 of the previous root's 32 bytes then the canonical diff."""
    return sha256_hex(bytes.fromhex(prev_root) + diff_bytes)


class State:
    """The whole ledger state in memory, plus indexes derived from it (never hashed).

    Mutated only by `ledger.execution.apply_block`, which works on an overlay and merges it only
    when the whole block executed, so a failed block leaves the state untouched.
    """

    def __init__(self, genesis: Genesis) -> None:
        supply = sum(genesis.balances.values())
        if supply > MAX_SAFE_INT:
            # Credits only move, are escrowed or burned, so no balance can ever exceed the genesis
            # supply: bounding it here keeps every balance inside the canonical integer range.
            raise GenesisError(f"genesis balances total {supply}, above {MAX_SAFE_INT}")
        self.genesis = genesis
        self.height = 0
        """Height of the last executed block."""
        self.root = initial_root(genesis)
        """State root after `height`."""
        self.block_hash = genesis.hash
        """Hash of the last executed block (the genesis hash before block 1)."""
        self.accounts: dict[str, Account] = {
            address: Account(balance=amount) for address, amount in genesis.balances.items()
        }
        self.jobs: dict[str, Job] = {}
        self.miners: dict[str, MinerStats] = {}
        self.runs: dict[str, Run] = {}
        self.schedule: dict[int, set[str]] = {}
        """height -> jobs with a phase deadline at the end of that height (may hold stale ids)."""
        self.dependents: dict[str, set[str]] = {}
        """job id -> waiting jobs that read its outputs."""

    @classmethod
    def from_genesis(cls, genesis: Genesis) -> State:
        return cls(genesis)

    @classmethod
    def from_records(
        cls,
        genesis: Genesis,
        *,
        height: int,
        root: str,
        block_hash: str,
        accounts: dict[str, Account],
        jobs: dict[str, Job],
        miners: dict[str, MinerStats],
        runs: dict[str, Run],
    ) -> State:
        """Rebuild a state (and its indexes) from stored records, e.g. on node restart."""
        state = cls(genesis)
        state.height, state.root, state.block_hash = height, root, block_hash
        state.accounts, state.jobs, state.miners, state.runs = accounts, jobs, miners, runs
        for job in jobs.values():
            state.index_job(job)
        return state

    def index_job(self, job: Job) -> None:
        """Record a job's pending deadline and DAG edges in the derived indexes."""
        if job.status == OPEN and job.commit_deadline is not None:
            self.schedule.setdefault(job.commit_deadline, set()).add(job.id)
        elif job.status == REVEALING and job.reveal_deadline is not None:
            self.schedule.setdefault(job.reveal_deadline, set()).add(job.id)
        elif job.status == WAITING:
            for parent in job.input_jobs():
                self.dependents.setdefault(parent, set()).add(job.id)

    def balance(self, address: str) -> int:
        account = self.accounts.get(address)
        return account.balance if account else 0

    def nonce(self, address: str) -> int:
        """The nonce the next tx from `address` must carry."""
        account = self.accounts.get(address)
        return account.nonce if account else 0

    def total_supply(self) -> int:
        """Credits in accounts plus credits escrowed in unfinished jobs (slashing burns credits)."""
        escrow = sum(j.reward for j in self.jobs.values() if j.status not in FINAL_STATUSES)
        return sum(a.balance for a in self.accounts.values()) + escrow
