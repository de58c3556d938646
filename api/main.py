"""The validator's FastAPI application: public REST under /api/v1, peer-to-peer under /p2p.

`create_app(settings)` builds the app around one `Node`; the lifespan starts the node (store,
tensor store, consensus driver, peer links) and stops it on shutdown.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from api import explorer
from api.core.config import Settings
from api.core.errors import install_error_handlers
from api.core.node import Node
from api.hotpaths import HotPaths
from api.p2p import routes as p2p_routes
from api.p2p import streamserver, tensor_routes
from api.routes import api_router, metrics, work
from ledger.gcpolicy import tune_gc

API_PREFIX = "/api/v1"


def create_app(settings: Settings, node: Node | None = None) -> FastAPI:
    """A FastAPI app serving `node` (built from `settings` when not given)."""
    node = node or Node(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await node.start()
        tune_gc()  # ledger/gcpolicy.py
        try:
            yield
        finally:
            await node.stop()

    app = FastAPI(
        title="layerchain validator",
        summary="Proof-of-compute ledger for distributed neural-network training.",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.node = node
    install_error_handlers(app)
    app.add_middleware(HotPaths, node=node)
    app.add_middleware(streamserver.StreamFastPath, node=node)
    app.include_router(api_router, prefix=API_PREFIX)
    app.include_router(work.router, prefix=API_PREFIX)  # miner/driver work queues (issue 6)
    app.include_router(p2p_routes.router)
    app.include_router(tensor_routes.router)  # tensor replication by push
    app.include_router(metrics.router)
    explorer.install(app, API_PREFIX)  # HTML explorer at /, its JSON routes under /api/v1
    return app
