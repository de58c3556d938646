"""`api.hotpaths`: the busiest routes answered before FastAPI's router, exactly as their routes.

The hot `GET /work` is checked against FastAPI's own route on random queries: a query with one
extra, unknown parameter is declined by the fast path and served by the route (which ignores
unknown parameters), so the two answers must be equal, errors included.
"""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from api.core.node import Node
from api.hotpaths import ROUTES, HotPaths
from api.routes.work import WorkOut, work_query
from ledger.identity import Keypair
from tests.api.test_work import MINERS, _post_jobs


def _hot(client: TestClient) -> HotPaths:
    layer: Any = client.app.middleware_stack  # type: ignore[attr-defined]
    while not isinstance(layer, HotPaths):
        layer = layer.app
    return layer


def test_every_hot_route_answers_with_its_declared_status(
    single_node: tuple[TestClient, Node, Keypair],
) -> None:
    """The declared status is the one 2xx answer of the route's OpenAPI operation."""
    client, _, _ = single_node
    paths = client.get("/openapi.json").json()["paths"]
    for hot in ROUTES:
        answers = paths[hot.path][hot.method.lower()]["responses"]
        assert [int(c) for c in answers if c.startswith("2")] == [hot.status_code], hot.path


_VALUES = {
    "miner": st.sampled_from([*MINERS, MINERS[0].upper(), MINERS[0][:-1], "", "x" * 64]),
    "limit": st.sampled_from(["0", "1", "2", "64", "1000", "1001", "-1", "01", "+1", "1.0", "a"]),
    "wait": st.sampled_from(["0", "0.0", "0.001", "-0", "-1", "nan", "inf", "1e-3", " 0", "x"]),
    "since": st.sampled_from(["-1", "0", "1", "3", "-2", "99999", "1.5", ""]),
    "inline_bytes": st.sampled_from(["0", "10", "100000", "2000000", "-5", "1_0"]),
}


@st.composite
def _queries(draw: st.DrawFn) -> list[tuple[str, str]]:
    """Mostly a valid miner and a few parameters, each plain or odd; sometimes one repeated."""
    query = [("miner", draw(st.sampled_from(MINERS) | _VALUES["miner"]))]
    for name in ("limit", "wait", "since", "inline_bytes"):
        if draw(st.booleans()):
            query.append((name, draw(_VALUES[name])))
    if draw(st.integers(0, 9)) == 0:
        query.append(draw(st.sampled_from(query)))
    return draw(st.permutations(query))


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(query=_queries())
def test_hot_work_answers_as_the_route_does(
    single_node: tuple[TestClient, Node, Keypair], query: list[tuple[str, str]]
) -> None:
    client, node, key = single_node
    if not node.chain.state.jobs:
        _post_jobs(client, node, key, 6)
    hot = _hot(client)
    served = hot.served
    via_route = client.get("/api/v1/work", params=[*query, ("unknown", "1")])
    assert hot.served == served
    answer = client.get("/api/v1/work", params=query)
    assert hot.served == served + (work_query(query) is not None)
    assert (answer.status_code, answer.json()) == (via_route.status_code, via_route.json())
    if answer.status_code == 200:  # built without the model: it must still be a `WorkOut`
        assert WorkOut.model_validate(answer.json()).model_dump() == answer.json()


def test_work_query_takes_plain_values_and_declines_the_rest() -> None:
    miner = MINERS[0]
    assert work_query([("miner", miner)]) == {
        "miner": miner,
        "limit": 64,
        "wait": 0.0,
        "since": -1,
        "inline_bytes": 0,
    }
    assert work_query([("miner", miner), ("wait", "2.5"), ("since", "7")]) == {
        "miner": miner,
        "limit": 64,
        "wait": 2.5,
        "since": 7,
        "inline_bytes": 0,
    }
    for odd in (
        [],
        [("limit", "1")],
        [("miner", miner), ("miner", miner)],
        [("miner", miner), ("limit", "1001")],
        [("miner", miner), ("wait", "nan")],
        [("miner", miner), ("since", "-2")],
        [("miner", miner), ("other", "1")],
    ):
        assert work_query(odd) is None, odd


def test_posts_to_hot_routes_do_not_reach_the_router(
    single_node: tuple[TestClient, Node, Keypair],
) -> None:
    """Good and bad requests to the hot POST routes are answered by the fast path, errors in the
    app's `ErrorBody` shape."""
    client, node, key = single_node
    hot = _hot(client)
    served = hot.served
    _post_jobs(client, node, key, 1)  # uploads one by one, then one tx: no hot route
    assert hot.served == served
    bad = client.post("/api/v1/txs/batch", json={"tx": []})
    assert (bad.status_code, bad.json()["error"]) == (422, "http")
    garbage = client.post("/api/v1/tensors/batch", content=b"\x00\x00\x00\x05abc")
    assert garbage.status_code in (400, 422) and "detail" in garbage.json()
    stranger = client.post("/p2p/tensors", content=b"")
    assert (stranger.status_code, stranger.json()["error"]) == (403, "http")
    assert client.post("/p2p/batch", content=b"{}").status_code == 403
    assert hot.served == served + 4
