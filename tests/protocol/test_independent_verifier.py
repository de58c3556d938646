"""The independent verifier (written from docs/PROTOCOL.md alone) against a chain the project's own
code built: it accepts the real chain, rejects each kind of tampering at the right height, and
agrees with the project on canonical JSON, tensor hashes and the dense_forward kernel."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import independent_verifier as iv
import numpy as np
import pytest

from ledger import kernels
from ledger.encoding import canonical_json
from ledger.errors import ExactRangeError
from ledger.genesis import Params
from ledger.harness import ChainHarness
from ledger.tensor import Tensor, quantize
from ledger.transactions import post_job_body, posted_jobs, tensor_input

LEAKY = {"act": "leaky_relu", "out_frac": 10, "slope_num": 3, "slope_shift": 5}
RELU = {"act": "relu", "out_frac": 8}
HEAD = 14
SOLO = 10
"""The block where the replication-1 jobs settle."""
AUDIT_PPM = 500_000  # half the agreed jobs are audited: both branches of the §5.5 rule occur


def _layer(seed: int, n: int, k: int, m: int, x_frac: int = 8) -> tuple[Tensor, Tensor, Tensor]:
    rng = np.random.default_rng(seed)
    x = quantize(rng.normal(size=(n, k)), x_frac)
    w = quantize(rng.normal(size=(k, m)) * 0.5, 8)
    b = quantize(rng.normal(size=(m,)) * 0.1, 12)
    return x, w, b


class Built:
    """A stored chain with jobs (one fed by another), a dispute, transfers and failing txs."""

    def __init__(self, tmp: Path) -> None:
        self.db = tmp / "ledger.db"
        self.tensor_dir = tmp / "tensors"
        c = ChainHarness(
            balances={"alice": 1_000, "bob": 500},
            params=Params(audit_rate_ppm=AUDIT_PPM),
            tensor_dir=self.tensor_dir,
            db_url=str(self.db),
        )
        self.chain = c
        first = c.transfer("alice", "bob", 5)
        c.commit_block([first])  # 1
        x, w, b = _layer(0, 4, 3, 2)
        for t in (x, w, b):
            c.put_tensor(t)
        post1 = c.post_job(
            "alice", op="dense_forward", inputs=[tensor_input(t) for t in (x, w, b)], params=RELU
        )
        w2 = quantize(np.random.default_rng(1).normal(size=(2, 3)), 8)
        b2 = quantize(np.array([0.25, -0.5, 0.125]), 8)
        c.put_tensor(w2)
        c.put_tensor(b2)
        post2 = c.post_job(
            "alice",
            op="dense_forward",
            inputs=[{"job": post1.hash, "output": 0}, tensor_input(w2), tensor_input(b2)],
            params=LEAKY,
        )
        c.commit_block([post1, post2])  # 2
        c.settle(post1.hash, ["m1", "m2"])  # 3, 4: agreed
        c.settle(post2.hash, ["m1", "liar"], outputs={"liar": [iv.sha256_hex(b"lie")]})  # 5, 6
        self.jobs = (post1.hash, post2.hash)
        c.commit_block(
            [
                c.transfer("bob", "alice", 10_000),  # insufficient_funds
                first,  # a replay: bad_nonce
                c.checkpoint("alice", "run-1", 0, iv.sha256_hex(b"weights"), {"loss": -3}),
                c.transfer("bob", "carol", 7),
            ]
        )  # 7
        x3, w3, b3 = _layer(13, 2, 2, 2)
        for t in (x3, w3, b3):
            c.put_tensor(t)
        doomed = c.post_job(
            "alice",
            op="dense_forward",
            inputs=[tensor_input(t) for t in (x3, w3, b3)],
            params=RELU,
            deadline=1,
        )
        c.commit_block([doomed])  # 8: nobody commits, so it expires at the end of block 9
        self.doomed = doomed.hash
        solo = []
        for seed in (10, 11, 12):
            xs, ws, bs = _layer(seed, 2, 2, 2)
            for t in (xs, ws, bs):
                c.put_tensor(t)
            solo.append(
                c.post_job(
                    "bob",
                    op="dense_forward",
                    inputs=[tensor_input(t) for t in (xs, ws, bs)],
                    params={"act": "identity", "out_frac": 4},
                    replication=1,
                    reward=0 if seed == 12 else 7,
                )
            )
        c.commit_block(solo)  # 9
        c.commit_block([c.submit("m3", p.hash, c.compute(p.hash)) for p in solo])  # 10
        self.solo = [p.hash for p in solo]
        bodies = []
        for seed in (20, 21, 22):
            xs, ws, bs = _layer(seed, 2, 2, 2)
            for t in (xs, ws, bs):
                c.put_tensor(t)
            bodies.append(
                post_job_body(
                    op="dense_forward",
                    kernel_version="exact-v1",
                    inputs=[tensor_input(t) for t in (xs, ws, bs)],
                    params=RELU,
                    replication=2,
                    reward=10,
                    deadline=20,
                )
            )
        batch = c.post_jobs("alice", bodies)
        c.commit_block([batch])  # 11: one tx, three jobs
        batched = [job_id for job_id, _ in posted_jobs(batch)]
        out = {job_id: c.compute(job_id) for job_id in batched}
        first_two = dict(list(out.items())[:2])
        c.commit_block([c.commit_many("m1", out), c.commit_many("m2", first_two)])  # 12
        late = c.commit_many("m3", out)  # loses jobs 0 and 1, closes job 2
        c.commit_block([late, c.reveal_many("m1", out), c.reveal_many("m2", first_two)])  # 13
        c.commit_block([c.reveal("m3", batched[2], out[batched[2]])])  # 14
        assert c.receipt(late).message == "not applied: 0 job_not_open, 1 job_not_open"
        assert all(c.job(job_id).status == "settled" for job_id in batched)
        assert c.job(post1.hash).status == "settled"
        assert c.job(post2.hash).settlement == "reexecuted"
        assert c.job(doomed.hash).status == "expired"
        settlements = {c.job(j).settlement for j in (post1.hash, *self.solo)}
        assert settlements == {"agreed", "audited"}, settlements
        assert [r.code for r in c.results[6].receipts][:2] == ["insufficient_funds", "bad_nonce"]
        assert c.store is not None
        c.store.close()
        self.height = HEAD

    def tensor_bytes(self, h: str) -> bytes:
        return iv.dir_tensor_source(str(self.tensor_dir))(h)

    def tampered(self, tmp: Path, *statements: str) -> str:
        """A copy of the ledger with the append-only triggers dropped and `statements` run."""
        path = tmp / f"tampered-{len(list(tmp.glob('tampered-*')))}.db"
        src = sqlite3.connect(self.db)
        dst = sqlite3.connect(path)
        src.backup(dst)
        src.close()
        names = [r[0] for r in dst.execute("SELECT name FROM sqlite_master WHERE type='trigger'")]
        for name in names:
            dst.execute(f"DROP TRIGGER {name}")
        for s in statements:
            dst.execute(s)
        dst.commit()
        dst.close()
        return str(path)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    return Built(tmp_path_factory.mktemp("chain"))


def test_accepts_the_real_chain(built: Built) -> None:
    report = iv.verify_sqlite(str(built.db), built.tensor_bytes)
    assert report.height == built.height
    assert report.n_txs == 1 + 2 + 2 + 2 + 2 + 2 + 4 + 1 + 3 + 3 + 1 + 2 + 3 + 1
    assert report.genesis_hash == built.chain.genesis.hash
    assert report.state_root == built.chain.state.root
    assert report.kernel_checks == 8  # every settled dense_forward job, in Python integers


def _one_char_changed(text: str, old: str, new: str) -> str:
    assert old in text
    return text.replace(old, new, 1)


def _sql_str(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def _rejects(path: str, height: int, words: str) -> None:
    with pytest.raises(iv.VerifyError) as e:
        iv.verify_sqlite(path)
    assert e.value.height == height, str(e.value)
    assert words in str(e.value)


def _cell(built: Built, sql: str) -> str:
    con = sqlite3.connect(built.db)
    try:
        return str(con.execute(sql).fetchone()[0])
    finally:
        con.close()


def test_rejects_a_changed_tx_body(built: Built, tmp_path: Path) -> None:
    body = _cell(built, "SELECT body FROM txs WHERE height = 2 AND idx = 1")
    new = _one_char_changed(body, '"replication":2', '"replication":3')
    path = built.tampered(
        tmp_path, f"UPDATE txs SET body = {_sql_str(new)} WHERE height = 2 AND idx = 1"
    )
    _rejects(path, 2, "bad signature")


def test_rejects_a_changed_header_field(built: Built, tmp_path: Path) -> None:
    path = built.tampered(tmp_path, "UPDATE blocks SET time_ms = time_ms + 1 WHERE height = 4")
    _rejects(path, 4, "digest(header)")


def test_rejects_a_rehashed_header_by_its_certificate(built: Built, tmp_path: Path) -> None:
    con = sqlite3.connect(built.db)
    con.row_factory = sqlite3.Row
    row = con.execute("SELECT * FROM blocks WHERE height = 4").fetchone()
    con.close()
    header = {k: row[k] for k in iv.HEADER_KEYS}
    header["time_ms"] += 1
    new_hash = iv.block_hash(header)
    path = built.tampered(
        tmp_path,
        f"UPDATE blocks SET time_ms = time_ms + 1, hash = '{new_hash}' WHERE height = 4",
    )
    _rejects(path, 4, "certificate")


def test_rejects_a_bad_certificate_signature(built: Built, tmp_path: Path) -> None:
    sigs = _cell(built, "SELECT signatures FROM certificates WHERE height = 3")
    i = sigs.index('"signature":"') + len('"signature":"') + 10
    flipped = sigs[:i] + ("0" if sigs[i] != "0" else "1") + sigs[i + 1 :]
    path = built.tampered(
        tmp_path, f"UPDATE certificates SET signatures = {_sql_str(flipped)} WHERE height = 3"
    )
    _rejects(path, 3, "bad signature")


def test_rejects_a_certificate_below_quorum(built: Built, tmp_path: Path) -> None:
    sigs = iv.parse_json(_cell(built, "SELECT signatures FROM certificates WHERE height = 6"))
    short = iv.canonical_json(sigs[:-1]).decode()
    path = built.tampered(
        tmp_path, f"UPDATE certificates SET signatures = {_sql_str(short)} WHERE height = 6"
    )
    _rejects(path, 6, "quorum")


def test_rejects_a_changed_state_diff(built: Built, tmp_path: Path) -> None:
    diff = iv.parse_json(_cell(built, "SELECT diff FROM block_diffs WHERE height = 5"))
    account = next(iter(diff["accounts"]))
    diff["accounts"][account]["balance"] += 1
    text = iv.canonical_json(diff).decode()
    path = built.tampered(
        tmp_path, f"UPDATE block_diffs SET diff = {_sql_str(text)} WHERE height = 5"
    )
    _rejects(path, 5, "state_root")


def test_rejects_a_changed_receipt(built: Built, tmp_path: Path) -> None:
    path = built.tampered(
        tmp_path, "UPDATE receipts SET message = 'all fine' WHERE height = 7 AND idx = 0"
    )
    _rejects(path, 7, "receipts_root")


def _header_row(built: Built, height: int) -> dict:
    con = sqlite3.connect(built.db)
    con.row_factory = sqlite3.Row
    row = con.execute("SELECT * FROM blocks WHERE height = ?", (height,)).fetchone()
    con.close()
    return {k: row[k] for k in iv.HEADER_KEYS}


def test_rejects_a_broken_prev_hash_link(built: Built, tmp_path: Path) -> None:
    """Block 8 re-hashed after its prev_hash was changed: the link, not the hash, fails."""
    header = _header_row(built, 8)
    header["prev_hash"] = iv.sha256_hex(b"elsewhere")
    path = built.tampered(
        tmp_path,
        f"UPDATE blocks SET prev_hash = '{header['prev_hash']}', "
        f"hash = '{iv.block_hash(header)}' WHERE height = 8",
    )
    _rejects(path, 8, "prev_hash")


def test_block_1_links_to_the_genesis_hash(built: Built, tmp_path: Path) -> None:
    header = _header_row(built, 1)
    assert header["prev_hash"] == built.chain.genesis.hash
    path = built.tampered(
        tmp_path, """UPDATE meta SET value = replace(value, '"url":""', '"url":"x"')"""
    )
    _rejects(path, 1, "prev_hash")


def test_genesis_hash_covers_the_normalised_genesis() -> None:
    """§6.7: a genesis file that omits defaults hashes as if it spelled them out."""
    from ledger.genesis import Genesis

    raw = {
        "chain_id": "minimal",
        "validators": [{"address": "ab" * 32}],
        "params": {"replication": 3},
    }
    assert iv.genesis_hash(raw) == Genesis.from_dict(raw).hash
    assert iv.genesis_hash(raw) != iv.digest(raw)


def test_certificate_of_a_later_view_is_accepted(built: Built, tmp_path: Path) -> None:
    """§6.5: a block re-proposed after a view change commits in a view above its header's."""
    from ledger.certificate import sign_commit_vote
    from ledger.harness import validator_keys_for
    from ledger.store import Store
    from ledger.verify import verify_ledger

    block_hash = iv.block_hash(_header_row(built, HEAD))
    sigs = sorted(
        (
            {
                "signature": sign_commit_vote(k, built.chain.chain_id, HEAD, 3, block_hash),
                "validator": k.address,
            }
            for k in validator_keys_for(4)[1:]
        ),
        key=lambda s: s["validator"],
    )
    text = iv.canonical_json(sigs).decode()
    path = built.tampered(
        tmp_path,
        f"UPDATE certificates SET view = 3, signatures = {_sql_str(text)} WHERE height = {HEAD}",
    )
    assert iv.verify_sqlite(path).height == HEAD
    store = Store.open(path)
    try:
        assert verify_ledger(store).ok
    finally:
        store.close()


