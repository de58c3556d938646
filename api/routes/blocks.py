"""Committed blocks, newest first with cursor paging, and their commit certificates."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Path, Query
from pydantic import BaseModel

from api.core.errors import ERROR_RESPONSES
from api.deps import NodeDep
from ledger.blocks import validate_certificate
from ledger.errors import InvalidBlock

router = APIRouter(prefix="/blocks", tags=["blocks"])


class HeaderOut(BaseModel):
    chain_id: str
    height: int
    prev_hash: str
    time_ms: int
    proposer: str
    view: int
    tx_root: str
    app_hash: str
    n_txs: int


class BlockSummary(BaseModel):
    height: int
    hash: str
    state_root: str
    """State root after executing this block (the next header's app_hash)."""
    header: HeaderOut


class BlockPage(BaseModel):
    blocks: list[BlockSummary]
    next_before: int | None
    """Pass as `before` to get the next (older) page; null on the last page."""


class TxInBlock(BaseModel):
    index: int
    tx_hash: str
    tx: dict[str, Any]
    ok: bool
    code: str
    message: str


class BlockOut(BlockSummary):
    txs: list[TxInBlock]


class SignatureOut(BaseModel):
    validator: str
    signature: str


class CertificateOut(BaseModel):
    height: int
    view: int
    block_hash: str
    signatures: list[SignatureOut]
    valid: bool
    """Checked now against the genesis validator set (quorum of valid, distinct signatures)."""
    problem: str | None = None


def _resolve(node: NodeDep, ref: str) -> int:
    """A height from a height or a block hash (404 if unknown)."""
    if ref.isascii() and ref.isdigit():
        height = int(ref)
        if 1 <= height <= node.chain.height:
            return height
        raise HTTPException(404, f"no block at height {height}; the head is {node.chain.height}")
    if len(ref) == 64 and all(c in "0123456789abcdef" for c in ref):
        found = node.chain.store.height_of(ref)
        if found is None:
            raise HTTPException(404, f"no block has hash {ref}")
        return found
    raise HTTPException(422, "give a block height (integer) or a block hash (64 lowercase hex)")


@router.get("", response_model=BlockPage, responses=ERROR_RESPONSES)
async def list_blocks(
    node: NodeDep,
    before: int | None = Query(None, ge=1, le=2**62, description="Only heights below this."),
    limit: int = Query(20, ge=1, le=200),
) -> BlockPage:
    """Newest blocks first; follow `next_before` for older pages."""
    records = node.chain.store.list_blocks(before=before, limit=limit)
    blocks = [
        BlockSummary(
            height=r.header.height,
            hash=r.hash,
            state_root=r.state_root,
            header=HeaderOut(**r.header.to_dict()),
        )
        for r in records
    ]
    next_before = blocks[-1].height if len(blocks) == limit and blocks[-1].height > 1 else None
    return BlockPage(blocks=blocks, next_before=next_before)


@router.get("/{ref}", response_model=BlockOut, responses=ERROR_RESPONSES)
async def get_block(
    node: NodeDep, ref: str = Path(max_length=64, description="Height or block hash.")
) -> BlockOut:
    """One block by height or hash, with its txs and their receipts."""
    height = _resolve(node, ref)
    record = node.chain.store.get_block_record(height)
    if record is None:
        raise HTTPException(404, f"no block at height {height}")
    txs = [
        TxInBlock(
            index=t.index,
            tx_hash=t.tx.hash,
            tx=t.tx.to_dict(),
            ok=t.receipt.ok,
            code=t.receipt.code,
            message=t.receipt.message,
        )
        for t in node.chain.store.txs_of_block(height)
    ]
    return BlockOut(
        height=height,
        hash=record.hash,
        state_root=record.state_root,
        header=HeaderOut(**record.header.to_dict()),
        txs=txs,
    )


@router.get("/{ref}/certificate", response_model=CertificateOut, responses=ERROR_RESPONSES)
async def get_certificate(
    node: NodeDep, ref: str = Path(max_length=64, description="Height or block hash.")
) -> CertificateOut:
    """The commit certificate of a block, with its validity checked against the genesis set."""
    height = _resolve(node, ref)
    cert = node.chain.store.get_certificate(height)
    header = node.chain.store.get_header(height)
    if cert is None or header is None:
        raise HTTPException(404, f"no certificate stored for height {height}")
    problem = None
    try:
        validate_certificate(cert, node.genesis, header)
    except InvalidBlock as exc:
        problem = str(exc)
    return CertificateOut(
        height=cert.height,
        view=cert.view,
        block_hash=cert.block_hash,
        signatures=[SignatureOut(validator=a, signature=s) for a, s in cert.signatures],
        valid=problem is None,
        problem=problem,
    )
