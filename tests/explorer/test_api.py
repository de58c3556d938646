"""The explorer's JSON routes and pages, in process (httpx.ASGITransport) over a harness ledger.

The app is the real `create_app` around a real `Node` reading a ledger built by
`ledger.harness` with the production state machine; only consensus is not running (reads only).
Tampering goes through SQLite directly, after dropping the append-only trigger, as an attacker
holding the file would.
"""

from __future__ import annotations

import asyncio
import csv
import io
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from explorer_chains import RUN, DemoChain, build_demo_chain, node_home

from api.core.config import load_settings
from api.explorer.indexes import validator_index
from api.main import create_app
from api.testing import free_ports
from ledger.store import Store
from ledger.verify import verify_ledger


class App:
    """A synchronous face on the ASGI app for tests."""

    def __init__(self, home: Path) -> None:
        self.app = create_app(load_settings(home))
        self.node = self.app.state.node
        self.loop = asyncio.new_event_loop()

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        async def call() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://explorer") as c:
                return await c.get(path, **kwargs)

        return self.loop.run_until_complete(call())

    def close(self) -> None:
        self.node.chain.close()
        self.loop.close()


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> DemoChain:
    root = tmp_path_factory.mktemp("demo")
    return build_demo_chain(root, free_ports(4), filler_blocks=40)


def serve(root: Path, demo: DemoChain) -> App:
    """An app over a private copy of the demo ledger (tests may tamper with their copy)."""
    root.mkdir(parents=True, exist_ok=True)
    db = root / "ledger.db"
    shutil.copyfile(demo.db, db)
    home = node_home(root, demo.harness.genesis, db, demo.tensor_dir, free_ports(1)[0])
    return App(home)


@pytest.fixture()
def app(tmp_path: Path, demo: DemoChain) -> Iterator[App]:
    served = serve(tmp_path, demo)
    yield served
    served.close()


def tamper(db: Path, table: str, sql: str, args: tuple[Any, ...]) -> None:
    conn = sqlite3.connect(db)
    conn.execute(f"DROP TRIGGER {table}_no_update")
    assert conn.execute(sql, args).rowcount == 1
    conn.commit()
    conn.close()


# ------------------------------------------------------------------------------------ JSON


def test_overview_reports_head_rate_validators_and_latest(app: App, demo: DemoChain) -> None:
    body = app.get("/api/v1/stats/overview").json()
    assert body["height"] == demo.harness.height
    assert [b["height"] for b in body["latest_blocks"]] == list(
        range(demo.harness.height, demo.harness.height - 10, -1)
    )
    assert body["latest_jobs"][0]["id"] == demo.expired_job
    assert body["rate"]["txs_per_s"] > 0  # one transfer per second of header time at the end
    assert body["validators"] == 4 and body["validators_up"] >= 1
    assert body["job_counts"]["settled"] >= 5 and body["job_counts"]["expired"] == 1


def test_validator_stats_count_proposed_signed_and_missed(app: App, demo: DemoChain) -> None:
    body = app.get("/api/v1/stats/validators").json()
    height = demo.harness.height
    rows = body["validators"]
    assert body["height"] == height
    assert sum(v["proposed"] for v in rows) == height
    # The harness certificate carries the first quorum (3) of the 4 validators.
    assert [v["signed"] for v in rows] == [height, height, height, 0]
    assert [v["missed"] for v in rows] == [0, 0, 0, height]
    assert rows[0]["last_signed"] == height and rows[3]["last_signed"] is None
    assert [v["signing"] for v in rows] == [True, True, True, False]
    assert app.get("/api/v1/stats/overview").json()["validators_signing"] == 3


def test_validator_index_counts_only_new_blocks_on_later_calls(demo: DemoChain) -> None:
    store = Store(str(demo.db), create=False)
    index = validator_index(store, 10)
    assert index.height == 10 and index.blocks == 10
    again = validator_index(store, demo.harness.height)
    assert again is index and index.blocks == demo.harness.height
    store.close()


def test_certificate_check_marks_each_signature(app: App) -> None:
    body = app.get("/api/v1/certificates/5").json()
    assert body["valid"] and body["valid_signatures"] == 3 and len(body["absent"]) == 1
    assert all(s["valid"] and s["member"] for s in body["signatures"])


