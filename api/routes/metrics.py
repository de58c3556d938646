"""Prometheus metrics at /metrics."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from api.deps import NodeDep

router = APIRouter(tags=["metrics"])


@router.get("/metrics", response_class=PlainTextResponse)
async def metrics(node: NodeDep) -> PlainTextResponse:
    """Height, view, commits, txs, p2p traffic and latencies in Prometheus text format."""
    node.refresh_gauges()
    return PlainTextResponse(generate_latest(node.metrics.registry), media_type=CONTENT_TYPE_LATEST)