def test_kernel_check_catches_a_wrong_settled_output(built: Built, tmp_path: Path) -> None:
    """The head's diff is covered by no certificate yet (§6.4): a forged settled output there,
    with the head's state_root recomputed, is only caught by recomputing the kernel."""
    diff = iv.parse_json(_cell(built, f"SELECT diff FROM block_diffs WHERE height = {HEAD}"))
    prev_root = _cell(built, f"SELECT state_root FROM blocks WHERE height = {HEAD - 1}")
    jobs = iv.parse_json(_cell(built, "SELECT diff FROM block_diffs WHERE height = 4"))["jobs"]
    record = jobs[built.jobs[0]]
    assert record["status"] == "settled"
    record["outputs"] = [iv.sha256_hex(b"fake output")]
    diff["jobs"][built.jobs[0]] = record
    text = iv.canonical_json(diff).decode()
    root = iv.next_root(prev_root, text.encode())
    path = built.tampered(
        tmp_path,
        f"UPDATE block_diffs SET diff = {_sql_str(text)} WHERE height = {HEAD}",
        f"UPDATE blocks SET state_root = '{root}' WHERE height = {HEAD}",
    )
    assert iv.verify_sqlite(path).height == HEAD  # consistent without tensors
    with pytest.raises(iv.VerifyError) as e:
        iv.verify_sqlite(path, built.tensor_bytes)
    assert e.value.height == HEAD and "recomputed dense_forward" in str(e.value)