def test_certificate_check_flags_a_forged_signature(tmp_path: Path, demo: DemoChain) -> None:
    db = tmp_path / "ledger.db"
    shutil.copyfile(demo.db, db)
    conn = sqlite3.connect(db)
    sigs = conn.execute("SELECT signatures FROM certificates WHERE height = 5").fetchone()[0]
    other = conn.execute("SELECT signatures FROM certificates WHERE height = 6").fetchone()[0]
    conn.close()
    # Validator 0's signature on block 6 pasted into block 5's certificate.
    first_sig_5 = sigs.split('"signature":"')[1].split('"')[0]
    first_sig_6 = other.split('"signature":"')[1].split('"')[0]
    tamper(
        db,
        "certificates",
        "UPDATE certificates SET signatures = ? WHERE height = 5",
        (sigs.replace(first_sig_5, first_sig_6),),
    )
    home = node_home(tmp_path, demo.harness.genesis, db, demo.tensor_dir, free_ports(1)[0])
    served = App(home)
    try:
        body = served.get("/api/v1/certificates/5").json()
        assert not body["valid"] and "invalid" in body["problem"]
        assert [s["valid"] for s in body["signatures"]].count(False) == 1
        assert body["valid_signatures"] == 2
        html = served.get("/blocks/5").text
        assert "sig-invalid" in html and "✗ invalid" in html
        report = served.get("/api/v1/verify").json()
        assert not report["ok"] and report["first_bad_height"] == 5
    finally:
        served.close()


def test_verify_passes_and_counts_only_the_range(app: App, demo: DemoChain) -> None:
    whole = app.get("/api/v1/verify").json()
    assert whole["ok"] and whole["blocks"] == demo.harness.height == whole["end"]
    part = app.get("/api/v1/verify", params={"from": 10, "to": 20}).json()
    assert part["ok"] and part["blocks"] == 11 and part["replayed"] == 20
    assert part["state_root"] == demo.harness.results[19].state_root


def test_verify_with_tensors_recomputes_the_reexecuted_jobs(app: App) -> None:
    without = app.get("/api/v1/verify").json()
    assert without["trusted_reexecutions"] >= 1 and without["reexecuted_jobs"] == 0
    body = app.get("/api/v1/verify", params={"tensors": "true"}).json()
    assert body["ok"] and body["reexecuted_jobs"] == without["trusted_reexecutions"]
    assert body["trusted_reexecutions"] == 0 and not body["notes"]


def test_verify_range_names_the_first_bad_height(tmp_path: Path, demo: DemoChain) -> None:
    db = tmp_path / "ledger.db"
    shutil.copyfile(demo.db, db)
    tamper(db, "receipts", "UPDATE receipts SET message = 'all good' WHERE height = 2", ())
    store = Store(str(db), create=False)
    report = verify_ledger(store, genesis=demo.harness.genesis)
    assert not report.ok and report.first_bad_height == 2 and "receipt 0" in (report.problem or "")
    before = verify_ledger(store, genesis=demo.harness.genesis, end=1)
    assert before.ok and before.blocks == 1 and before.verified_height == 1
    after = verify_ledger(store, genesis=demo.harness.genesis, start=3)  # replays 2: caught
    assert not after.ok and after.first_bad_height == 2 and after.blocks == 0
    store.close()


def test_verify_agrees_with_layerchain_verify(app: App, demo: DemoChain) -> None:
    store = Store(str(demo.db), create=False)
    cli = verify_ledger(store)
    store.close()
    mine = app.get("/api/v1/verify").json()
    assert cli.ok and mine["ok"]
    assert (mine["blocks"], mine["txs"], mine["certificate_signatures"], mine["state_root"]) == (
        cli.blocks,
        cli.txs,
        cli.certificate_signatures,
        cli.final_state_root,
    )
    assert mine["trusted_reexecutions"] == cli.trusted_reexecutions


def test_verify_refuses_a_backwards_range(app: App) -> None:
    response = app.get("/api/v1/verify", params={"from": 9, "to": 3})
    assert response.status_code == 422 and "from (9)" in response.json()["detail"]


