"""Newest-first listings with cursors: jobs, an account's txs, a miner's results (and as CSV).

Every listing is one indexed range query (`ix_jobs_order`, `ix_txs_sender`, `ix_results_miner`)
with a cursor taken from the last row of the previous page, so a page costs the same on block
10 and on block 10 million.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query
from fastapi.responses import StreamingResponse
from pydantic import BaseModel
from sqlalchemy import and_, select

from api.core.errors import ERROR_RESPONSES
from api.deps import NodeDep
from api.routes.jobs import JobOut, ResultOut, Status, job_out
from ledger import schema
from ledger.encoding import HEX64
from ledger.state import Job
from ledger.store import Store
from ledger.transactions import RESULT_TYPES, result_items_of

router = APIRouter(prefix="/feed", tags=["feed"])

ADDRESS = r"^[0-9a-f]{64}$"
CSV_FIELDS = ("job_id", "miner", "verdict", "paid", "slashed", "updated_height", "commitment")


class JobFeed(BaseModel):
    jobs: list[JobOut]
    next_before: str | None
    """Pass as `before` for the next (older) page: `<posted_height>:<job id>`."""


class TxRow(BaseModel):
    tx_hash: str
    type: str
    sender: str
    nonce: int
    height: int
    index: int
    ok: bool
    code: str
    message: str


class TxFeed(BaseModel):
    txs: list[TxRow]
    next_before: str | None
    """Pass as `before` for the next (older) page: `<height>:<index>`."""


class ResultFeed(BaseModel):
    results: list[ResultOut]
    next_before: str | None
    """Pass as `before` for the next (older) page: `<updated_height>:<job id>`."""


_HEIGHT = re.compile(r"^[0-9]{1,19}\Z")


def _cursor(raw: str | None, what: str, hex_id: bool) -> tuple[int, Any] | None:
    if raw is None:
        return None
    left, _, right = raw.partition(":")
    ok = _HEIGHT.match(left) and (HEX64.match(right) if hex_id else _HEIGHT.match(right))
    if not ok:
        raise HTTPException(422, f"before must be '{what}' as given in next_before")
    return int(left), (right if hex_id else int(right))


@router.get("/jobs", response_model=JobFeed, responses=ERROR_RESPONSES)
async def job_feed(
    node: NodeDep,
    before: str | None = Query(None, max_length=200, description="Cursor from next_before."),
    limit: int = Query(25, ge=1, le=200),
    status: Annotated[Status | None, Query(description="Only jobs with this status.")] = None,
) -> JobFeed:
    """Jobs newest first (by posting height), optionally of one status."""
    cursor = _cursor(before, "<posted_height>:<job id>", True)
    jobs = node.chain.store.list_jobs(status=status, after=cursor, newest_first=True, limit=limit)
    nxt = f"{jobs[-1].posted_height}:{jobs[-1].id}" if len(jobs) == limit else None
    return JobFeed(jobs=[JobOut(**job_out(node, j)) for j in jobs], next_before=nxt)


@router.get("/txs/{address}", response_model=TxFeed, responses=ERROR_RESPONSES)
async def account_txs(
    node: NodeDep,
    address: str = Path(pattern=ADDRESS, description="Sender address."),
    before: str | None = Query(None, max_length=200, description="Cursor from next_before."),
    limit: int = Query(25, ge=1, le=200),
) -> TxFeed:
    """Committed txs sent by `address`, newest first, with their receipts."""
    cursor = _cursor(before, "<height>:<index>", False)
    records = node.chain.store.list_txs(sender=address, before=cursor, limit=limit)
    rows = [
        TxRow(
            tx_hash=r.tx.hash,
            type=r.tx.type,
            sender=r.tx.sender,
            nonce=r.tx.nonce,
            height=r.height,
            index=r.index,
            ok=r.receipt.ok,
            code=r.receipt.code,
            message=r.receipt.message,
        )
        for r in records
    ]
    nxt = f"{rows[-1].height}:{rows[-1].index}" if len(rows) == limit else None
    return TxFeed(txs=rows, next_before=nxt)


def job_result_txs(store: Store, job: Job, head: int) -> list[TxRow]:
    """The commit / reveal / submit txs sent for `job` by the miners who have a result on it.

    Found through `ix_txs_sender` (sender, height) within the job's life (posting to final
    height), so the cost is bounded by those miners' txs in that window, not by the chain.
    """
    miners = sorted(set(job.commits) | set(job.reveals))
    if not miners:
        return []
    t, r = schema.txs, schema.receipts
    last = job.settled_height or head
    query = (
        select(
            t.c.hash,
            t.c.type,
            t.c.sender,
            t.c.nonce,
            t.c.height,
            t.c.idx,
            t.c.body,
            r.c.ok,
            r.c.code,
            r.c.message,
        )
        .join(r, and_(r.c.height == t.c.height, r.c.idx == t.c.idx))
        .where(t.c.sender.in_(miners), t.c.height.between(job.posted_height, last))
        .where(t.c.type.in_(RESULT_TYPES))
        .order_by(t.c.height, t.c.idx)
    )
    with store.engine.connect() as conn:
        rows = conn.execute(query).all()
    return [
        TxRow(
            tx_hash=row.hash,
            type=row.type,
            sender=row.sender,
            nonce=row.nonce,
            height=row.height,
            index=row.idx,
            ok=bool(row.ok),
            code=row.code,
            message=row.message,
        )
        for row in rows
        if any(i["job_id"] == job.id for i in result_items_of(row.type, json.loads(row.body)))
    ]


@router.get("/jobs/{job_id}/txs", response_model=TxFeed, responses=ERROR_RESPONSES)
async def job_txs(
    node: NodeDep, job_id: str = Path(pattern=ADDRESS, description="Job id.")
) -> TxFeed:
    """Every miner's commit, reveal or submit tx for one job, in chain order, with receipts."""
    job = node.chain.store.get_job(job_id)
    if job is None:
        raise HTTPException(404, f"no job {job_id}")
    return TxFeed(txs=job_result_txs(node.chain.store, job, node.chain.height), next_before=None)


