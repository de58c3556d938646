"""`verify_ledger` and `layerchain verify`: a clean ledger passes; each kind of tampering is
caught at the height where it was made, with a message saying what is wrong."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from ledger_chain import RELU8, chain, dense_inputs, fake_output
from typer.testing import CliRunner

from layerchain.cli import app
from ledger.genesis import Params
from ledger.harness import ChainHarness, harness_genesis
from ledger.schema import LEDGER_TABLES
from ledger.store import Store
from ledger.verify import verify_ledger

TAMPER_HEIGHT = 3


def _chain(tmp_path: Path) -> ChainHarness:
    c = chain(tmp_path, params=Params(audit_rate_ppm=0))
    c.commit_block([c.transfer("alice", "bob", 5)])
    post = c.post_job("alice", op="dense_forward", inputs=dense_inputs(c), params=RELU8)
    c.commit_block([post])
    c.settle(post.hash, ["m1", "liar"], outputs={"liar": fake_output("x")})  # heights 3, 4
    c.commit_block([c.transfer("bob", "alice", 1), c.transfer("alice", "carol", 2)])
    return c


def _tamper(store: Store, *statements: str) -> None:
    """Drop the append-only triggers (as an attacker with the file would), then edit rows."""
    with store.engine.begin() as conn:
        for table in LEDGER_TABLES:
            for action in ("update", "delete"):
                conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {table}_no_{action}")
        for statement in statements:
            conn.exec_driver_sql(statement)


def _fresh(store: Store) -> Store:
    return Store(store.url, create=False)


def test_a_clean_ledger_verifies(tmp_path: Path) -> None:
    c = _chain(tmp_path)
    assert c.store is not None
    report = verify_ledger(c.store)
    assert report.ok, report.summary()
    assert (report.blocks, report.head, report.verified_height) == (5, 5, 5)
    assert report.txs == sum(len(r.receipts) for r in c.results)
    assert report.certificate_signatures == 5 * c.genesis.quorum
    assert report.final_state_root == c.state.root
    assert report.trusted_reexecutions == 1 and report.reexecuted_jobs == 0
    full = verify_ledger(c.store, tensors=c.tensors, reexecute=True)
    assert full.ok and full.reexecuted_jobs >= 1 and full.trusted_reexecutions == 0


TAMPERING = [
    (
        "tx body",
        "UPDATE txs SET body = replace(body, '\"amount\":5', '\"amount\":50') WHERE height = 1",
        1,
        "tx_root does not match",
    ),
    (
        "header field",
        f"UPDATE blocks SET time_ms = time_ms + 1 WHERE height = {TAMPER_HEIGHT}",
        TAMPER_HEIGHT,
        "not the digest of the stored header",
    ),
    (
        "another header field",
        f"UPDATE blocks SET view = 7 WHERE height = {TAMPER_HEIGHT}",
        TAMPER_HEIGHT,
        "header field",
    ),
    (
        "certificate signature",
        'UPDATE certificates SET signatures = replace(signatures, \'"signature":"\', '
        f'\'"signature":"00\') WHERE height = {TAMPER_HEIGHT}',
        TAMPER_HEIGHT,
        "signature",
    ),
    (
        "receipt of a failed tx",
        f"UPDATE receipts SET code = 'bad_nonce', ok = 0 WHERE height = {TAMPER_HEIGHT}",
        TAMPER_HEIGHT,
        "receipt 0 is stored as 'bad_nonce'",
    ),
    (
        "deleted certificate",
        f"DELETE FROM certificates WHERE height = {TAMPER_HEIGHT}",
        TAMPER_HEIGHT,
        "certificate is missing",
    ),
    (
        "deleted receipt",
        f"DELETE FROM receipts WHERE height = {TAMPER_HEIGHT} AND idx = 1; ",
        TAMPER_HEIGHT,
        "receipts stored",
    ),
    (
        "deleted first receipt",
        "DELETE FROM receipts WHERE height = 5 AND idx = 0",
        5,
        "receipts stored",
    ),
    (
        "state diff",
        f"UPDATE block_diffs SET diff = replace(diff, '\"balance\":', '\"balance\":1') "
        f"WHERE height = {TAMPER_HEIGHT}",
        TAMPER_HEIGHT,
        "state diff differs",
    ),
    (
        "stored state root",
        "UPDATE blocks SET state_root = app_hash WHERE height = 5",
        5,
        "state root differs",
    ),
]


@pytest.mark.parametrize(
    ("what", "statement", "height", "message"), TAMPERING, ids=[t[0] for t in TAMPERING]
)
def test_tampering_is_caught_at_its_height(
    tmp_path: Path, what: str, statement: str, height: int | None, message: str
) -> None:
    c = _chain(tmp_path)
    assert c.store is not None
    _tamper(c.store, statement)
    report = verify_ledger(_fresh(c.store))
    assert not report.ok, what
    assert report.first_bad_height == height, report.problem
    assert message in (report.problem or ""), report.problem
    assert report.verified_height == height - 1


def test_a_deleted_tx_row_is_caught(tmp_path: Path) -> None:
    c = _chain(tmp_path)
    assert c.store is not None
    _tamper(
        c.store,
        "DELETE FROM receipts WHERE height = 5 AND idx = 1",
        "DELETE FROM txs WHERE height = 5 AND idx = 1",
    )
    report = verify_ledger(_fresh(c.store))
    assert (report.ok, report.first_bad_height) == (False, 5)
    assert "header says 2 txs, body has 1" in (report.problem or "")


def test_a_deleted_last_block_is_not_a_failure_but_a_shorter_chain(tmp_path: Path) -> None:
    c = _chain(tmp_path)
    assert c.store is not None
    _tamper(
        c.store,
        "PRAGMA foreign_keys = OFF",
        "DELETE FROM blocks WHERE height = 2",
    )
    report = verify_ledger(_fresh(c.store))
    assert (report.ok, report.first_bad_height) == (False, 2)
    assert "block 2 is missing" in (report.problem or "")


def test_a_different_genesis_is_refused(tmp_path: Path) -> None:
    c = _chain(tmp_path)
    assert c.store is not None
    report = verify_ledger(c.store, genesis=harness_genesis(balances={"alice": 1}))
    assert (report.ok, report.first_bad_height) == (False, 0)
    assert "is not the given genesis" in (report.problem or "")


def test_missing_tensors_are_named(tmp_path: Path) -> None:
    c = _chain(tmp_path)
    assert c.store is not None
    from ledger.tensorstore import TensorStore

    report = verify_ledger(c.store, tensors=TensorStore(tmp_path / "empty"))
    assert (report.ok, report.first_bad_height) == (False, 4)
    assert "is not in the tensor store" in (report.problem or "")


def _db(c: ChainHarness) -> str:
    assert c.store is not None
    return c.store.url.removeprefix("sqlite:///")


def test_cli_verify_ok_and_json(tmp_path: Path) -> None:
    c = _chain(tmp_path)
    runner = CliRunner()
    outcome = runner.invoke(app, ["verify", _db(c)])
    assert outcome.exit_code == 0, outcome.output
    assert outcome.output.startswith("OK: 5 blocks")
    c.genesis.save(tmp_path / "genesis.json")
    outcome = runner.invoke(
        app,
        [
            "verify",
            _db(c),
            "--genesis",
            str(tmp_path / "genesis.json"),
            "--reexecute",
            "--tensors",
            str(tmp_path / "tensors"),
            "--json",
        ],
    )
    assert outcome.exit_code == 0, outcome.output
    report = json.loads(outcome.output)
    assert report["ok"] and report["verified_height"] == 5


def test_cli_verify_counts_a_range_and_still_replays_below_it(tmp_path: Path) -> None:
    c = _chain(tmp_path)
    outcome = CliRunner().invoke(app, ["verify", _db(c), "--from", "2", "--to", "4", "--json"])
    assert outcome.exit_code == 0, outcome.output
    report = json.loads(outcome.output)
    assert (report["blocks"], report["replayed"], report["verified_height"]) == (3, 4, 4)
    assert report["final_state_root"] == c.results[3].state_root
    assert c.store is not None
    _tamper(c.store, "UPDATE blocks SET time_ms = time_ms + 1 WHERE height = 1")
    outcome = CliRunner().invoke(app, ["verify", _db(c), "--from", "3"])
    assert outcome.exit_code == 1 and "FAILED at height 1" in outcome.output
    outcome = CliRunner().invoke(app, ["verify", _db(c), "--from", "4", "--to", "2"])
    assert outcome.exit_code == 1 and "give 1 <= from <= to" in outcome.output
    outcome = CliRunner().invoke(app, ["verify", _db(c), "--to", "9"])
    assert outcome.exit_code == 1 and "block 6 is missing: the head is 5" in outcome.output


def test_cli_verify_names_the_first_bad_height(tmp_path: Path) -> None:
    c = _chain(tmp_path)
    assert c.store is not None
    _tamper(c.store, "UPDATE blocks SET time_ms = time_ms + 1 WHERE height = 4")
    outcome = CliRunner().invoke(app, ["verify", _db(c)])
    assert outcome.exit_code == 1
    assert "FAILED at height 4" in outcome.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["verify", "/nonexistent/ledger.db"], "does not exist"),
        (["verify", "LEDGER", "--reexecute"], "--reexecute needs --tensors"),
    ],
)
def test_cli_verify_bad_arguments(tmp_path: Path, args: list[str], message: str) -> None:
    args = [a.replace("LEDGER", str(tmp_path / "x.db")) for a in args]
    outcome = CliRunner().invoke(app, args)
    assert outcome.exit_code == 1
    assert message in outcome.output


def test_cli_verify_refuses_a_non_ledger_without_touching_it(tmp_path: Path) -> None:
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not a database at all" * 100)
    outcome = CliRunner().invoke(app, ["verify", str(junk)])
    assert outcome.exit_code == 1
    assert "FAILED at height 0" in outcome.output and "not a layerchain ledger" in outcome.output
    assert junk.read_bytes() == b"not a database at all" * 100
