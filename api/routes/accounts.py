"""Accounts (balance and next nonce) and miners (accepted/rejected results, credits, reputation)."""

from __future__ import annotations

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel

from api.core.errors import ERROR_RESPONSES
from api.deps import NodeDep
from api.routes.jobs import ResultOut

accounts_router = APIRouter(prefix="/accounts", tags=["accounts"])
miners_router = APIRouter(prefix="/miners", tags=["miners"])

ADDRESS = r"^[0-9a-f]{64}$"


class MinerStatsOut(BaseModel):
    accepted: int
    rejected: int
    missed: int
    earned: int
    slashed: int
    reputation: int


class AccountOut(BaseModel):
    address: str
    balance: int
    nonce: int
    """The nonce the account's next tx must carry (committed state)."""
    pending_txs: int
    """The account's txs waiting in this node's mempool."""
    miner: MinerStatsOut | None
    is_validator: bool


class MinerOut(BaseModel):
    address: str
    balance: int
    stats: MinerStatsOut


class MinerDetail(MinerOut):
    recent_results: list[ResultOut]


class MinersOut(BaseModel):
    miners: list[MinerOut]


@accounts_router.get("/{address}", response_model=AccountOut, responses=ERROR_RESPONSES)
async def get_account(
    node: NodeDep, address: str = Path(pattern=ADDRESS, description="Ed25519 public key, hex.")
) -> AccountOut:
    """Balance and next nonce of any address (unknown addresses hold zero), plus miner stats."""
    state = node.chain.state
    stats = state.miners.get(address)
    pending = node.mempool.pending_of(address)
    return AccountOut(
        address=address,
        balance=state.balance(address),
        nonce=state.nonce(address),
        pending_txs=pending,
        miner=MinerStatsOut(**stats.to_dict()) if stats else None,
        is_validator=address in node.genesis.validator_addresses,
    )


@miners_router.get("", response_model=MinersOut)
async def list_miners(node: NodeDep, limit: int = Query(100, ge=1, le=1000)) -> MinersOut:
    """Miners by reputation, best first."""
    state = node.chain.state
    return MinersOut(
        miners=[
            MinerOut(address=a, balance=state.balance(a), stats=MinerStatsOut(**s.to_dict()))
            for a, s in node.chain.store.list_miners(limit=limit)
        ]
    )


@miners_router.get("/{address}", response_model=MinerDetail, responses=ERROR_RESPONSES)
async def get_miner(node: NodeDep, address: str = Path(pattern=ADDRESS)) -> MinerDetail:
    """One miner's record and its most recent results."""
    state = node.chain.state
    stats = state.miners.get(address)
    if stats is None:
        from fastapi import HTTPException

        raise HTTPException(404, f"{address} has no results on the chain")
    return MinerDetail(
        address=address,
        balance=state.balance(address),
        stats=MinerStatsOut(**stats.to_dict()),
        recent_results=[ResultOut(**r) for r in node.chain.store.results_of_miner(address)],
    )
