"""Peer-to-peer endpoints under /p2p: message batches, state transfer, tensor replication, admin.

Only validators of the genesis set may post batches; each batch is signed by its sender (see
api/p2p/transport.py and docs/PROTOCOL.md §8). The read endpoints (status, blocks, tensors) are
open: everything they serve is verifiable on its own (certificates, content hashes).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, BackgroundTasks, HTTPException, Path, Query, Request, Response
from pydantic import BaseModel, Field

from api.core.bodies import read_limited
from api.core.errors import ERROR_RESPONSES
from api.core.node import Node
from api.deps import NodeDep
from api.p2p.transport import FROM_HEADER, SIG_HEADER, check_batch_signature

router = APIRouter(prefix="/p2p", tags=["p2p"])

MAX_BLOCKS_PER_REQUEST = 200
HASH_PATTERN = r"^[0-9a-f]{64}$"


class BatchOut(BaseModel):
    consensus: int
    """Consensus messages received (decoded and handed to the core after this answer)."""
    txs: int
    """Gossiped txs received (queued for admission)."""


class PeerStatusOut(BaseModel):
    address: str
    height: int
    last_block_hash: str
    view: int


class BlocksOut(BaseModel):
    """Committed blocks with their commit certificates, in height order."""

    blocks: list[dict[str, Any]] = Field(description='[{"block": {...}, "certificate": {...}}]')
    height: int
    """The serving node's height (a client fetching a range knows whether to ask again)."""


class PartitionIn(BaseModel):
    isolated: bool


class PartitionOut(BaseModel):
    isolated: bool


@router.post(
    "/batch",
    response_model=BatchOut,
    responses={**ERROR_RESPONSES, 401: ERROR_RESPONSES[422], 403: ERROR_RESPONSES[422]},
)
async def batch(request: Request, node: NodeDep, background: BackgroundTasks) -> BatchOut:
    """A signed batch of consensus messages and gossiped txs from another validator."""
    out, deliver = await handle_batch(request, node)
    background.add_task(deliver)  # after the answer is sent, as `api.hotpaths` does
    return out


async def handle_batch(request: Request, node: Node) -> tuple[BatchOut, Callable[[], None]]:
    """The /p2p/batch checks, shared by the route and `api.hotpaths`: the answer, and the
    `deliver` step to run once it is sent (see `Node.receive_batch`)."""
    sender = request.headers.get(FROM_HEADER, "")
    signature = request.headers.get(SIG_HEADER)
    if sender not in node.genesis.validator_addresses or sender == node.key.address:
        raise HTTPException(403, "batches are accepted only from the other genesis validators")
    body = await read_limited(request, node.settings.max_body_bytes * 4)
    signed = signature is not None
    if signature is not None and not check_batch_signature(
        sender, node.genesis.chain_id, body, signature
    ):
        raise HTTPException(401, "batch signature is not the sender's")
    if node.peers.isolated:
        raise HTTPException(503, "this node is partitioned away (test admin switch)")
    consensus, txs, deliver = node.receive_batch(sender, body, signed=signed)
    return BatchOut(consensus=consensus, txs=txs), deliver


@router.get("/status", response_model=PeerStatusOut)
async def peer_status(node: NodeDep) -> PeerStatusOut:
    """Height and view, for peers deciding whether they need state transfer."""
    if node.peers.isolated:
        raise HTTPException(503, "this node is partitioned away (test admin switch)")
    status = node.status()
    return PeerStatusOut(
        address=node.key.address,
        height=status["height"],
        last_block_hash=status["last_block_hash"],
        view=status["view"],
    )


class NewViewOut(BaseModel):
    view: int
    new_view: dict[str, Any] | None
    """The signed NEW-VIEW that installed `view` (null in view 0): a replica that missed the
    view change feeds it to its core, which verifies it like any NEW-VIEW."""


@router.get("/new-view", response_model=NewViewOut)
async def new_view(node: NodeDep) -> NewViewOut:
    """The NEW-VIEW message of this node's current view, for peers stuck in an older view."""
    if node.peers.isolated:
        raise HTTPException(503, "this node is partitioned away (test admin switch)")
    replica = node.replica
    if replica is None or replica.new_view is None or not replica.active:
        return NewViewOut(view=replica.view if replica else 0, new_view=None)
    return NewViewOut(view=replica.view, new_view=node.codec.encode_message(replica.new_view))


@router.get("/blocks", response_model=BlocksOut, responses=ERROR_RESPONSES)
async def blocks(
    node: NodeDep,
    start: int = Query(alias="from", ge=1, description="First height."),
    to: int | None = Query(None, ge=1, description="Last height (inclusive)."),
) -> BlocksOut:
    """State transfer: committed blocks with certificates for heights [from, to] (bounded)."""
    if node.peers.isolated:
        raise HTTPException(503, "this node is partitioned away (test admin switch)")
    height = node.chain.height
    last = min(to if to is not None else height, height, start + MAX_BLOCKS_PER_REQUEST - 1)
    items = node.chain.blocks_with_certificates(start, last) if last >= start else []
    return BlocksOut(blocks=items, height=height)


@router.get(
    "/tensors/{tensor_hash}",
    response_class=Response,
    responses={200: {"content": {"application/octet-stream": {}}}, **ERROR_RESPONSES},
)
async def tensor(node: NodeDep, tensor_hash: str = Path(pattern=HASH_PATTERN)) -> Response:
    """Tensor replication: a peer fetches a tensor a block references (it checks the hash)."""
    if node.peers.isolated:
        raise HTTPException(503, "this node is partitioned away (test admin switch)")
    blob = node.tensor_bytes(tensor_hash)
    if blob is None:
        raise HTTPException(404, f"tensor {tensor_hash} is not stored on this node")
    return Response(blob, media_type="application/octet-stream")


class CensorIn(BaseModel):
    senders: list[str]


class CensorOut(BaseModel):
    senders: list[str]


@router.post("/admin/censor", response_model=CensorOut, include_in_schema=False)
async def censor(body: CensorIn, node: NodeDep) -> CensorOut:
    """Test-only: as primary, leave out every tx of these senders (a censoring primary)."""
    if not node.settings.test_admin:
        raise HTTPException(404, "Not Found")
    node.censored = set(body.senders)
    return CensorOut(senders=sorted(node.censored))


@router.post("/admin/partition", response_model=PartitionOut, include_in_schema=False)
async def partition(body: PartitionIn, node: NodeDep) -> PartitionOut:
    """Test-only: cut this node off from its peers in both directions, or heal it."""
    if not node.settings.test_admin:
        raise HTTPException(404, "Not Found")
    node.peers.isolated = body.isolated
    return PartitionOut(isolated=body.isolated)