@router.get("/results/{address}", response_model=ResultFeed, responses=ERROR_RESPONSES)
async def result_feed(
    node: NodeDep,
    address: str = Path(pattern=ADDRESS, description="Miner address."),
    before: str | None = Query(None, max_length=200, description="Cursor from next_before."),
    limit: int = Query(25, ge=1, le=200),
) -> ResultFeed:
    """A miner's results (commitment, revealed outputs, verdict, paid, slashed), newest first."""
    cursor = _cursor(before, "<updated_height>:<job id>", True)
    rows = node.chain.store.results_of_miner(address, before=cursor, limit=limit)
    nxt = f"{rows[-1]['updated_height']}:{rows[-1]['job_id']}" if len(rows) == limit else None
    return ResultFeed(results=[ResultOut(**row) for row in rows], next_before=nxt)


def _csv_lines(store: Store, miner: str) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([*CSV_FIELDS, "outputs"])
    cursor: tuple[int, str] | None = None
    while True:
        rows = store.results_of_miner(miner, before=cursor, limit=1000)
        for row in rows:
            writer.writerow(
                [row[k] if row[k] is not None else "" for k in CSV_FIELDS]
                + [" ".join(row["outputs"] or [])]
            )
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
        if len(rows) < 1000:
            return
        cursor = (rows[-1]["updated_height"], rows[-1]["job_id"])


@router.get(
    "/results/{address}/csv",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/csv": {}}, "description": "CSV, one row per result"}},
)
async def result_csv(
    node: NodeDep, address: str = Path(pattern=ADDRESS, description="Miner address.")
) -> StreamingResponse:
    """Every result of a miner as CSV (job, verdict, paid, slashed, height, outputs)."""
    return StreamingResponse(
        _csv_lines(node.chain.store, address),
        media_type="text/csv",
        headers={"Content-Disposition": f'attachment; filename="miner-{address[:16]}.csv"'},
    )