def test_feeds_page_without_overlap(app: App, demo: DemoChain) -> None:
    alice = demo.harness.address("alice")
    seen: list[tuple[int, int]] = []
    before = None
    while True:
        params: dict[str, Any] = {"limit": 7}
        if before:
            params["before"] = before
        page = app.get(f"/api/v1/feed/txs/{alice}", params=params).json()
        seen += [(t["height"], t["index"]) for t in page["txs"]]
        before = page["next_before"]
        if before is None:
            break
    assert seen == sorted(seen, reverse=True) and len(seen) == len(set(seen))
    assert len(seen) == demo.harness.state.nonce(alice)
    jobs = app.get("/api/v1/feed/jobs", params={"limit": 3}).json()
    older = app.get("/api/v1/feed/jobs", params={"limit": 3, "before": jobs["next_before"]}).json()
    ids = [j["id"] for j in jobs["jobs"] + older["jobs"]]
    assert len(set(ids)) == 6 and ids[0] == demo.expired_job
    expired = app.get("/api/v1/feed/jobs", params={"status": "expired"}).json()["jobs"]
    assert [j["id"] for j in expired] == [demo.expired_job]
    html = app.get("/jobs", params={"status": "expired"}).text
    assert demo.expired_job[:8] in html and demo.dag_job[:8] not in html
    assert app.get("/jobs", params={"status": "bogus"}).status_code == 404


def test_job_txs_are_each_miners_commit_and_reveal(app: App, demo: DemoChain) -> None:
    body = app.get(f"/api/v1/feed/jobs/{demo.disputed_job}/txs").json()
    kinds = sorted((t["sender"] == demo.liar, t["type"]) for t in body["txs"])
    assert kinds == [
        (False, "commit_result"),
        (False, "reveal_result"),
        (True, "commit_result"),
        (True, "reveal_result"),
    ]
    assert all(t["ok"] for t in body["txs"])
    html = app.get(f"/jobs/{demo.disputed_job}").text
    for t in body["txs"]:
        assert f"/txs/{t['tx_hash']}" in html


def test_miner_csv_lists_every_result(app: App, demo: DemoChain) -> None:
    response = app.get(f"/api/v1/feed/results/{demo.liar}/csv")
    assert response.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert {r["job_id"]: r["verdict"] for r in rows} == {
        demo.disputed_job: "wrong",
        demo.dag_job: "right",
    }
    assert int(next(r for r in rows if r["verdict"] == "wrong")["slashed"]) > 0


def test_run_route_scales_metrics_into_curves(app: App) -> None:
    body = app.get(f"/api/v1/runs/{RUN}").json()
    series = {s["name"]: s for s in body["series"]}
    assert series["loss"]["values"][0] == pytest.approx(2.302585)
    assert series["accuracy"]["values"][-1] == pytest.approx(0.931)
    assert len(body["checkpoints"]) == 5 and body["last_epoch"] == 4
    assert body["job_counts"]["settled"] >= 5
    assert app.get("/api/v1/runs/nope").status_code == 404


# ------------------------------------------------------------------------------------ HTML


def test_every_page_renders(app: App, demo: DemoChain) -> None:
    pages = {
        "/": "Latest blocks",
        "/blocks": "Blocks",
        "/blocks/3": "Commit certificate",
        f"/txs/{demo.failed_tx}": "insufficient_funds",
        "/jobs": demo.dag_job[:8],
        f"/jobs/{demo.disputed_job}": "re-executed",
        f"/jobs/{demo.dag_job}": "dag-input",
        f"/jobs/{demo.expired_job}": "refunded",
        f"/accounts/{demo.liar}": "Export CSV",
        "/validators": "node3",
        "/runs": RUN,
        f"/runs/{RUN}": "<polyline",
        "/verify": "Verify the chain",
        "/verify?from=1&to=5": "verified",
    }
    for path, needle in pages.items():
        response = app.get(path)
        assert response.status_code == 200, (path, response.text[:300])
        assert needle in response.text, path
    tx_page = app.get(f"/txs/{demo.failed_tx}").text  # failed, yet committed: provably in a block
    assert "✓ Merkle path of" in tx_page and f"/api/v1/txs/{demo.failed_tx}/proof" in tx_page


def test_unknown_things_get_an_html_404(app: App) -> None:
    for path in ("/blocks/999999", "/txs/" + "0" * 64, "/jobs/" + "1" * 64, "/runs/nothing"):
        response = app.get(path)
        assert response.status_code == 404, path
        assert response.headers["content-type"].startswith("text/html")
        assert "Not found" in response.text


def test_malformed_references_get_a_clear_answer_not_a_500(app: App) -> None:
    for path in ("/blocks/²", "/blocks/xyz", "/txs/xyz", "/jobs/ABC", "/accounts/nothex"):
        response = app.get(path)
        assert response.status_code == 404, path
        assert "64 lowercase hex" in response.text, path
    assert app.get("/search", params={"q": "²"}).status_code == 404
    for path in (
        "/api/v1/certificates/²",
        "/api/v1/feed/jobs?before=²:x",
        "/api/v1/feed/txs/" + "a" * 64 + "?before=1:²",
    ):
        response = app.get(path)
        assert response.status_code == 422, (path, response.text)
        assert response.json()["detail"]


