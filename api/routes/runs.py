"""Training runs: their checkpoints (model hash and metrics per epoch) and how to replay them.

Checkpoint metrics are integers on the ledger (floats are never hashed). A metric's name says its
scale: `_ppm` (parts per million), `_bp` (basis points), `_pct` (percent), `_milli`; a name
without such a suffix is shown as is. `value` is the scaled number for charts.
"""

from __future__ import annotations

from collections import OrderedDict

from fastapi import APIRouter, HTTPException, Path, Query
from pydantic import BaseModel
from sqlalchemy import func, select

from api.core.errors import ERROR_RESPONSES
from api.deps import NodeDep
from ledger import schema
from ledger.store import Store

router = APIRouter(prefix="/runs", tags=["runs"])

RUN_NAME = r"^[A-Za-z0-9_.:/@+-]{1,128}$"
SCALES = (("_ppm", 1_000_000), ("_bp", 10_000), ("_milli", 1_000), ("_pct", 1))


class RunOut(BaseModel):
    name: str
    owner: str
    created_height: int
    last_epoch: int
    last_model_hash: str
    n_checkpoints: int


class RunsOut(BaseModel):
    runs: list[RunOut]


class CheckpointOut(BaseModel):
    epoch: int
    model_hash: str
    metrics: dict[str, int]
    """As recorded on the ledger (integers)."""
    sender: str
    tx_hash: str
    height: int


class MetricSeries(BaseModel):
    name: str
    """The metric without its scale suffix (`loss`, `accuracy`, ...)."""
    key: str
    """The metric's key in the checkpoints."""
    scale: int
    epochs: list[int]
    values: list[float]
    """Recorded integer / scale, one per checkpoint that has the metric."""


class RunDetail(RunOut):
    checkpoints: list[CheckpointOut]
    series: list[MetricSeries]
    job_counts: dict[str, int]
    """The run's jobs per status."""
    replay_command: str
    """Re-derives the run's final model hash from a copy of this ledger."""


def metric_scale(key: str) -> tuple[str, int]:
    """(display name, divisor) of a metric key, from its suffix."""
    for suffix, scale in SCALES:
        if key.endswith(suffix):
            return key[: -len(suffix)], scale
    return key, 1


def metric_series(checkpoints: list[CheckpointOut]) -> list[MetricSeries]:
    def order(key: str) -> tuple[int, str]:
        name = metric_scale(key)[0]
        return (0 if "loss" in name else 1 if "acc" in name else 2, key)

    keys = sorted({k for c in checkpoints for k in c.metrics}, key=order)
    out = []
    for key in keys:
        name, scale = metric_scale(key)
        points = [(c.epoch, c.metrics[key]) for c in checkpoints if key in c.metrics]
        out.append(
            MetricSeries(
                name=name,
                key=key,
                scale=scale,
                epochs=[e for e, _ in points],
                values=[v / scale for _, v in points],
            )
        )
    return out


_COUNTS: OrderedDict[tuple[str, str], tuple[int, dict[str, int]]] = OrderedDict()
COUNT_CACHE = 256


def run_job_counts(store: Store, run: str, head: int | None = None) -> dict[str, int]:
    """Jobs of one run per status (`ix_jobs_run` range, then a row read per job).

    The cost grows with the run's jobs, so with `head` given the answer is kept until the chain
    moves: at most one count per run per block, however many readers there are.
    """
    key = (store.url, run)
    if head is not None:
        hit = _COUNTS.get(key)
        if hit is not None and hit[0] == head:
            _COUNTS.move_to_end(key)
            return dict(hit[1])
    j = schema.jobs
    with store.engine.connect() as conn:
        rows = conn.execute(
            select(j.c.status, func.count()).where(j.c.run == run).group_by(j.c.status)
        ).all()
    counts = {status: count for status, count in rows}
    if head is not None:
        _COUNTS[key] = (head, counts)
        if len(_COUNTS) > COUNT_CACHE:
            _COUNTS.popitem(last=False)
    return dict(counts)


def replay_command(run: str, database_url: str = "") -> str:
    """The CLI line that replays `run`, naming this node's ledger file when it is SQLite (its
    tensor store, `tensors` beside the ledger, is the command's default)."""
    ledger = "LEDGER.db"
    if database_url.startswith("sqlite:///") and ":memory:" not in database_url:
        ledger = database_url.removeprefix("sqlite:///")
    return f"layerchain replay --ledger {ledger} --run {run}"


@router.get("", response_model=RunsOut)
async def list_runs(node: NodeDep, limit: int = Query(100, ge=1, le=1000)) -> RunsOut:
    """Training runs, most recently created first."""
    return RunsOut(
        runs=[
            RunOut(name=name, **run.to_dict())
            for name, run in node.chain.store.list_runs(limit=limit)
        ]
    )


@router.get("/{name:path}", response_model=RunDetail, responses=ERROR_RESPONSES)
async def get_run(
    node: NodeDep, name: str = Path(pattern=RUN_NAME, description="Run name.")
) -> RunDetail:
    """One run with every checkpoint, its metric curves, job counts and the replay command."""
    store = node.chain.store
    run = store.get_run(name)
    if run is None:
        raise HTTPException(404, f"no training run {name!r} on the chain")
    checkpoints = [
        CheckpointOut(**{k: v for k, v in c.items() if k != "run"}) for c in store.checkpoints(name)
    ]
    return RunDetail(
        name=name,
        **run.to_dict(),
        checkpoints=checkpoints,
        series=metric_series(checkpoints),
        job_counts=run_job_counts(store, name, node.chain.height),
        replay_command=replay_command(name, node.settings.database_url),
    )
