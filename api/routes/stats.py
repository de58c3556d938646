"""Chain overview (the explorer's home) and per-validator activity: proposed, signed, missed."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query
from pydantic import BaseModel

from api.deps import NodeDep
from api.explorer.indexes import validator_index
from api.routes import validators as validators_route
from api.routes.blocks import BlockSummary, HeaderOut
from api.routes.jobs import JobOut, job_out
from ledger.store import Store

router = APIRouter(prefix="/stats", tags=["stats"])

RATE_WINDOW = 50
"""Blocks the tx rate is measured over."""
RECENT_BLOCKS = 20
"""A validator whose signature is in one of the last this-many certificates is "signing"."""


class RateOut(BaseModel):
    txs_per_s: float
    """Transactions committed per second over the last `blocks` blocks (by header time)."""
    blocks_per_min: float
    blocks: int
    txs: int
    seconds: float


class OverviewOut(BaseModel):
    chain_id: str
    genesis_hash: str
    node_name: str
    height: int
    last_block_hash: str
    last_block_time_ms: int
    view: int
    primary: str
    primary_name: str
    validators: int
    validators_up: int
    """Validators this node can reach, itself included."""
    validators_signing: int
    """Validators whose signature is in one of the last RECENT_BLOCKS certificates (on-chain)."""
    quorum: int
    mempool_txs: int
    syncing: bool
    rate: RateOut
    job_counts: dict[str, int]
    latest_blocks: list[BlockSummary]
    latest_jobs: list[JobOut]


class ValidatorStatsOut(BaseModel):
    index: int
    address: str
    name: str
    url: str
    is_primary: bool
    is_self: bool
    reachable: bool
    proposed: int
    signed: int
    """Blocks whose commit certificate carries this validator's signature."""
    missed: int
    """Blocks whose certificate does not (a quorum of 2f + 1 suffices)."""
    last_proposed: int | None
    last_signed: int | None
    signing: bool
    """Its signature is in one of the last RECENT_BLOCKS certificates."""


class ValidatorStatsPage(BaseModel):
    height: int
    """The counts cover heights 1..height."""
    view: int
    primary: str
    n: int
    f: int
    quorum: int
    view_changes: int
    """Blocks committed in a higher view than the block before them."""
    validators: list[ValidatorStatsOut]


def signing(counts: dict[str, Any], height: int) -> bool:
    last = counts["last_signed"]
    return last is not None and last > height - RECENT_BLOCKS


_JOB_COUNTS: dict[str, tuple[int, dict[str, int]]] = {}


def job_counts(store: Store, head: int) -> dict[str, int]:
    """Jobs per status, counted once per block: the count reads the whole `ix_jobs_status`
    index (about 1 ms per 10,000 jobs), so readers between two blocks share it."""
    hit = _JOB_COUNTS.get(store.url)
    if hit is None or hit[0] != head:
        hit = (head, store.job_counts())
        _JOB_COUNTS[store.url] = hit
    return dict(hit[1])


def tx_rate(node: NodeDep, window: int = RATE_WINDOW) -> RateOut:
    """Committed txs per second over the last `window` blocks, by their header times."""
    records = node.chain.store.list_blocks(limit=window + 1)
    if len(records) < 2:
        return RateOut(txs_per_s=0.0, blocks_per_min=0.0, blocks=len(records), txs=0, seconds=0.0)
    newest, oldest = records[0].header, records[-1].header
    seconds = max((newest.time_ms - oldest.time_ms) / 1000, 0.001)
    txs = sum(r.header.n_txs for r in records[:-1])
    blocks = len(records) - 1
    return RateOut(
        txs_per_s=round(txs / seconds, 2),
        blocks_per_min=round(blocks * 60 / seconds, 2),
        blocks=blocks,
        txs=txs,
        seconds=round(seconds, 3),
    )


@router.get("/overview", response_model=OverviewOut)
async def overview(
    node: NodeDep,
    blocks: int = Query(10, ge=1, le=100, description="Latest blocks to include."),
    jobs: int = Query(10, ge=0, le=100, description="Latest jobs to include."),
) -> OverviewOut:
    """Head, tx rate, validators up, view and primary, latest blocks and jobs (explorer home)."""
    status = node.status()
    vals = await validators_route.validators(node)
    names = {v.address: v.name for v in vals.validators}
    store = node.chain.store
    index = validator_index(store, node.chain.height)
    latest = [
        BlockSummary(
            height=r.header.height,
            hash=r.hash,
            state_root=r.state_root,
            header=HeaderOut(**r.header.to_dict()),
        )
        for r in store.list_blocks(limit=blocks)
    ]
    recent = store.list_jobs(newest_first=True, limit=jobs) if jobs else []
    latest_jobs = [JobOut(**job_out(node, j)) for j in recent]
    return OverviewOut(
        chain_id=status["chain_id"],
        genesis_hash=status["genesis_hash"],
        node_name=status["node_name"],
        height=status["height"],
        last_block_hash=status["last_block_hash"],
        last_block_time_ms=status["last_block_time_ms"],
        view=vals.view,
        primary=vals.primary,
        primary_name=names.get(vals.primary, ""),
        validators=vals.n,
        validators_up=sum(1 for v in vals.validators if v.reachable),
        validators_signing=sum(
            1 for v in vals.validators if signing(index.counts(v.address), index.height)
        ),
        quorum=vals.quorum,
        mempool_txs=status["mempool_txs"],
        syncing=status["syncing"],
        rate=tx_rate(node),
        job_counts=job_counts(store, node.chain.height),
        latest_blocks=latest,
        latest_jobs=latest_jobs,
    )


@router.get("/validators", response_model=ValidatorStatsPage)
async def validator_stats(node: NodeDep) -> ValidatorStatsPage:
    """Each genesis validator's blocks proposed, certificates signed and missed; reachability."""
    vals = await validators_route.validators(node)
    index = validator_index(node.chain.store, node.chain.height)
    items = [
        ValidatorStatsOut(
            index=v.index,
            address=v.address,
            name=v.name,
            url=v.url,
            is_primary=v.is_primary,
            is_self=v.is_self,
            reachable=v.reachable,
            signing=signing(index.counts(v.address), index.height),
            **index.counts(v.address),
        )
        for v in vals.validators
    ]
    return ValidatorStatsPage(
        height=index.height,
        view=vals.view,
        primary=vals.primary,
        n=vals.n,
        f=vals.f,
        quorum=vals.quorum,
        view_changes=index.view_changes,
        validators=items,
    )
