"""The SQLite store: round trips, append-only triggers, pragmas, atomic appends under SIGKILL,
projections, state reload and reindex."""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from ledger_chain import RELU8, chain, dense_inputs, fake_output
from sqlalchemy import text
from sqlalchemy.exc import DatabaseError

from ledger.errors import StoreError
from ledger.harness import ChainHarness, harness_genesis
from ledger.schema import LEDGER_TABLES
from ledger.state import State
from ledger.store import Store
from ledger.verify import reindex, verify_ledger

HERE = Path(__file__).parent


def _busy_chain(tmp_path: Path) -> ChainHarness:
    """A few blocks with transfers, jobs in every status, results, a run and a failed tx."""
    c = chain(tmp_path)
    posts = [
        c.post_job("alice", op="dense_forward", inputs=dense_inputs(c, seed=i), params=RELU8)
        for i in range(3)
    ]
    c.commit_block([*posts, c.transfer("alice", "bob", 5)])
    c.settle(posts[0].hash, ["m1", "m2"])
    c.settle(posts[1].hash, ["m1", "liar"], outputs={"liar": fake_output("x")})
    c.commit_block(
        [
            c.checkpoint("alice", "run-a", 0, "11" * 32, {"loss_micro": 5}),
            c.transfer("bob", "x", 10**6),
        ]
    )
    return c


def test_blocks_txs_receipts_and_certificates_round_trip(tmp_path: Path) -> None:
    c = _busy_chain(tmp_path)
    store = c.store
    assert store is not None
    head = store.head()
    assert (head.height, head.hash, head.state_root) == (c.height, c.head.hash, c.state.root)  # type: ignore[union-attr]
    for result in c.results:
        block = store.get_block(result.height)
        assert block is not None and block.hash == result.block_hash
        assert store.get_block_by_hash(result.block_hash) == block
        cert = store.get_certificate(result.height)
        assert cert is not None and cert.block_hash == result.block_hash
        assert len(cert.signatures) == c.genesis.quorum
        assert [r.receipt for r in store.txs_of_block(result.height)] == list(result.receipts)
        assert store.get_diff(result.height) == result.diff_json
        for i, tx in enumerate(block.txs):
            record = store.get_tx(tx.hash)
            assert record is not None and (record.height, record.index) == (result.height, i)
            assert record.receipt == result.receipts[i]
    assert store.get_block(99) is None and store.get_tx("00" * 32) is None
    failed = store.list_txs(limit=1)[0]
    assert failed.receipt.code == "insufficient_funds"


def test_paging(tmp_path: Path) -> None:
    c = _busy_chain(tmp_path)
    store = c.store
    assert store is not None
    first = store.list_blocks(limit=2)
    assert [b.header.height for b in first] == [c.height, c.height - 1]
    rest = store.list_blocks(before=first[-1].header.height, limit=100)
    assert [b.header.height for b in rest] == list(range(c.height - 2, 0, -1))
    page1 = store.list_txs(sender=c.address("alice"), limit=2)
    page2 = store.list_txs(sender=c.address("alice"), before=(page1[-1].height, page1[-1].index))
    hashes = [r.tx.hash for r in page1 + page2]
    assert len(hashes) == len(set(hashes)) == 5  # transfer, 3 posts, checkpoint
    jobs = store.list_jobs()
    assert len(jobs) == 3
    assert store.list_jobs(after=(jobs[0].posted_height, jobs[0].id)) == jobs[1:]
    assert [j.id for j in store.list_jobs(status="open")] == [
        j.id for j in jobs if j.status == "open"
    ]
    assert {j.status for j in store.list_jobs(status=["settled"])} == {"settled"}
    assert store.job_counts() == {"settled": 2, "open": 1}


def test_projections_answer_the_explorer_queries(tmp_path: Path) -> None:
    c = _busy_chain(tmp_path)
    store = c.store
    assert store is not None
    assert store.get_account(c.address("bob")) == c.state.accounts[c.address("bob")]
    miners = dict(store.list_miners())
    assert miners[c.address("m1")].accepted == 2
    assert miners[c.address("liar")].rejected == 1
    assert store.list_miners()[0][0] == c.address("m1")  # best reputation first
    liar_results = store.results_of_miner(c.address("liar"))
    assert [r["verdict"] for r in liar_results] == ["wrong"]
    assert store.checkpoints("run-a")[0]["metrics"] == {"loss_micro": 5}
    assert [name for name, _ in store.list_runs()] == ["run-a"]
    assert store.list_jobs(status="open")[0].status == "open"


def test_load_state_restores_the_in_memory_state(tmp_path: Path) -> None:
    c = _busy_chain(tmp_path)
    assert c.store is not None
    loaded = c.store.load_state()
    assert (loaded.height, loaded.root, loaded.block_hash) == (
        c.state.height,
        c.state.root,
        c.state.block_hash,
    )
    assert {a: v.to_dict() for a, v in loaded.accounts.items()} == {
        a: v.to_dict() for a, v in c.state.accounts.items()
    }
    assert {j: v.to_dict() for j, v in loaded.jobs.items()} == {
        j: v.to_dict() for j, v in c.state.jobs.items()
    }
    assert loaded.miners == c.state.miners and loaded.runs == c.state.runs
    assert _live(loaded) == _live(c.state) != {}
    # the reloaded state carries on exactly like the original
    c.state = loaded
    c.commit_block([c.transfer("alice", "bob", 1)])
    assert verify_ledger(c.store, tensors=c.tensors).ok


