"""Upload and download tensors (content-addressed, hash checked both ways)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Path, Query, Request, Response, status
from pydantic import BaseModel

from api.core.bodies import read_limited
from api.core.errors import ERROR_RESPONSES
from api.deps import NodeDep
from ledger.errors import TensorError

router = APIRouter(prefix="/tensors", tags=["tensors"])

HASH_PATTERN = r"^[0-9a-f]{64}$"
WIRE_TYPE = "application/octet-stream"


class TensorOut(BaseModel):
    """A stored tensor's identity and metadata."""

    hash: str
    dtype: str
    shape: list[int]
    frac_bits: int
    bytes: int
    """Size of the wire encoding."""
    created: bool
    """False when the node already held the tensor."""


_UPLOAD = {
    "requestBody": {
        "required": True,
        "content": {WIRE_TYPE: {"schema": {"type": "string", "format": "binary"}}},
        "description": "Tensor wire format (PROTOCOL.md §3).",
    }
}


async def _upload(request: Request, node: NodeDep, expected: str | None) -> TensorOut:
    blob = await read_limited(request, node.settings.max_tensor_bytes)
    tensor, created = node.put_tensor(blob, expected)
    if created:
        node.tensor_pusher.push(tensor.hash)  # replicate now, not when a block first names it
    return TensorOut(
        hash=tensor.hash,
        dtype=tensor.dtype_code,
        shape=list(tensor.shape),
        frac_bits=tensor.frac_bits,
        bytes=len(blob),
        created=created,
    )


_UPLOAD_ROUTE: dict[str, Any] = {
    "response_model": TensorOut,
    "status_code": status.HTTP_201_CREATED,
    "responses": ERROR_RESPONSES,
    "openapi_extra": _UPLOAD,
}


@router.put("", **_UPLOAD_ROUTE)
@router.post("", **_UPLOAD_ROUTE)
async def put_tensor(
    request: Request,
    node: NodeDep,
    hash: str | None = Query(None, pattern=HASH_PATTERN, description="Expected hash (checked)."),
) -> TensorOut:
    """Upload a tensor (wire format body); refused unless it parses, fits and matches `hash`."""
    return await _upload(request, node, hash)


@router.get(
    "/{tensor_hash}",
    response_class=Response,
    responses={
        200: {"content": {WIRE_TYPE: {"schema": {"type": "string", "format": "binary"}}}},
        **ERROR_RESPONSES,
    },
)
async def get_tensor(
    node: NodeDep, tensor_hash: str = Path(pattern=HASH_PATTERN, description="Tensor hash.")
) -> Response:
    """Download a tensor in wire format; the client should check the hash (X-Tensor-Hash)."""
    blob = node.tensor_bytes(tensor_hash)
    if blob is None:
        raise HTTPException(404, f"tensor {tensor_hash} is not stored on this node")
    return Response(blob, media_type=WIRE_TYPE, headers={"X-Tensor-Hash": tensor_hash})


def check_upload_hash(actual: str, expected: str | None) -> None:
    if expected is not None and actual != expected:
        raise TensorError(f"tensor hash {actual} does not match expected {expected}")
