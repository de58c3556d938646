"""Verify a range of the chain on the node with `ledger.verify.verify_ledger`, the very function
behind `layerchain verify`.

The check replays the chain from genesis, so it is CPU work proportional to the height: it runs
in a worker thread (the event loop, which drives consensus, stays responsive) and one at a time
per process (a second request waits for the first rather than doubling the load).
"""

from __future__ import annotations

import asyncio
import threading

from fastapi import APIRouter, HTTPException, Query
from pydantic import BaseModel

from api.core.errors import ERROR_RESPONSES
from api.deps import NodeDep
from ledger.verify import verify_ledger

router = APIRouter(prefix="/verify", tags=["verify"])

_ONE_AT_A_TIME = threading.Lock()


class VerifyOut(BaseModel):
    start: int
    end: int
    head: int
    ok: bool
    first_bad_height: int | None
    """The lowest height that failed a check (null on a pass)."""
    problem: str | None
    verified_height: int
    replayed: int
    blocks: int
    txs: int
    certificate_signatures: int
    reexecuted_jobs: int
    trusted_reexecutions: int
    state_root: str
    genesis_hash: str
    seconds: float
    notes: list[str]


@router.get("", response_model=VerifyOut, responses=ERROR_RESPONSES)
async def verify_chain(
    node: NodeDep,
    start: int | None = Query(None, alias="from", ge=1, le=2**62, description="First height."),
    end: int | None = Query(None, alias="to", ge=1, le=2**62, description="Last height (head)."),
    tensors: bool = Query(
        False, description="Recompute re-executed jobs from this node's tensors."
    ),
) -> VerifyOut:
    """Check links, signatures, certificates and replayed state roots of heights from..to."""
    head = node.chain.height
    if head == 0:
        raise HTTPException(404, "the chain has no blocks yet")
    lo = start or 1
    hi = min(end or head, head)
    if lo > hi:
        raise HTTPException(422, f"from ({lo}) must not be above to ({hi}); the head is {head}")
    store, genesis, tensor_store = node.chain.store, node.genesis, node.tensors

    def run() -> VerifyOut:
        with _ONE_AT_A_TIME:
            report = verify_ledger(
                store, genesis=genesis, tensors=tensor_store if tensors else None, start=lo, end=hi
            )
        fields = report.to_dict()
        fields["state_root"] = fields.pop("final_state_root")
        fields["seconds"] = round(fields["seconds"], 3)
        return VerifyOut(**fields)

    return await asyncio.to_thread(run)
