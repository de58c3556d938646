"""Tx inclusion proofs: built from a ledger, checked with the genesis alone, every forged link
refused with a message naming it."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from ledger_chain import chain
from typer.testing import CliRunner

from layerchain.cli import app
from ledger.harness import ChainHarness
from ledger.lightclient import ProofError, build_tx_proof, expected_sides, verify_tx_proof
from ledger.merkle import merkle_proof


def _chain_with_blocks_of(tmp_path: Path, sizes: list[int]) -> tuple[ChainHarness, list[str]]:
    c = chain(tmp_path, balances={"alice": 10_000, "bob": 10_000})
    hashes = []
    for size in sizes:
        txs = [c.transfer("alice" if i % 2 else "bob", "carol", 1 + i) for i in range(size)]
        c.commit_block(txs)
        hashes += [tx.hash for tx in txs]
    return c, hashes


def _proof(c: ChainHarness, tx_hash: str) -> dict[str, Any]:
    assert c.store is not None
    proof = build_tx_proof(c.store, tx_hash)
    assert proof is not None
    return json.loads(json.dumps(proof.to_dict()))  # what a client gets over HTTP


def test_every_tx_of_blocks_of_many_sizes_has_a_proof_that_verifies(tmp_path: Path) -> None:
    c, hashes = _chain_with_blocks_of(tmp_path, [1, 2, 3, 5, 8])
    for tx_hash in hashes:
        checked = verify_tx_proof(_proof(c, tx_hash), c.genesis)
        assert checked.tx.hash == tx_hash
        assert checked.header.hash == c.store.get_block(checked.height).hash  # type: ignore[union-attr]
    assert c.store is not None and build_tx_proof(c.store, "ab" * 32) is None


def test_the_sides_of_a_path_follow_the_index_and_the_block_size() -> None:
    for n in range(1, 40):
        hashes = [f"{i:064x}" for i in range(n)]
        for index in range(n):
            path = merkle_proof(hashes, index)
            assert [side for side, _ in path] == expected_sides(index, n)


def _forge(proof: dict[str, Any], change: Any) -> dict[str, Any]:
    forged = copy.deepcopy(proof)
    change(forged)
    return forged


def _set(path: list[Any], value: Any) -> Any:
    def change(proof: dict[str, Any]) -> None:
        target = proof
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return change


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (_set(["tx", "body", "amount"], 999), "signature"),
        (_set(["tx", "nonce"], 77), "signature"),
        (_set(["merkle_path", 0, "hash"], "00" * 32), "tx_root"),
        (_set(["merkle_path", 0, "side"], "X"), "merkle_path"),
        (lambda p: p["merkle_path"].pop(), "path does not lead from index"),
        (_set(["index"], 0), "path does not lead from index"),
        (_set(["index"], 99), "outside a block"),
        (_set(["height"], 1), "height"),
        (_set(["header", "time_ms"], 1), "different block"),
        (_set(["header", "tx_root"], "00" * 32), "tx_root"),
        (lambda p: p["certificate"]["signatures"].pop(), "quorum"),
        (lambda p: p["certificate"]["signatures"][0].update(signature="ab" * 64), "certified"),
        (lambda p: p["certificate"]["signatures"][0].update(signature="zz"), "certificate"),
        (_set(["header", "chain_id"], "another-chain"), "chain"),
        (lambda p: p.pop("certificate"), "exactly the keys"),
        (_set(["tx"], {"type": "transfer"}), "malformed proof"),
    ],
)
def test_a_forged_link_is_refused_naming_it(tmp_path: Path, change: Any, message: str) -> None:
    c, hashes = _chain_with_blocks_of(tmp_path, [2, 5])
    proof = _proof(c, hashes[4])  # index 2 of the 5-tx block at height 2
    assert proof["height"] == 2 and proof["index"] == 2
    with pytest.raises(ProofError, match=message):
        verify_tx_proof(_forge(proof, change), c.genesis)


def test_a_proof_is_worthless_against_another_chain_s_genesis(tmp_path: Path) -> None:
    c, hashes = _chain_with_blocks_of(tmp_path / "a", [3])
    other = chain(tmp_path / "b", balances={"alice": 10_000, "bob": 10_000}, chain_id="other")
    with pytest.raises(ProofError):
        verify_tx_proof(_proof(c, hashes[1]), other.genesis)


def test_the_verify_proof_command_says_ok_or_names_the_broken_link(tmp_path: Path) -> None:
    c, hashes = _chain_with_blocks_of(tmp_path, [3])
    genesis = tmp_path / "genesis.json"
    genesis.write_text(json.dumps(c.genesis.to_dict()))
    good = tmp_path / "proof.json"
    good.write_text(json.dumps(_proof(c, hashes[2])))
    outcome = CliRunner().invoke(app, ["verify-proof", str(good), "--genesis", str(genesis)])
    assert outcome.exit_code == 0, outcome.output
    assert f"OK: tx {hashes[2]}" in outcome.output and "tx 2 of block 1" in outcome.output
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(_forge(_proof(c, hashes[2]), _set(["index"], 0))))
    outcome = CliRunner().invoke(app, ["verify-proof", str(bad), "--genesis", str(genesis)])
    assert outcome.exit_code == 1 and "path does not lead from index 0" in outcome.output
    outcome = CliRunner().invoke(
        app, ["verify-proof", str(tmp_path / "none.json"), "--genesis", str(genesis)]
    )
    assert outcome.exit_code == 1 and "cannot read" in outcome.output


def test_verify_proof_fetches_from_a_node_it_does_not_trust(tmp_path: Path) -> None:
    """`--node URL TX`: the proof comes from any node and is checked like a file; a node that
    answers with a valid proof of another tx, a 404 or nothing at all is refused."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    c, hashes = _chain_with_blocks_of(tmp_path, [3])
    genesis = tmp_path / "genesis.json"
    genesis.write_text(json.dumps(c.genesis.to_dict()))
    lying_for = hashes[0]  # asked for this one, the node answers another tx's (valid) proof

    class Node(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            asked = self.path.split("/")[-2]
            known = asked in hashes
            served = hashes[1] if asked == lying_for else asked
            body = json.dumps(_proof(c, served)).encode() if known else b'{"detail":"no"}'
            self.send_response(200 if known else 404)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Node)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    run = CliRunner().invoke
    try:
        args = ["verify-proof", "--genesis", str(genesis), "--node", url]
        outcome = run(app, [*args, hashes[2]])
        assert outcome.exit_code == 0 and f"OK: tx {hashes[2]}" in outcome.output, outcome.output
        outcome = run(app, [*args, lying_for])
        assert outcome.exit_code == 1 and "a proof of tx" in outcome.output
        outcome = run(app, [*args, "cd" * 32])
        assert outcome.exit_code == 1 and "HTTP 404" in outcome.output
        outcome = run(app, [*args, "not-a-hash"])
        assert outcome.exit_code == 1 and "is not a tx hash" in outcome.output
    finally:
        server.shutdown()
        server.server_close()
    outcome = run(app, [*args, hashes[2]])
    assert outcome.exit_code == 1 and "cannot reach" in outcome.output
