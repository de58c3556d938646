"""The busiest routes, answered before FastAPI's router: the `HotPaths` ASGI middleware.

Why: on a 16-miner devnet a validator serves ~175 requests/s, 98 % of them to five routes
(`GET /api/v1/work`, `POST /api/v1/txs/batch`, `POST /api/v1/tensors/batch`, and from peers
`POST /p2p/tensors` and `POST /p2p/batch`). FastAPI 0.165 spends ~0.13-0.2 ms of CPU per request
matching the path through the included routers and solving dependencies (a trivial route costs
0.31 ms under uvicorn, a bare ASGI app 0.11 ms; a `GET /work` costs the node 0.27 ms through
FastAPI, 0.13 ms here): 2-4 % of a busy validator's CPU. Here each of them is found by one dict
lookup and handed to the endpoint function its route declares, with the node passed directly.

What stays the same:
- the answer: the endpoint's model serialized as its route does (`model_dump_json`), with the
  route's status code (a test compares every hot route with its declared one);
- errors: an `HTTPException` or `LedgerError` gets the answer of the app's handlers
  (`api.core.errors.error_answer`);
- anything a hot path does not parse cleanly (an odd query) is passed on to FastAPI untouched,
  so malformed input is refused by the route's own declaration. The routes stay declared, for
  OpenAPI and for that fallback.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from api.core.errors import error_answer
from api.core.node import Node
from api.core.trace import trace
from api.p2p import routes as p2p_routes
from api.p2p import tensor_routes
from api.routes import tensors, txs, work

#: What a hot endpoint gives back: its answer (a model to serialize, or a ready response) and a
#: step to run once the answer is sent; or None to pass the request on to FastAPI, which a
#: handler may decide only before it reads the body.
Outcome = tuple[BaseModel | Response, Callable[[], None] | None] | None
Handler = Callable[[Request, Node], Awaitable[Outcome]]


@dataclass(frozen=True)
class HotRoute:
    method: str
    path: str
    status_code: int
    """The status of a successful answer: the route's declared one."""
    handler: Handler


async def _work(request: Request, node: Node) -> Outcome:
    query = work.work_query(request.query_params.multi_items())
    if query is None:
        return None
    return await work.get_work(node, **query), None


async def _submit_txs(request: Request, node: Node) -> Outcome:
    return await txs.submit_batch(request, node), None


async def _upload_tensors(request: Request, node: Node) -> Outcome:
    return await tensors.put_tensors(request, node), None


async def _pushed_tensors(request: Request, node: Node) -> Outcome:
    return await tensor_routes.receive_tensors(request, node), None


async def _peer_batch(request: Request, node: Node) -> Outcome:
    # The batch's consensus messages are delivered after the answer is sent (the route's
    # background task), so the sender's round trip does not wait for this node's core.
    return await p2p_routes.handle_batch(request, node)


API = "/api/v1"
ROUTES = (
    HotRoute("GET", f"{API}/work", 200, _work),
    HotRoute("POST", f"{API}/txs/batch", 202, _submit_txs),
    HotRoute("POST", f"{API}/tensors/batch", 201, _upload_tensors),
    HotRoute("POST", "/p2p/tensors", 200, _pushed_tensors),
    HotRoute("POST", "/p2p/batch", 200, _peer_batch),
)


class HotPaths:
    """ASGI middleware serving `ROUTES` itself and passing every other request on."""

    def __init__(self, app: ASGIApp, node: Node) -> None:
        self.app = app
        self.node = node
        self.routes = {(r.method, r.path): r for r in ROUTES}
        self.served = 0
        """Requests answered here (tests check that the hot routes do not reach FastAPI)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = (
            self.routes.get((scope["method"], scope["path"])) if scope["type"] == "http" else None
        )
        if route is None:
            await self.app(scope, receive, send)
            return
        trace("http_in", path=route.path)
        request = Request(scope, receive)
        after: Callable[[], None] | None = None
        try:
            outcome = await route.handler(request, self.node)
            if outcome is None:
                await self.app(scope, receive, send)
                return
            answer, after = outcome
            response = (
                answer
                if isinstance(answer, Response)
                else Response(
                    answer.model_dump_json(),
                    status_code=route.status_code,
                    media_type="application/json",
                )
            )
        except Exception as exc:  # answerable errors only; anything else is a bug: re-raised
            refusal = error_answer(exc)
            if refusal is None:
                raise
            response = refusal
        self.served += 1
        await response(scope, receive, send)
        trace("http_out", path=route.path)
        if after is not None:
            after()