# --------------------------------------------------------------------------- encoding and tensors


@pytest.mark.parametrize(
    "value",
    [
        {"b": 1, "a": [True, False, None, -(2**63 - 1)], "": "x"},
        {"\uffff": 1, "\U0001f600": 2, "é": 3, "z": 4},
        ["\x00\x01\x1f\x7f", '"\\/\b\f\n\r\t', "ü€😀", "\u2028\u2029"],
    ],
)
def test_canonical_json_agrees_with_the_project(value: object) -> None:
    assert iv.canonical_json(value) == canonical_json(value)


@pytest.mark.parametrize(
    ("data", "frac"),
    [
        (np.arange(12, dtype=np.int32).reshape(3, 4) - 5, 7),
        (np.array([-(2**62), 2**62, 0], dtype=np.int64), 0),
        (np.arange(24, dtype=np.int64).reshape(2, 3, 2, 2), 30),
        (np.array([[7]], dtype=np.int32), 12),
    ],
)
def test_tensor_hash_from_wire_bytes(data: np.ndarray, frac: int) -> None:
    t = Tensor(data, frac)
    decoded = iv.decode_wire_tensor(t.to_bytes(), t.hash)
    assert decoded.hash == t.hash
    assert decoded.values() == [int(v) for v in data.ravel()]
    assert decoded.shape == data.shape