def _live(state: State) -> dict[int, set[str]]:
    """The schedule without stale entries (it is invalidated lazily)."""
    live: dict[int, set[str]] = {}
    for height, ids in state.schedule.items():
        for job_id in ids:
            job = state.jobs[job_id]
            if height in (job.commit_deadline, job.reveal_deadline) and job.status in (
                "open",
                "revealing",
            ):
                live.setdefault(height, set()).add(job_id)
    return live


@pytest.mark.parametrize("table", LEDGER_TABLES)
def test_ledger_tables_are_append_only(tmp_path: Path, table: str) -> None:
    c = _busy_chain(tmp_path)
    assert c.store is not None
    with c.store.engine.connect() as conn:
        before = conn.execute(text(f"SELECT count(*) FROM {table}")).scalar()
    for statement in (f"UPDATE {table} SET rowid = rowid", f"DELETE FROM {table}"):
        with pytest.raises(DatabaseError, match="append-only"):
            with c.store.engine.begin() as conn:
                conn.execute(text(statement))
    with c.store.engine.connect() as conn:
        assert conn.execute(text(f"SELECT count(*) FROM {table}")).scalar() == before


def test_pragmas(tmp_path: Path) -> None:
    store = Store.open(str(tmp_path / "p.db"), harness_genesis())
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1


def test_append_refuses_gaps_and_mismatched_certificates(tmp_path: Path) -> None:
    c = chain(tmp_path)
    block = c.make_block()
    result = c.apply(block)
    assert c.store is not None
    with pytest.raises(StoreError, match="the head is 1"):
        c.store.append(block, result, c.certify(block))
    nxt = c.make_block()
    other = c.make_block([c.transfer("alice", "bob", 1)])
    from ledger.execution import apply_block

    result2 = apply_block(c.state, nxt, c.executor)
    with pytest.raises(StoreError, match="certificate is for a different block"):
        c.store.append(nxt, result2, c.certify(other))
    assert c.store.height == 1


def test_a_database_belongs_to_one_genesis(tmp_path: Path) -> None:
    url = str(tmp_path / "g.db")
    Store.open(url, harness_genesis(balances={"a": 1}))
    assert Store.open(url).genesis == harness_genesis(balances={"a": 1})
    with pytest.raises(StoreError, match="holds genesis"):
        Store.open(url, harness_genesis(balances={"a": 2}))
    with pytest.raises(StoreError, match="no genesis"):
        Store.open(str(tmp_path / "empty.db"))


def test_reindex_rebuilds_the_projections_identically(tmp_path: Path) -> None:
    c = _busy_chain(tmp_path)
    store = c.store
    assert store is not None
    before = store.projection_snapshot()
    with store.engine.begin() as conn:  # damage the projections: they are not the record
        conn.execute(text("UPDATE accounts SET balance = balance + 1"))
        conn.execute(text("DELETE FROM results"))
        conn.execute(text("DELETE FROM checkpoints"))
    assert store.projection_snapshot() != before
    report = reindex(store)
    assert report.blocks == c.height and report.state_root == c.state.root
    assert store.projection_snapshot() == before


def test_every_jobs_row_matches_its_record_after_jobs_were_rewritten(tmp_path: Path) -> None:
    """The jobs projection updates only the columns a job's life changes (the fixed ones stay
    as posted, to spare their indexes); every column must still equal the job's latest record,
    through posting, commits, reveals and settlement in blocks of their own."""
    c = _busy_chain(tmp_path)
    assert c.store is not None
    with c.store.engine.connect() as conn:
        rows = conn.execute(text("SELECT * FROM jobs")).mappings().all()
    assert len(rows) == 3 and {r["status"] for r in rows} >= {"settled", "open"}
    for row in rows:
        record = json.loads(row["record"])
        assert record == c.state.jobs[row["id"]].to_dict()
        for column, value in row.items():
            if column not in ("id", "record", "updated_height"):
                assert value == record[column], column


def test_reindex_command(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from layerchain.cli import app

    c = _busy_chain(tmp_path)
    assert c.store is not None
    before = c.store.projection_snapshot()
    with c.store.engine.begin() as conn:
        conn.execute(text("DELETE FROM miners"))
    outcome = CliRunner().invoke(app, ["reindex", c.store.url.removeprefix("sqlite:///")])
    assert outcome.exit_code == 0, outcome.output
    assert f"reindexed {c.height} blocks" in outcome.output
    assert c.store.projection_snapshot() == before


def _wait_for_height(db: Path, height: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with sqlite3.connect(db, timeout=5) as conn:
                row = conn.execute("SELECT max(height) FROM blocks").fetchone()
            if row and row[0] and row[0] >= height:
                return
        except sqlite3.OperationalError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"writer did not reach height {height}")


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_sigkill_mid_write_leaves_the_previous_height_intact(tmp_path: Path, seed: int) -> None:
    db = tmp_path / "killed.db"
    env = {**os.environ, "PYTHONPATH": str(HERE.parent.parent)}
    writer = subprocess.Popen([sys.executable, str(HERE / "store_writer.py"), str(db)], env=env)
    try:
        _wait_for_height(db, 2)
        time.sleep(random.Random(seed).uniform(0.0, 0.3))
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait()
    store = Store.open(str(db))
    head = store.head()
    assert head.height >= 2
    for stored in store.iter_blocks():
        assert stored.block.header.n_txs == len(stored.block.txs) == len(stored.receipts) == 300
        assert stored.certificate is not None and stored.diff_json is not None
    report = verify_ledger(store)
    assert report.ok, report.summary()
    assert report.verified_height == head.height
    # the projections are at the same height as the blocks
    accounts = dict(store.list_accounts(limit=1000))
    assert sum(a.nonce for a in accounts.values()) == 300 * head.height
