"""The public REST API (/api/v1): one router per resource."""

from __future__ import annotations

from fastapi import APIRouter

from api.routes import accounts, blocks, events, jobs, search, status, tensors, txs, validators

api_router = APIRouter()
api_router.include_router(status.router)
api_router.include_router(validators.router)
api_router.include_router(tensors.router)
api_router.include_router(txs.router)
api_router.include_router(jobs.router)
api_router.include_router(blocks.router)
api_router.include_router(accounts.accounts_router)
api_router.include_router(accounts.miners_router)
api_router.include_router(search.router)
api_router.include_router(events.router)

__all__ = ["api_router"]