def test_tensor_wire_bytes_with_a_wrong_hash_are_refused() -> None:
    t = Tensor(np.array([1, 2, 3], dtype=np.int64), 4)
    with pytest.raises(iv.VerifyError, match="hash"):
        iv.decode_wire_tensor(t.to_bytes(), Tensor(np.array([1, 2, 4], dtype=np.int64), 4).hash)
    with pytest.raises(iv.VerifyError, match="payload"):
        iv.decode_wire_tensor(t.to_bytes() + b"\x00")


@pytest.mark.parametrize(
    ("params", "seed", "x_frac"),
    [
        (RELU, 3, 8),
        (LEAKY, 4, 8),
        ({"act": "identity", "out_frac": 16}, 5, 8),
        ({"act": "identity", "out_frac": 0}, 6, 12),  # large shift, ties and negatives
        ({"act": "leaky_relu", "out_frac": 3, "slope_num": 1, "slope_shift": 1}, 7, 10),
    ],
)
def test_dense_forward_in_python_integers_matches_the_kernels(
    params: dict, seed: int, x_frac: int
) -> None:
    x, w, b = _layer(seed, 5, 7, 3, x_frac)
    (expected,) = kernels.execute("dense_forward", params, [x, w, b])
    wires = [iv.decode_wire_tensor(t.to_bytes(), t.hash) for t in (x, w, b)]
    got = iv.dense_forward(params, *wires)
    assert got.values() == [int(v) for v in expected.data.ravel()]
    assert got.hash == expected.hash


