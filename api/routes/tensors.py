"""Upload and download tensors (content-addressed, hash checked both ways).

`POST /tensors/batch` uploads several at once (a miner's outputs that queued while its previous
upload was in flight): one request instead of one each, with the framing of `GET /work/tensors`
and `POST /p2p/tensors`.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Path, Query, Request, Response, status
from pydantic import BaseModel

from api.core.bodies import read_limited
from api.core.errors import ERROR_RESPONSES
from api.deps import NodeDep
from api.p2p.tensorpush import LENGTH, decode_tensor_batch
from ledger.errors import TensorError
from ledger.tensor import Tensor

router = APIRouter(prefix="/tensors", tags=["tensors"])

HASH_PATTERN = r"^[0-9a-f]{64}$"
WIRE_TYPE = "application/octet-stream"
#: Most tensors in one `POST /tensors/batch` (like `GET /work/tensors`).
MAX_BATCH_TENSORS = 64


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
    return _store(node, blob, expected)


def _store(node: NodeDep, blob: bytes, expected: str | None) -> TensorOut:
    """Verify and store one uploaded tensor; a new one is pushed on to the other validators at
    once (replicated now, not when a block first names it)."""
    tensor, created = node.put_tensor(blob, expected)
    return _answer(node, tensor, len(blob), created)


def _answer(node: NodeDep, tensor: Tensor, size: int, created: bool) -> TensorOut:
    """What an upload answers for a stored tensor; a new one is pushed on at once."""
    if created:
        node.tensor_pusher.push(tensor.hash)
    return TensorOut(
        hash=tensor.hash,
        dtype=tensor.dtype_code,
        shape=list(tensor.shape),
        frac_bits=tensor.frac_bits,
        bytes=size,
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


class TensorBatchOut(BaseModel):
    """What a batch upload stored: one entry per tensor, in the order sent."""

    tensors: list[TensorOut]


@router.post(
    "/batch",
    response_model=TensorBatchOut,
    status_code=status.HTTP_201_CREATED,
    responses=ERROR_RESPONSES,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {WIRE_TYPE: {"schema": {"type": "string", "format": "binary"}}},
            "description": "(u32 big-endian length || tensor wire bytes (PROTOCOL.md §3))*, "
            f"1 to {MAX_BATCH_TENSORS} tensors.",
        }
    },
)
async def put_tensors(request: Request, node: NodeDep) -> TensorBatchOut:
    """Upload several tensors in one request; each is parsed and verified like a single upload.

    The whole body is bounded by the single-tensor limit (plus framing), and a bad item is
    refused naming its index; the items before it are stored (content addressing makes that
    harmless), nothing after it is. The client checks the answered hashes against its own."""
    limit = node.settings.max_tensor_bytes + MAX_BATCH_TENSORS * LENGTH.size
    body = await read_limited(request, limit)
    blobs = decode_tensor_batch(body)
    if not 1 <= len(blobs) <= MAX_BATCH_TENSORS:
        raise HTTPException(422, f"send 1 to {MAX_BATCH_TENSORS} tensors, not {len(blobs)}")
    stored = node.put_tensors(blobs, lambda i: f"tensor {i} of the batch")
    return TensorBatchOut(
        tensors=[
            _answer(node, tensor, len(blob), created)
            for (tensor, created), blob in zip(stored, blobs, strict=True)
        ]
    )


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
