"""The HTTP explorer served by every validator at `/`, and the JSON routes it reads.

    from api import explorer
    explorer.install(app)      # HTML pages at /, static files at /static, JSON under /api/v1

Pages are server-rendered (Jinja2) from the same route functions that answer /api/v1; the only
JavaScript is `static/live.js`, which adds new blocks as they commit (server-sent events from
/api/v1/events, polling /api/v1/blocks when the stream drops).

Modules: `pages` (HTML routes), `charts` (inline SVG), `indexes` (incremental validator counts);
the JSON routes live in `api/routes/{stats,certificates,feed,runs,verify}.py` (the range check
is `ledger.verify.verify_ledger`, the CLI's own function).
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

STATIC_DIR = Path(__file__).parent / "static"


def install(app: FastAPI, api_prefix: str = "/api/v1") -> None:
    """Mount the explorer's JSON routes under `api_prefix`, its pages at / and /static."""
    # Imported here: the route modules import this package's helpers (no import cycle).
    from fastapi.staticfiles import StaticFiles

    from api.explorer.pages import router as pages_router
    from api.routes import certificates, feed, runs, stats, verify

    for module in (stats, certificates, feed, runs, verify):
        app.include_router(module.router, prefix=api_prefix)
    app.include_router(pages_router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")


__all__ = ["install", "STATIC_DIR"]
