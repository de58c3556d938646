"""One place that turns errors into HTTP answers: a 4xx JSON body that says what was wrong.

Every error body has the same shape, `{"detail": "<what was wrong>", "error": "<kind>"}`, so
clients (miner, driver, explorer) can show it as is. A `LedgerError` raised anywhere in a route
is bad input by construction (the ledger raises them only for what it was given), so it maps to a
4xx here rather than to a 500; a 5xx is always a bug.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from ledger.errors import (
    EncodingError,
    GenesisError,
    IdentityError,
    InvalidBlock,
    InvalidTransaction,
    KernelError,
    LedgerError,
    StoreError,
    TensorError,
)

log = logging.getLogger(__name__)


class ErrorBody(BaseModel):
    """What every 4xx answer carries."""

    detail: str
    """Human-readable reason, written for whoever sent the request."""
    error: str
    """Kind of error: the exception class name, or `http`/`validation`."""


class NodeBusy(LedgerError):
    """The node's backlog of txs waiting to be ordered is full: retry shortly (answered 503)."""


class NonceUsed(InvalidTransaction):
    """The tx's nonce was already used by a committed tx of the same sender (answered 409)."""


#: Most specific first: the first class an error is an instance of decides the status.
_STATUS: list[tuple[type[LedgerError], int]] = [
    (NonceUsed, 409),
    (NodeBusy, 503),
    (TensorError, 422),
    (InvalidTransaction, 422),
    (EncodingError, 400),
    (IdentityError, 422),
    (KernelError, 422),
    (InvalidBlock, 422),
    (GenesisError, 422),
    (StoreError, 503),
]


class PayloadTooLarge(HTTPException):
    """A request body over the configured limit."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(413, f"request body of {size} bytes exceeds the limit of {limit} bytes")


def status_for(exc: LedgerError) -> int:
    for cls, status in _STATUS:
        if isinstance(exc, cls):
            return status
    return 400


def error_response(status: int, detail: str, kind: str) -> JSONResponse:
    return JSONResponse(
        status_code=status, content=ErrorBody(detail=detail, error=kind).model_dump()
    )


def error_answer(exc: Exception) -> JSONResponse | None:
    """The `ErrorBody` answer to a request that raised `exc`, or None for an exception that is
    not an answerable error (a bug: it propagates to a 500). The app's handlers and the ASGI
    fast paths (`api.hotpaths`) answer alike through this."""
    if isinstance(exc, LedgerError):
        response = error_response(
            status_for(exc), str(exc) or type(exc).__name__, type(exc).__name__
        )
        if isinstance(exc, NodeBusy):
            response.headers["Retry-After"] = "1"
        return response
    if isinstance(exc, StarletteHTTPException):  # FastAPI's HTTPException is one
        response = error_response(exc.status_code, str(exc.detail), "http")
        if exc.headers:
            response.headers.update(exc.headers)
        return response
    return None


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers that give every error the `ErrorBody` shape."""

    async def answerable(request: Request, exc: Exception) -> JSONResponse:
        response = error_answer(exc)
        assert response is not None  # registered only for answerable classes
        return response

    for cls in (LedgerError, StarletteHTTPException):  # FastAPI's HTTPException is a subclass
        app.add_exception_handler(cls, answerable)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err.get("loc", ()))
            parts.append(f"{where}: {err.get('msg', 'invalid')}")
        return error_response(422, "; ".join(parts) or "invalid request", "validation")


ERROR_RESPONSES: dict[int | str, dict[str, object]] = {
    400: {"model": ErrorBody, "description": "Malformed request"},
    404: {"model": ErrorBody, "description": "Not found"},
    413: {"model": ErrorBody, "description": "Body too large"},
    422: {"model": ErrorBody, "description": "Invalid input"},
}
