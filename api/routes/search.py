"""Search by block height, block hash, tx hash, job id or address."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, HTTPException, Query
from pydantic import BaseModel

from api.core.errors import ERROR_RESPONSES
from api.deps import NodeDep
from ledger.encoding import HEX64

router = APIRouter(prefix="/search", tags=["search"])


class SearchOut(BaseModel):
    kind: Literal["block", "tx", "job", "account"]
    id: str
    """Height (blocks), hash, job id or address."""
    path: str
    """The REST path of what was found."""


@router.get("", response_model=SearchOut, responses=ERROR_RESPONSES)
async def search(
    node: NodeDep, q: str = Query(min_length=1, max_length=100, description="What to look for.")
) -> SearchOut:
    """Find a block (height or hash), a tx, a job or an account; 404 when nothing matches."""
    q = q.strip().lower()
    store = node.chain.store
    if q.isascii() and q.isdigit():
        height = int(q)
        if 1 <= height <= node.chain.height:
            return SearchOut(kind="block", id=str(height), path=f"/api/v1/blocks/{height}")
        raise HTTPException(404, f"no block at height {height}; the head is {node.chain.height}")
    if not HEX64.match(q):
        raise HTTPException(404, "nothing matches: give a height or a 64-hex hash or address")
    found = store.height_of(q)
    if found is not None:
        return SearchOut(kind="block", id=str(found), path=f"/api/v1/blocks/{found}")
    if q in node.chain.state.jobs:
        return SearchOut(kind="job", id=q, path=f"/api/v1/jobs/{q}")
    if q in node.chain.committed or q in node.mempool:
        return SearchOut(kind="tx", id=q, path=f"/api/v1/txs/{q}")
    state = node.chain.state
    if q in state.accounts or q in state.miners or q in node.genesis.validator_addresses:
        return SearchOut(kind="account", id=q, path=f"/api/v1/accounts/{q}")
    raise HTTPException(404, f"no block, tx, job or account {q}")
