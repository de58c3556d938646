"""`POST /p2p/tensors`: the receiving end of tensor replication by push (api/p2p/tensorpush.py)."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request
from pydantic import BaseModel

from api.core.bodies import read_limited
from api.core.errors import ERROR_RESPONSES
from api.deps import NodeDep
from api.p2p.tensorpush import BATCH_BYTES, LENGTH, decode_tensor_batch
from api.p2p.transport import FROM_HEADER, SIG_HEADER, check_batch_signature

router = APIRouter(prefix="/p2p", tags=["p2p"])


class TensorPushOut(BaseModel):
    stored: int
    """Tensors this node did not hold before."""
    received: int


@router.post(
    "/tensors",
    response_model=TensorPushOut,
    responses={**ERROR_RESPONSES, 401: ERROR_RESPONSES[422], 403: ERROR_RESPONSES[422]},
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/octet-stream": {"schema": {"type": "string"}}},
            "description": "(u32 big-endian length || tensor wire bytes)*, PROTOCOL.md §8.4.",
        }
    },
)
async def receive_tensors(request: Request, node: NodeDep) -> TensorPushOut:
    """Tensors pushed by another validator (signed like a message batch); each hash-checked."""
    sender = request.headers.get(FROM_HEADER, "")
    if sender not in node.genesis.validator_addresses or sender == node.key.address:
        raise HTTPException(403, "tensor pushes are accepted only from the other validators")
    limit = node.settings.max_tensor_bytes + BATCH_BYTES + LENGTH.size
    body = await read_limited(request, limit)
    if not check_batch_signature(
        sender, node.genesis.chain_id, body, request.headers.get(SIG_HEADER, "")
    ):
        raise HTTPException(401, "tensor push signature is not the sender's")
    if node.peers.isolated:
        raise HTTPException(503, "this node is partitioned away (test admin switch)")
    blobs = decode_tensor_batch(body)
    stored = sum(new for _, new in node.put_tensors(blobs, lambda i: f"pushed tensor {i}"))
    if stored:
        node.metrics.tensors_fetched.inc(stored)
    return TensorPushOut(stored=stored, received=len(blobs))
