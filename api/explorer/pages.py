"""The explorer's HTML pages, server-rendered with Jinja2.

Every page gets its data by calling the JSON route functions under /api/v1 (the same Python
functions, not HTTP): the explorer is a client of the API, and each page links to the JSON it
shows. Claims a page makes are checked on the server when it renders: certificate signatures,
tx signatures, header hash, tx root and parent link — all with the `ledger` functions.
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable
from pathlib import Path as FsPath
from typing import Any, TypeVar, cast

from fastapi import APIRouter, HTTPException, Path, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from api.deps import NodeDep
from api.explorer.charts import Series, line_chart
from api.routes import accounts, blocks, feed, jobs, runs, search, stats, txs
from api.routes import certificates as certificates_route
from api.routes import verify as verify_route
from ledger.encoding import HEX64
from ledger.errors import LedgerError
from ledger.lightclient import build_tx_proof, verify_tx_proof
from ledger.merkle import merkle_root
from ledger.state import JOB_STATUSES
from ledger.transactions import (
    COMMIT_RESULTS,
    POST_JOBS,
    REVEAL_RESULTS,
    Tx,
    check_signature,
    posted_jobs,
    result_items,
)

TEMPLATES = Jinja2Templates(directory=str(FsPath(__file__).parent / "templates"))
T = TypeVar("T")

router = APIRouter(include_in_schema=False)


# ----------------------------------------------------------------------------- filters


def fmt_time(ms: int | None) -> str:
    if ms is None:
        return ""
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ms / 1000))


def fmt_ago(ms: int | None) -> str:
    if ms is None:
        return ""
    seconds = int(time.time() - ms / 1000)
    if seconds < 0:
        return "just now"
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit} ago"
    return f"{seconds} s ago"


def short(value: str | None, keep: int = 8) -> str:
    if not value:
        return ""
    return value if len(value) <= 2 * keep + 1 else f"{value[:keep]}…{value[-keep // 2 :]}"


def fmt_int(value: int | float | None) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and not value.is_integer():
        return f"{value:,.2f}"
    return f"{int(value):,}"


DTYPES = {"<i4": "int32", "<i8": "int64"}


def fmt_dtype(code: str | None) -> str:
    return DTYPES.get(code or "", code or "")


TEMPLATES.env.filters.update(ts=fmt_time, ago=fmt_ago, short=short, num=fmt_int, dtype=fmt_dtype)


def render(request: Request, name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    node = request.app.state.node
    names = {v.address: v.name for v in node.genesis.validators}
    return TEMPLATES.TemplateResponse(
        request,
        name,
        {
            "chain_id": node.genesis.chain_id,
            "genesis_hash": node.genesis.hash,
            "node_name": node.name,
            "validator_names": names,
            **context,
        },
        status_code=status_code,
    )


def error_page(request: Request, exc: HTTPException | LedgerError) -> HTMLResponse:
    status = exc.status_code if isinstance(exc, HTTPException) else 422
    detail = exc.detail if isinstance(exc, HTTPException) else str(exc)
    return render(request, "error.html", status_code=status, status=status, detail=detail)


def bad_input(request: Request, detail: str) -> HTMLResponse:
    return render(request, "error.html", status_code=404, status=404, detail=detail)


async def guarded(request: Request, call: Awaitable[T]) -> T | HTMLResponse:
    """Await a JSON route function; turn its HTTP error into an HTML error page."""
    try:
        return await call
    except (HTTPException, LedgerError) as exc:
        return error_page(request, exc)


# ----------------------------------------------------------------------------- pages


@router.get("/", response_class=HTMLResponse)
async def home(request: Request, node: NodeDep) -> Response:
    data = await stats.overview(node, blocks=10, jobs=10)
    return render(request, "home.html", data=data, live=True, api="/api/v1/stats/overview")


@router.get("/blocks", response_class=HTMLResponse)
async def block_list(
    request: Request,
    node: NodeDep,
    before: int | None = Query(None, ge=1, le=2**62),
    limit: int = Query(25, ge=1, le=200),
) -> Response:
    page = await blocks.list_blocks(node, before=before, limit=limit)
    api = "/api/v1/blocks" + (f"?before={before}" if before else "")
    return render(
        request,
        "blocks.html",
        page=page,
        head=node.chain.height,
        live=before is None,
        limit=limit,
        api=api,
    )


@router.get("/blocks/{ref}", response_class=HTMLResponse)
async def block_detail(
    request: Request, node: NodeDep, ref: str = Path(max_length=200)
) -> Response:
    if not re.match(certificates_route.BLOCK_REF, ref):
        return bad_input(request, "give a block height or a block hash (64 lowercase hex)")
    block = await guarded(request, blocks.get_block(node, ref))
    if isinstance(block, HTMLResponse):
        return block
    cert = await guarded(request, certificates_route.certificate_check(node, str(block.height)))
    if isinstance(cert, HTMLResponse):
        return cert
    store = node.chain.store
    header = store.get_header(block.height)
    assert header is not None
    parent = store.get_header(block.height - 1) if block.height > 1 else None
    parent_hash = parent.hash if parent is not None else node.genesis.hash
    checks = {
        "hash": header.hash == block.hash,
        "tx_root": merkle_root([t.tx_hash for t in block.txs]) == block.header.tx_root,
        "n_txs": block.header.n_txs == len(block.txs),
        "parent": block.header.prev_hash == parent_hash,
    }
    return render(
        request,
        "block.html",
        block=block,
        cert=cert,
        checks=checks,
        head=node.chain.height,
        api=f"/api/v1/blocks/{block.height}",
    )


@router.get("/txs/{tx_hash}", response_class=HTMLResponse)
async def tx_detail(
    request: Request, node: NodeDep, tx_hash: str = Path(max_length=200)
) -> Response:
    if not HEX64.match(tx_hash):
        return bad_input(request, "a transaction hash is 64 lowercase hex characters")
    found = await guarded(request, txs.get_tx(node, tx_hash))
    if isinstance(found, HTMLResponse):
        return found
    signature_ok, problem = True, None
    batch_jobs: list[str] = []
    batch_what = ""
    try:
        tx = Tx.from_dict(found.tx)
        if tx.type == POST_JOBS:
            batch_jobs, batch_what = [job_id for job_id, _ in posted_jobs(tx)], "jobs posted"
        elif tx.type in (COMMIT_RESULTS, REVEAL_RESULTS):
            batch_jobs, batch_what = [item["job_id"] for item in result_items(tx)], "results"
        check_signature(tx, node.genesis.chain_id)
    except LedgerError as exc:
        signature_ok, problem = False, str(exc)
    return render(
        request,
        "tx.html",
        found=found,
        batch_jobs=batch_jobs,
        batch_what=batch_what,
        signature_ok=signature_ok,
        signature_problem=problem,
        proof=_inclusion(node, tx_hash) if found.status == "committed" else None,
        api=f"/api/v1/txs/{tx_hash}",
    )


def _inclusion(node: NodeDep, tx_hash: str) -> dict[str, Any] | None:
    """The tx's inclusion proof checked as a light client would (genesis only), for the page:
    None while the block is not stored yet."""
    built = build_tx_proof(node.chain.store, tx_hash)
    if built is None:
        return None
    try:
        verify_tx_proof(built, node.genesis)
    except LedgerError as exc:
        return {"ok": False, "problem": str(exc)}
    return {
        "ok": True,
        "steps": len(built.path),
        "signers": len(built.certificate.signatures),
        "validators": node.genesis.n,
    }


@router.get("/jobs", response_class=HTMLResponse)
async def job_list(
    request: Request,
    node: NodeDep,
    before: str | None = Query(None, max_length=200),
    limit: int = Query(25, ge=1, le=200),
    status: str | None = Query(None, max_length=20),
) -> Response:
    if status is not None and status not in JOB_STATUSES:
        return bad_input(request, f"a job status is one of {', '.join(JOB_STATUSES)}")
    page = await guarded(
        request,
        feed.job_feed(node, before=before, limit=limit, status=cast(jobs.Status | None, status)),
    )
    if isinstance(page, HTMLResponse):
        return page
    counts = stats.job_counts(node.chain.store, node.chain.height)
    api = "/api/v1/feed/jobs" + (f"?status={status}" if status else "")
    return render(request, "jobs.html", page=page, counts=counts, status=status, api=api)


@router.get("/jobs/{job_id}", response_class=HTMLResponse)
async def job_detail(
    request: Request, node: NodeDep, job_id: str = Path(max_length=200)
) -> Response:
    if not HEX64.match(job_id):
        return bad_input(request, "a job id is 64 lowercase hex characters")
    job = await guarded(request, jobs.get_job(node, job_id))
    if isinstance(job, HTMLResponse):
        return job
    sent = await feed.job_txs(node, job_id)
    by_miner: dict[str, list[feed.TxRow]] = {}
    for tx in sent.txs:
        by_miner.setdefault(tx.sender, []).append(tx)
    metas: list[dict[str, Any]] = []
    for ref in job.inputs:  # a DAG input's shape is its parent's output shape
        parent = node.chain.state.jobs.get(ref["job"]) if "job" in ref else None
        metas.append(parent.output_metas[ref["output"]] if parent is not None else ref)
    return render(
        request, "job.html", job=job, txs=by_miner, input_metas=metas, api=f"/api/v1/jobs/{job_id}"
    )


@router.get("/accounts/{address}", response_class=HTMLResponse)
async def account_detail(
    request: Request,
    node: NodeDep,
    address: str = Path(max_length=200),
    txs_before: str | None = Query(None, max_length=200),
    results_before: str | None = Query(None, max_length=200),
) -> Response:
    if not HEX64.match(address):
        return bad_input(request, "an address is 64 lowercase hex characters (a public key)")
    account = await accounts.get_account(node, address)
    sent = await guarded(request, feed.account_txs(node, address, before=txs_before, limit=25))
    if isinstance(sent, HTMLResponse):
        return sent
    results = await guarded(
        request, feed.result_feed(node, address, before=results_before, limit=25)
    )
    if isinstance(results, HTMLResponse):
        return results
    return render(
        request,
        "account.html",
        account=account,
        sent=sent,
        results=results,
        api=f"/api/v1/accounts/{address}",
    )


@router.get("/validators", response_class=HTMLResponse)
async def validator_page(request: Request, node: NodeDep) -> Response:
    data = await stats.validator_stats(node)
    return render(request, "validators.html", data=data, api="/api/v1/stats/validators")


@router.get("/runs", response_class=HTMLResponse)
async def run_list(request: Request, node: NodeDep) -> Response:
    data = await runs.list_runs(node, limit=200)
    return render(request, "runs.html", data=data, api="/api/v1/runs")


@router.get("/runs/{name:path}", response_class=HTMLResponse)
async def run_detail(request: Request, node: NodeDep, name: str = Path(max_length=128)) -> Response:
    run = await guarded(request, runs.get_run(node, name))
    if isinstance(run, HTMLResponse):
        return run
    charts = _run_charts(run)
    return render(request, "run.html", run=run, charts=charts, api=f"/api/v1/runs/{name}")


def _run_charts(run: runs.RunDetail) -> list[str]:
    """Loss-like metrics on one chart, accuracy-like on another, any other scaled metric (a
    `_ppm`, `_bp`... suffix) on its own; plain counters and settings stay in the table."""
    groups: dict[str, list[Series]] = {}
    for s in run.series:
        key = "loss" if "loss" in s.name else "accuracy" if "acc" in s.name else s.name
        if key == s.name and s.scale == 1:
            continue
        groups.setdefault(key, []).append(Series(s.name, s.epochs, s.values))
    return [line_chart(group, title=title, x_label="epoch") for title, group in groups.items()]


@router.get("/search", response_class=HTMLResponse)
async def search_page(
    request: Request, node: NodeDep, q: str = Query("", max_length=200)
) -> Response:
    q = q.strip()
    if not q:
        return render(request, "search.html", q=q, detail=None)
    if node.chain.store.get_run(q) is not None:
        return RedirectResponse(f"/runs/{q}", status_code=303)
    if q.isdigit() and not q.isascii():  # "²" is a digit to str.isdigit, not to int()
        return render(request, "search.html", status_code=404, q=q, detail="not a height")
    try:
        found = await search.search(node, q=q[:100])
    except HTTPException as exc:
        return render(request, "search.html", status_code=404, q=q, detail=exc.detail)
    target = {
        "block": f"/blocks/{found.id}",
        "tx": f"/txs/{found.id}",
        "job": f"/jobs/{found.id}",
        "account": f"/accounts/{found.id}",
    }[found.kind]
    return RedirectResponse(target, status_code=303)


@router.get("/verify", response_class=HTMLResponse)
async def verify_page(
    request: Request,
    node: NodeDep,
    start: int | None = Query(None, alias="from", ge=1, le=2**62),
    end: int | None = Query(None, alias="to", ge=1, le=2**62),
    tensors: bool = Query(False),
) -> Response:
    head = node.chain.height
    report = None
    if start is not None or end is not None:
        report = await guarded(
            request, verify_route.verify_chain(node, start=start, end=end, tensors=tensors)
        )
        if isinstance(report, HTMLResponse):
            return report
    url = node.settings.database_url
    ledger = url.removeprefix("sqlite:///") if url.startswith("sqlite:///") else url
    return render(
        request,
        "verify.html",
        cli=f"layerchain verify {ledger} --genesis {node.settings.genesis_file}",
        head=head,
        start=start or 1,
        end=end or head,
        tensors=tensors,
        report=report,
        api="/api/v1/verify",
    )
