"""Node status and health."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from api.deps import NodeDep

router = APIRouter(tags=["status"])


class StatusOut(BaseModel):
    """Where this node stands."""

    chain_id: str
    genesis_hash: str
    node_name: str
    node_address: str
    height: int
    """Height of the last committed block (0 before the first)."""
    last_block_hash: str
    """Hash of that block (the genesis hash at height 0)."""
    last_block_time_ms: int
    view: int
    primary: str
    """Address of the primary of the current view."""
    mempool_txs: int
    peers_up: int
    validators: int
    syncing: bool
    """True while the node fetches committed blocks from peers (state transfer)."""
    uptime_s: int


class HealthOut(BaseModel):
    """Real health: answered 200 only when every check passes, 503 otherwise."""

    ok: bool
    database: bool
    """The ledger database answers a query."""
    consensus: bool
    """The consensus driver is running (its tick loop is alive)."""
    height: int
    detail: str


@router.get("/status", response_model=StatusOut)
async def status(node: NodeDep) -> StatusOut:
    """Chain id, height, view and primary, mempool size and peers as this node sees them."""
    return StatusOut(**node.status())


@router.get("/health", response_model=HealthOut, responses={503: {"model": HealthOut}})
async def health(node: NodeDep) -> JSONResponse:
    """200 when the database answers and consensus runs; 503 (same body) when not."""
    report = HealthOut(**node.health())
    return JSONResponse(report.model_dump(), status_code=200 if report.ok else 503)