def test_dense_forward_refuses_the_same_inputs_as_the_kernels() -> None:
    big = 2**40
    x = Tensor(np.full((2, 4), big, dtype=np.int64), 0)
    w = Tensor(np.full((4, 2), big, dtype=np.int64), 0)
    b = Tensor(np.zeros(2, dtype=np.int64), 0)
    params = {"act": "identity", "out_frac": 0}
    with pytest.raises(ExactRangeError):
        kernels.execute("dense_forward", params, [x, w, b])
    with pytest.raises(iv.Refused):
        iv.dense_forward(params, *(iv.decode_wire_tensor(t.to_bytes()) for t in (x, w, b)))


# --------------------------------------------------------------------------- stateless tx checks

H = "ab" * 32
TREF = {"tensor": H, "dtype": "<i8", "shape": [2, 3], "frac_bits": 8}
POST = {
    "op": "dense_forward",
    "kernel_version": "exact-v1",
    "inputs": [TREF, {"job": H, "output": 0}],
    "params": {"act": "relu", "out_frac": 8},
    "replication": 2,
    "reward": 10,
    "deadline": 20,
}
BODIES: list[Any] = [
    ("transfer", {"to": H, "amount": 1}),
    ("transfer", {"to": H, "amount": 0}),
    ("transfer", {"to": H, "amount": True}),
    ("transfer", {"to": H.upper(), "amount": 5}),
    ("transfer", {"to": H, "amount": 5, "memo": "x"}),
    ("post_job", POST),
    ("post_job", {**POST, "run": "mnist/run-1:a@b+c", "label": "L0.fwd"}),
    ("post_job", {**POST, "run": None}),
    ("post_job", {**POST, "run": "has space"}),
    ("post_job", {**POST, "label": "x" * 129}),
    ("post_job", {**POST, "label": "x" * 128}),
    ("post_job", {**POST, "replication": 17}),
    ("post_job", {**POST, "deadline": 100_001}),
    ("post_job", {**POST, "inputs": []}),
    ("post_job", {**POST, "inputs": [TREF] * 17}),
    ("post_job", {**POST, "inputs": [{**TREF, "shape": []}]}),
    ("post_job", {**POST, "inputs": [{**TREF, "shape": [1, 1, 1, 1, 1]}]}),
    ("post_job", {**POST, "inputs": [{**TREF, "shape": [0]}]}),
    ("post_job", {**POST, "inputs": [{**TREF, "frac_bits": 31}]}),
    ("post_job", {**POST, "inputs": [{**TREF, "dtype": "<i2"}]}),
    ("post_job", {**POST, "inputs": [{"job": H, "output": 16}]}),
    ("post_job", {**POST, "inputs": [{**TREF, "job": H}]}),
    ("post_job", {**POST, "params": []}),
    ("commit_result", {"job_id": H, "commitment": H}),
    ("commit_result", {"job_id": H}),
    ("reveal_result", {"job_id": H, "outputs": [H] * 16, "salt": H}),
    ("reveal_result", {"job_id": H, "outputs": [H] * 17, "salt": H}),
    ("reveal_result", {"job_id": H, "outputs": [], "salt": H}),
    ("submit_result", {"job_id": H, "outputs": [H]}),
    ("post_jobs", {"jobs": [POST, {**POST, "label": "x"}]}),
    ("post_jobs", {"jobs": []}),
    ("post_jobs", {"jobs": [POST] * 65}),
    ("post_jobs", {"jobs": [{**POST, "replication": 0}]}),
    ("post_jobs", {"jobs": [POST], "run": "r"}),
    ("commit_results", {"commits": [{"job_id": H, "commitment": H}]}),
    ("commit_results", {"commits": [{"job_id": H, "commitment": H}] * 2}),
    ("commit_results", {"commits": [{"job_id": f"{i:064x}", "commitment": H} for i in range(64)]}),
    ("commit_results", {"commits": [{"job_id": f"{i:064x}", "commitment": H} for i in range(65)]}),
    ("commit_results", {"commits": []}),
    ("commit_results", {"commits": [{"job_id": H}]}),
    ("reveal_results", {"reveals": [{"job_id": H, "outputs": [H], "salt": H}]}),
    ("reveal_results", {"reveals": [{"job_id": H, "outputs": [], "salt": H}]}),
    ("reveal_results", {"reveals": {"job_id": H}}),
    ("checkpoint", {"run": "r", "epoch": 0, "model_hash": H, "metrics": {}}),
    ("checkpoint", {"run": "r", "epoch": 0, "model_hash": H, "metrics": {"loss": -(2**62)}}),
    ("checkpoint", {"run": "r", "epoch": 0, "model_hash": H, "metrics": {"loss": 2**62 + 1}}),
    ("checkpoint", {"run": "r", "epoch": 0, "model_hash": H, "metrics": {"bad key": 1}}),
    (
        "checkpoint",
        {"run": "r", "epoch": 0, "model_hash": H, "metrics": {f"m{i}": i for i in range(17)}},
    ),
    ("checkpoint", {"run": "r", "epoch": -1, "model_hash": H, "metrics": {}}),
    ("burn", {"amount": 1}),
    # Trailing newlines: `$` in a regex also matches before a final "\n" (fixed with `\Z`).
    *(
        (tx_type, body)
        for tx_type, body in [
            ("commit_result", {"job_id": H + "\n", "commitment": H}),
            ("transfer", {"to": H + "\n", "amount": 1}),
            ("checkpoint", {"run": "r\n", "epoch": 0, "model_hash": H, "metrics": {}}),
            ("post_job", {**POST, "op": "dense_forward\n"}),
        ]
    ),
]


