"""Submit transactions and read them back with their receipts."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Path, Request, status
from pydantic import BaseModel, Field

from api.core.bodies import read_json
from api.core.errors import ERROR_RESPONSES
from api.deps import NodeDep
from ledger.lightclient import build_tx_proof

router = APIRouter(prefix="/txs", tags=["txs"])

HASH_PATTERN = r"^[0-9a-f]{64}$"


class TxIn(BaseModel):
    """A signed transaction in wire form (PROTOCOL.md §5): envelope fields plus signature."""

    type: str
    sender: str
    nonce: int
    body: dict[str, Any]
    signature: str


class TxBatchIn(BaseModel):
    txs: list[dict[str, Any]] = Field(description="Signed transactions in wire form.")


class TxAccepted(BaseModel):
    """A tx passed the stateless checks (form, size, signature, nonce not used) and was queued."""

    tx_hash: str
    status: str
    """`accepted` (new), `pending` (already queued) or `committed` (already in a block)."""


class TxBatchItem(BaseModel):
    tx_hash: str | None
    accepted: bool
    status: str
    error: str | None = None


class TxBatchOut(BaseModel):
    accepted: int
    rejected: int
    results: list[TxBatchItem]


class ReceiptOut(BaseModel):
    ok: bool
    code: str
    """`ok` or a failure code (PROTOCOL.md §5.4)."""
    message: str


class TxOut(BaseModel):
    tx_hash: str
    status: str
    """`pending` (in the mempool) or `committed`."""
    tx: dict[str, Any]
    height: int | None = None
    index: int | None = None
    """Position of the tx in its block."""
    block_hash: str | None = None
    receipt: ReceiptOut | None = None


def _tx_openapi() -> dict[str, Any]:
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": TxIn.model_json_schema()}},
        }
    }


@router.post(
    "",
    response_model=TxAccepted,
    status_code=status.HTTP_202_ACCEPTED,
    responses={**ERROR_RESPONSES, 409: ERROR_RESPONSES[422], 503: ERROR_RESPONSES[422]},
    openapi_extra=_tx_openapi(),
)
async def submit_tx(request: Request, node: NodeDep) -> TxAccepted:
    """Submit one signed tx; stateless failures are answered at once with 4xx and the reason."""
    raw = await read_json(request, node.settings.max_body_bytes)
    tx_hash, state = node.submit_tx(raw, source="rest")
    return TxAccepted(tx_hash=tx_hash, status=state)


@router.post(
    "/batch",
    response_model=TxBatchOut,
    status_code=status.HTTP_202_ACCEPTED,
    responses={**ERROR_RESPONSES, 503: ERROR_RESPONSES[422]},
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": TxBatchIn.model_json_schema()}},
        }
    },
)
async def submit_batch(request: Request, node: NodeDep) -> TxBatchOut:
    """Submit many signed txs in one request; each is accepted or refused on its own."""
    raw = await read_json(request, node.settings.max_body_bytes)
    if not isinstance(raw, dict) or set(raw) != {"txs"} or not isinstance(raw["txs"], list):
        raise HTTPException(422, 'body must be {"txs": [<signed tx>, ...]}')
    if len(raw["txs"]) > node.settings.max_batch_txs:
        raise HTTPException(
            413, f"{len(raw['txs'])} txs in one batch; the limit is {node.settings.max_batch_txs}"
        )
    results = [TxBatchItem(**item) for item in await node.submit_txs_async(raw["txs"])]
    accepted = sum(1 for r in results if r.accepted)
    return TxBatchOut(accepted=accepted, rejected=len(results) - accepted, results=results)


@router.get("/{tx_hash}", response_model=TxOut, responses=ERROR_RESPONSES)
async def get_tx(
    node: NodeDep, tx_hash: str = Path(pattern=HASH_PATTERN, description="The tx hash.")
) -> TxOut:
    """A tx by hash: pending in the mempool, or committed with its block position and receipt."""
    found = node.find_tx(tx_hash)
    if found is None:
        raise HTTPException(404, f"no transaction {tx_hash} is pending or committed")
    return TxOut(**found)


class MerkleStep(BaseModel):
    side: str
    """`L` or `R`: which side of the running node this sibling is on."""
    hash: str


class TxProofOut(BaseModel):
    """A tx inclusion proof (PROTOCOL.md §6.2, `ledger.lightclient`): checkable with the genesis
    alone (`layerchain verify-proof`)."""

    tx: dict[str, Any]
    height: int
    index: int
    header: dict[str, Any]
    merkle_path: list[MerkleStep]
    certificate: dict[str, Any]


@router.get("/{tx_hash}/proof", response_model=TxProofOut, responses=ERROR_RESPONSES)
async def get_tx_proof(
    node: NodeDep, tx_hash: str = Path(pattern=HASH_PATTERN, description="The tx hash.")
) -> TxProofOut:
    """The proof that a committed tx is in a certified block: the tx, its block's header, the
    Merkle path to the header's tx_root and the block's commit certificate."""
    proof = build_tx_proof(node.chain.store, tx_hash)
    if proof is None:
        raise HTTPException(404, f"no transaction {tx_hash} is stored in a committed block here")
    return TxProofOut(**proof.to_dict())