def test_search_redirects_to_the_page(app: App, demo: DemoChain) -> None:
    cases = {
        "7": "/blocks/7",
        demo.transfer_tx: f"/txs/{demo.transfer_tx}",
        demo.agreed_job: f"/jobs/{demo.agreed_job}",
        demo.liar: f"/accounts/{demo.liar}",
        RUN: f"/runs/{RUN}",
    }
    for q, target in cases.items():
        response = app.get("/search", params={"q": q})
        assert response.status_code == 303 and response.headers["location"] == target, q
    assert app.get("/search", params={"q": "no such thing"}).status_code == 404


def test_pages_render_on_a_chain_with_no_blocks(tmp_path: Path) -> None:
    from explorer_chains import demo_genesis

    genesis = demo_genesis(free_ports(4))
    db = tmp_path / "ledger.db"
    Store.open(str(db), genesis).close()
    served = App(node_home(tmp_path, genesis, db, tmp_path / "tensors", free_ports(1)[0]))
    try:
        for path in ("/", "/blocks", "/jobs", "/validators", "/runs", "/verify"):
            response = served.get(path)
            assert response.status_code == 200, (path, response.text[:300])
        assert "No block committed yet" in served.get("/").text
        assert served.get("/verify", params={"from": 1}).status_code == 404
        assert served.get("/api/v1/stats/overview").json()["rate"]["txs_per_s"] == 0
    finally:
        served.close()


def test_batch_txs_link_every_job_they_name(tmp_path: Path) -> None:
    """A post_jobs tx lists the jobs it created; commit_results / reveal_results list theirs,
    and each job's tx feed shows the batches that carried its results."""
    from explorer_chains import demo_genesis

    from ledger.harness import ChainHarness, validator_keys_for
    from ledger.kernels import KERNEL_VERSION
    from ledger.tensor import Tensor
    from ledger.transactions import post_job_body, posted_jobs, tensor_input

    genesis = demo_genesis(free_ports(4))
    db, tensor_dir = tmp_path / "ledger.db", tmp_path / "tensors"
    c = ChainHarness(
        genesis=genesis,
        validator_keys=validator_keys_for(4),
        tensor_dir=tensor_dir,
        db_url=str(db),
    )
    bodies = []
    for seed in range(3):
        x = Tensor(np.random.default_rng(seed).integers(-99, 99, size=(2, 3)), 8)
        w = Tensor(np.full((3, 2), seed + 1, dtype=np.int64), 8)
        b = Tensor(np.zeros(2, dtype=np.int64), 16)
        for t in (x, w, b):
            c.put_tensor(t)
        bodies.append(
            post_job_body(
                op="dense_forward",
                kernel_version=KERNEL_VERSION,
                inputs=[tensor_input(t) for t in (x, w, b)],
                params={"act": "relu", "out_frac": 8},
                replication=2,
                reward=10,
                deadline=5,
            )
        )
    batch = c.post_jobs("alice", bodies)
    c.commit_block([batch])
    ids = [job_id for job_id, _ in posted_jobs(batch)]
    results = {job_id: c.compute(job_id) for job_id in ids}
    commits = [c.commit_many(m, results) for m in ("miner-a", "miner-b")]
    c.commit_block(commits)
    reveals = [c.reveal_many(m, results) for m in ("miner-a", "miner-b")]
    c.commit_block(reveals)
    assert c.store is not None
    c.store.close()
    served = App(node_home(tmp_path, genesis, db, tensor_dir, free_ports(1)[0]))
    try:
        page = served.get(f"/txs/{batch.hash}").text
        assert "3 jobs posted in one tx" in page and all(f"/jobs/{j}" in page for j in ids)
        page = served.get(f"/txs/{commits[0].hash}").text
        assert "3 results in one tx" in page and all(f"/jobs/{j}" in page for j in ids)
        feed = served.get(f"/api/v1/feed/jobs/{ids[1]}/txs").json()["txs"]
        assert sorted(t["type"] for t in feed) == ["commit_results"] * 2 + ["reveal_results"] * 2
        assert "settled" in served.get(f"/jobs/{ids[1]}").text
    finally:
        served.close()