@pytest.mark.parametrize(("tx_type", "body"), BODIES)
def test_stateless_checks_agree_with_the_project(tx_type: str, body: dict) -> None:
    from ledger.errors import LedgerError
    from ledger.harness import actor_key
    from ledger.transactions import parse_tx

    key = actor_key("alice")
    envelope = {"type": tx_type, "sender": key.address, "nonce": 0, "body": body}
    wire = {**envelope, "signature": key.sign("tx", "layerchain-test", envelope)}
    try:
        parse_tx(wire, "layerchain-test", Params())
        project_ok = True
    except LedgerError:
        project_ok = False
    try:
        iv.check_tx(wire, "layerchain-test", Params().max_tx_bytes)
        ours_ok = True
    except iv.VerifyError:
        ours_ok = False
    assert ours_ok == project_ok


def test_commitment_and_audit_rule_agree_with_the_project() -> None:
    from ledger.transactions import commitment

    assert iv.commitment(H, "cd" * 32, [H, "ef" * 32], "01" * 32) == commitment(
        H, "cd" * 32, [H, "ef" * 32], "01" * 32
    )


def test_rejects_a_settlement_that_breaks_the_audit_rule(built: Built, tmp_path: Path) -> None:
    """Swap agreed/audited on a job settled in block 10 (its state root recomputed): caught there,
    before the next header's app_hash would give it away."""
    diff = iv.parse_json(_cell(built, f"SELECT diff FROM block_diffs WHERE height = {SOLO}"))
    prev_root = _cell(built, f"SELECT state_root FROM blocks WHERE height = {SOLO - 1}")
    job = diff["jobs"][built.solo[0]]
    job["settlement"] = {"agreed": "audited", "audited": "agreed"}[job["settlement"]]
    text = iv.canonical_json(diff).decode()
    path = built.tampered(
        tmp_path,
        f"UPDATE block_diffs SET diff = {_sql_str(text)} WHERE height = {SOLO}",
        f"UPDATE blocks SET state_root = '{iv.next_root(prev_root, text.encode())}' "
        f"WHERE height = {SOLO}",
    )
    _rejects(path, SOLO, "rule says")


# --------------------------------------------------------------------------- the other kernels


def _t(rng: np.random.Generator, shape: tuple[int, ...], scale: float, frac: int) -> Tensor:
    return quantize(rng.normal(size=shape) * scale, frac)


def _kernel_cases() -> list[tuple[str, dict, list[Tensor]]]:
    rng = np.random.default_rng(42)
    cases: list[tuple[str, dict, list[Tensor]]] = []
    for act in (RELU, LEAKY, {"act": "identity", "out_frac": 8}):
        slope = {k: v for k, v in act.items() if k.startswith("slope")}
        x, w = _t(rng, (5, 4), 1, 12), _t(rng, (4, 3), 0.5, 20)
        a, da = _t(rng, (5, 3), 1, 12), _t(rng, (5, 3), 0.1, 16)
        back = {"act": act["act"], **slope, "dx_frac": 16, "dw_frac": 28}
        cases.append(("dense_backward", back, [x, w, a, da]))
        cases.append(("dense_backward", {**back, "dx_frac": 9, "dw_frac": 11}, [x, w, a, da]))
        params_only = {k: v for k, v in back.items() if k != "dx_frac"}
        cases.append(("dense_backward_params", params_only, [x, a, da]))
    for frac in (0, 12, 20):
        z = _t(rng, (6, 10), 4, frac)
        z_big = Tensor(np.concatenate([z.data, np.full((1, 10), -(2**20))]), frac)
        labels = Tensor(rng.integers(0, 10, size=7), 0)
        for p in (1, 16, 30):
            cases.append(("softmax_xent_grad", {"out_frac": p}, [z_big, labels]))
    ts = [_t(rng, (3, 4), 1, 28) for _ in range(5)]
    cases.append(("add", {}, ts))
    w, g = _t(rng, (4, 3), 1, 20), _t(rng, (4, 3), 0.1, 28)
    cases.append(("sgd_update", {"lr_num": 12345, "lr_shift": 24}, [w, g]))
    cases.append(
        ("sgd_update", {"lr_num": 2**32, "lr_shift": 0}, [Tensor(w.data, 0), Tensor(g.data, 30)])
    )
    leaky = {k: v for k, v in LEAKY.items() if k != "out_frac"}
    for sizes, hidden in (((5, 3), {"act": "relu"}), ((5, 4, 4, 3), leaky)):
        layers = len(sizes) - 1
        x = _t(rng, (4, sizes[0]), 1, 12)
        labels = Tensor(rng.integers(0, sizes[-1], size=4), 0)
        ws = []
        for k, m in zip(sizes[:-1], sizes[1:], strict=True):
            ws += [_t(rng, (k, m), 0.5, 12), _t(rng, (m,), 0.1, 24)]
        params = {**hidden, "layers": layers, "act_frac": 12, "grad_frac": 16, "dw_frac": 28}
        cases.append(("mlp_grad", params, [x, labels, *ws]))
    return cases


@pytest.mark.parametrize(("op", "params", "inputs"), _kernel_cases())
def test_every_op_in_python_integers_matches_the_kernels(
    op: str, params: dict, inputs: list[Tensor]
) -> None:
    expected = kernels.execute(op, params, inputs)
    got = iv.execute(op, params, [iv.decode_wire_tensor(t.to_bytes(), t.hash) for t in inputs])
    assert [t.hash for t in got] == [t.hash for t in expected]


# --------------------------------------------------------------------------- a node's own ledger


def test_accepts_a_ledger_committed_by_a_real_node(tmp_path: Path) -> None:
    """A one-validator node (its real consensus core, store and certificates) commits txs sent
    over HTTP; the independent verifier accepts the node's database file."""
    import json
    import time

    from fastapi.testclient import TestClient

    from api.commands import write_testnet
    from api.core.config import load_settings
    from api.main import create_app
    from api.testing import free_ports
    from ledger.identity import Keypair
    from ledger.transactions import sign_tx, transfer_body

    write_testnet(tmp_path, validators=1, miners=1, ports=[free_ports(1)[0]])
    chain_id = json.loads((tmp_path / "node0" / "genesis.json").read_text())["chain_id"]
    key = Keypair.load(tmp_path / "client.pem")
    bob = Keypair.from_seed(b"\x01" * 32).address
    txs = [
        sign_tx(key, chain_id, "transfer", 0, transfer_body(bob, 3)),
        sign_tx(key, chain_id, "transfer", 1, transfer_body(bob, 2**62)),  # insufficient_funds
    ]
    db = tmp_path / "node0" / "data" / "ledger.db"
    with TestClient(create_app(load_settings(tmp_path / "node0", test_admin=True))) as client:
        for tx in txs:
            wire = {"type": tx.type, "sender": tx.sender, "nonce": tx.nonce, "body": tx.body}
            r = client.post("/api/v1/txs", json={**wire, "signature": tx.signature})
            assert r.status_code == 202, r.text
        deadline = time.monotonic() + 30
        # 200 comes for a pending tx too: wait until both are in a block.
        while any(
            client.get(f"/api/v1/txs/{tx.hash}").json().get("status") != "committed" for tx in txs
        ):
            assert time.monotonic() < deadline, "the node did not commit the txs"
            time.sleep(0.1)
    report = iv.verify_sqlite(str(db))
    assert report.n_txs == 2 and report.height >= 1
    con = sqlite3.connect(db)
    codes = [r[0] for r in con.execute("SELECT code FROM receipts ORDER BY height, idx")]
    con.close()
    assert codes == ["ok", "insufficient_funds"]


def test_a_lone_surrogate_is_an_encoding_error() -> None:
    from ledger.encoding import parse_json
    from ledger.errors import EncodingError

    value = parse_json(b'{"a":"\\ud800"}')
    with pytest.raises(iv.VerifyError):
        iv.canonical_json(value)
    with pytest.raises(EncodingError):
        canonical_json(value)


def test_a_sender_with_a_trailing_newline_is_invalid() -> None:
    from ledger.errors import LedgerError
    from ledger.harness import actor_key
    from ledger.transactions import parse_tx

    key = actor_key("alice")
    envelope = {
        "type": "transfer",
        "sender": key.address + "\n",
        "nonce": 0,
        "body": {"to": H, "amount": 1},
    }
    wire = {**envelope, "signature": key.sign("tx", "layerchain-test", envelope)}
    with pytest.raises(iv.VerifyError):
        iv.check_tx(wire, "layerchain-test")
    with pytest.raises(LedgerError):
        parse_tx(wire, "layerchain-test", Params())


def test_tx_inclusion_proofs_agree_with_the_project(built: Built) -> None:
    """§6.8 implemented from the text: every committed tx's proof is accepted, and each forged
    link is refused by both verifiers."""
    from ledger.lightclient import ProofError, build_tx_proof, verify_tx_proof

    c = built.chain
    assert c.store is not None
    genesis = iv.normalise_genesis(c.genesis.to_dict())
    with sqlite3.connect(built.db) as conn:
        hashes = [row[0] for row in conn.execute("SELECT hash FROM txs ORDER BY height, idx")]
    assert len(hashes) >= 5
    forged_paths = 0
    for tx_hash in hashes:
        proof = build_tx_proof(c.store, tx_hash)
        assert proof is not None
        raw = proof.to_dict()
        assert iv.verify_tx_proof(raw, genesis) == tx_hash
        verify_tx_proof(raw, c.genesis)
        if raw["merkle_path"]:
            forged_paths += 1
            forged = {**raw, "merkle_path": [{**raw["merkle_path"][0], "hash": "00" * 32}]}
            forged["merkle_path"] += raw["merkle_path"][1:]
            with pytest.raises(iv.VerifyError):
                iv.verify_tx_proof(forged, genesis)
            with pytest.raises(ProofError):
                verify_tx_proof(forged, c.genesis)
        shifted = {**raw, "header": {**raw["header"], "time_ms": raw["header"]["time_ms"] + 1}}
        with pytest.raises(iv.VerifyError):
            iv.verify_tx_proof(shifted, genesis)
        with pytest.raises(ProofError):
            verify_tx_proof(shifted, c.genesis)
    assert forged_paths >= 2  # blocks of several txs: paths with steps
