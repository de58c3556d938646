"""Transactions: signed envelopes, their stateless checks, and builders for every type.

A transaction is the envelope `{type, sender, nonce, body}` plus the sender's signature over
`signing_bytes("tx", chain_id, envelope)`. Its hash is `digest(envelope)` (the signature is not
hashed, so the hash names what was asked, and a post_job's hash is the job id).

Checks are split in two, as PROTOCOL.md §5 lays out:
- **stateless** (`Tx.from_dict`, `check_tx`): form, field types and ranges, encoded size, the
  signature. A tx failing one is invalid: it never enters a block (`InvalidTransaction`).
- **stateful** (in `ledger.execution`): nonce, funds, job existence and phase, ... A tx failing one
  is still kept in its block, with a failure receipt that says why.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from ledger.encoding import HEX64, SIGNING_DOMAIN, canonical_json, digest, sha256_hex
from ledger.errors import EncodingError, InvalidTransaction
from ledger.genesis import Params
from ledger.identity import Keypair, verify_raw
from ledger.tensor import ALLOWED_DTYPES, MAX_FRAC_BITS, MAX_NDIM, Tensor
from ledger.trusted_json import trusted_canonical_json

TX_KIND = "tx"

TRANSFER = "transfer"
POST_JOB = "post_job"
COMMIT_RESULT = "commit_result"
REVEAL_RESULT = "reveal_result"
SUBMIT_RESULT = "submit_result"
CHECKPOINT = "checkpoint"
COMMIT_RESULTS = "commit_results"
REVEAL_RESULTS = "reveal_results"
POST_JOBS = "post_jobs"
TX_TYPES = (
    TRANSFER,
    POST_JOB,
    COMMIT_RESULT,
    REVEAL_RESULT,
    SUBMIT_RESULT,
    CHECKPOINT,
    COMMIT_RESULTS,
    REVEAL_RESULTS,
    POST_JOBS,
)
#: The result types that name one or more jobs (`result_items` lists their items).
RESULT_TYPES = (COMMIT_RESULT, REVEAL_RESULT, SUBMIT_RESULT, COMMIT_RESULTS, REVEAL_RESULTS)

#: Bounds checked statelessly; the genesis parameters bound job cost and tensor size on top.
MAX_NONCE = 2**62
MAX_AMOUNT = 2**62
MAX_REPLICATION = 16
MAX_DEADLINE_BLOCKS = 100_000
MAX_JOB_INPUTS = 16
MAX_JOB_OUTPUTS = 16
MAX_NAME_LEN = 128
MAX_METRICS = 16
MAX_BATCH_RESULTS = 64
"""Items in one `commit_results` / `reveal_results` (each also bounded by `max_tx_bytes`)."""
MAX_BATCH_JOBS = 64
"""Jobs in one `post_jobs` (also bounded by `max_tx_bytes`)."""

_NAME = re.compile(r"^[A-Za-z0-9_.:/@+-]{1,128}\Z")
_ENVELOPE_KEYS = {"type", "sender", "nonce", "body"}


# --------------------------------------------------------------------------- field checks


def _fail(tx_type: str, message: str) -> InvalidTransaction:
    return InvalidTransaction(f"{tx_type}: {message}")


def _int(tx_type: str, body: Mapping[str, Any], key: str, lo: int, hi: int) -> int:
    value = body.get(key)
    if not isinstance(value, int) or isinstance(value, bool):
        raise _fail(tx_type, f"{key} must be an integer")
    if not lo <= value <= hi:
        raise _fail(tx_type, f"{key} = {value} outside {lo}..{hi}")
    return value


def _hex64(tx_type: str, value: Any, what: str) -> str:
    if not isinstance(value, str) or not HEX64.match(value):
        raise _fail(tx_type, f"{what} must be 64 lowercase hex characters")
    return value


def _name(tx_type: str, value: Any, what: str) -> str:
    if not isinstance(value, str) or not _NAME.match(value):
        raise _fail(
            tx_type, f"{what} must be 1 to {MAX_NAME_LEN} characters of A-Z a-z 0-9 _ . : / @ + -"
        )
    return value


def _keys(tx_type: str, body: Mapping[str, Any], required: set[str], optional: set[str]) -> None:
    missing = required - set(body)
    if missing:
        raise _fail(tx_type, f"body is missing {sorted(missing)}")
    unknown = set(body) - required - optional
    if unknown:
        raise _fail(tx_type, f"body has unknown fields {sorted(unknown)}")


def _outputs(tx_type: str, value: Any) -> list[str]:
    if not isinstance(value, list) or not 1 <= len(value) <= MAX_JOB_OUTPUTS:
        raise _fail(tx_type, f"outputs must be a list of 1 to {MAX_JOB_OUTPUTS} tensor hashes")
    return [_hex64(tx_type, h, f"outputs[{i}]") for i, h in enumerate(value)]


def check_input_ref(ref: Any, where: str = "inputs[?]") -> None:
    """Stateless form of one job input: a tensor with its metadata, or an earlier job's output.

    `{"tensor": HASH, "dtype": "<i4"|"<i8", "shape": [d, ...], "frac_bits": F}` or
    `{"job": JOB_ID, "output": i}`. A tensor input carries its metadata so the job can be checked
    (shapes, cost) without the tensor; the hash covers that metadata, so a false claim only makes
    the job unrunnable.
    """
    if not isinstance(ref, dict):
        raise _fail(POST_JOB, f"{where} must be an object")
    if "tensor" in ref:
        _keys(POST_JOB, ref, {"tensor", "dtype", "shape", "frac_bits"}, set())
        _hex64(POST_JOB, ref["tensor"], f"{where}.tensor")
        if ref["dtype"] not in ALLOWED_DTYPES:
            raise _fail(POST_JOB, f"{where}.dtype must be '<i4' or '<i8'")
        shape = ref["shape"]
        if (
            not isinstance(shape, list)
            or not 1 <= len(shape) <= MAX_NDIM
            or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 1 for d in shape)
        ):
            raise _fail(POST_JOB, f"{where}.shape must be 1 to {MAX_NDIM} positive integers")
        _int(POST_JOB, ref, "frac_bits", 0, MAX_FRAC_BITS)
    elif "job" in ref:
        _keys(POST_JOB, ref, {"job", "output"}, set())
        _hex64(POST_JOB, ref["job"], f"{where}.job")
        _int(POST_JOB, ref, "output", 0, MAX_JOB_OUTPUTS - 1)
    else:
        raise _fail(POST_JOB, f"{where} must name a 'tensor' or a 'job' output")


def _check_transfer(body: Mapping[str, Any]) -> None:
    _keys(TRANSFER, body, {"to", "amount"}, set())
    _hex64(TRANSFER, body["to"], "to")
    _int(TRANSFER, body, "amount", 1, MAX_AMOUNT)


def _check_post_job(body: Mapping[str, Any]) -> None:
    _keys(
        POST_JOB,
        body,
        {"op", "kernel_version", "inputs", "params", "replication", "reward", "deadline"},
        {"run", "label"},
    )
    _name(POST_JOB, body["op"], "op")
    _name(POST_JOB, body["kernel_version"], "kernel_version")
    inputs = body["inputs"]
    if not isinstance(inputs, list) or not 1 <= len(inputs) <= MAX_JOB_INPUTS:
        raise _fail(POST_JOB, f"inputs must be a list of 1 to {MAX_JOB_INPUTS} references")
    for i, ref in enumerate(inputs):
        check_input_ref(ref, f"inputs[{i}]")
    if not isinstance(body["params"], dict):
        raise _fail(POST_JOB, "params must be an object")
    _int(POST_JOB, body, "replication", 1, MAX_REPLICATION)
    _int(POST_JOB, body, "reward", 0, MAX_AMOUNT)
    _int(POST_JOB, body, "deadline", 1, MAX_DEADLINE_BLOCKS)
    if "run" in body:
        _name(POST_JOB, body["run"], "run")
    if "label" in body:
        _name(POST_JOB, body["label"], "label")


def _check_commit(body: Mapping[str, Any]) -> None:
    _keys(COMMIT_RESULT, body, {"job_id", "commitment"}, set())
    _hex64(COMMIT_RESULT, body["job_id"], "job_id")
    _hex64(COMMIT_RESULT, body["commitment"], "commitment")


def _check_reveal(body: Mapping[str, Any]) -> None:
    _keys(REVEAL_RESULT, body, {"job_id", "outputs", "salt"}, set())
    _hex64(REVEAL_RESULT, body["job_id"], "job_id")
    _outputs(REVEAL_RESULT, body["outputs"])
    _hex64(REVEAL_RESULT, body["salt"], "salt")


def _batch_items(tx_type: str, body: Mapping[str, Any], key: str) -> list[dict[str, Any]]:
    """The item list of a batched result tx: 1 to MAX_BATCH_RESULTS objects, distinct job ids."""
    _keys(tx_type, body, {key}, set())
    items = body[key]
    if not isinstance(items, list) or not 1 <= len(items) <= MAX_BATCH_RESULTS:
        raise _fail(tx_type, f"{key} must be a list of 1 to {MAX_BATCH_RESULTS} objects")
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise _fail(tx_type, f"{key}[{i}] must be an object")
    if len({item.get("job_id") for item in items}) != len(items):
        raise _fail(tx_type, f"{key} names a job more than once")
    return items


def _result_batch(
    tx_type: str, key: str, check_one: Callable[[Mapping[str, Any]], None]
) -> Callable[[Mapping[str, Any]], None]:
    """The stateless check of a result batch: its list, then each item as its single type."""

    def check(body: Mapping[str, Any]) -> None:
        for i, item in enumerate(_batch_items(tx_type, body, key)):
            try:
                check_one(item)
            except InvalidTransaction as exc:
                raise _fail(tx_type, f"{key}[{i}]: {exc}") from exc

    return check


_check_commits = _result_batch(COMMIT_RESULTS, "commits", _check_commit)
_check_reveals = _result_batch(REVEAL_RESULTS, "reveals", _check_reveal)


def _check_post_jobs(body: Mapping[str, Any]) -> None:
    _keys(POST_JOBS, body, {"jobs"}, set())
    jobs = body["jobs"]
    if not isinstance(jobs, list) or not 1 <= len(jobs) <= MAX_BATCH_JOBS:
        raise _fail(POST_JOBS, f"jobs must be a list of 1 to {MAX_BATCH_JOBS} post_job bodies")
    for i, job in enumerate(jobs):
        if not isinstance(job, dict):
            raise _fail(POST_JOBS, f"jobs[{i}] must be an object")
        try:
            _check_post_job(job)
        except InvalidTransaction as exc:
            raise _fail(POST_JOBS, f"jobs[{i}]: {exc}") from exc


def _check_submit(body: Mapping[str, Any]) -> None:
    _keys(SUBMIT_RESULT, body, {"job_id", "outputs"}, set())
    _hex64(SUBMIT_RESULT, body["job_id"], "job_id")
    _outputs(SUBMIT_RESULT, body["outputs"])


def _check_checkpoint(body: Mapping[str, Any]) -> None:
    _keys(CHECKPOINT, body, {"run", "epoch", "model_hash", "metrics"}, set())
    _name(CHECKPOINT, body["run"], "run")
    _int(CHECKPOINT, body, "epoch", 0, MAX_NONCE)
    _hex64(CHECKPOINT, body["model_hash"], "model_hash")
    metrics = body["metrics"]
    if not isinstance(metrics, dict) or len(metrics) > MAX_METRICS:
        raise _fail(CHECKPOINT, f"metrics must be an object of at most {MAX_METRICS} integers")
    for key in metrics:
        _name(CHECKPOINT, key, "metric name")
        _int(CHECKPOINT, metrics, key, -MAX_AMOUNT, MAX_AMOUNT)


_BODY_CHECKS: dict[str, Callable[[Mapping[str, Any]], None]] = {
    TRANSFER: _check_transfer,
    POST_JOB: _check_post_job,
    COMMIT_RESULT: _check_commit,
    REVEAL_RESULT: _check_reveal,
    SUBMIT_RESULT: _check_submit,
    CHECKPOINT: _check_checkpoint,
    COMMIT_RESULTS: _check_commits,
    REVEAL_RESULTS: _check_reveals,
    POST_JOBS: _check_post_jobs,
}


def batch_job_id(tx_hash: str, index: int) -> str:
    """The id of job `index` of a `post_jobs` tx: digest({"index": i, "post_jobs": tx_hash})."""
    return digest({"index": index, "post_jobs": tx_hash})


def job_bodies(tx_type: str, body: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The post_job bodies a tx of this type and body creates jobs from ([] for other types)."""
    if tx_type == POST_JOB:
        return [dict(body)]
    if tx_type == POST_JOBS:
        return list(body["jobs"])
    return []


def posted_jobs(tx: Tx) -> list[tuple[str, dict[str, Any]]]:
    """(job id, post_job body) of every job a tx creates: a post_job's own hash, or each item of
    a post_jobs with `batch_job_id`; [] for other types."""
    bodies = job_bodies(tx.type, tx.body)
    if tx.type == POST_JOB:
        return [(tx.hash, bodies[0])]
    return [(batch_job_id(tx.hash, i), job) for i, job in enumerate(bodies)]


def result_items_of(tx_type: str, body: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The per-job items of a result tx of this type and body (e.g. a stored row): the body of a
    single commit/reveal/submit, the list of a batch; [] for any other type. Each item has
    `job_id` (and the type's other fields)."""
    if tx_type in (COMMIT_RESULT, REVEAL_RESULT, SUBMIT_RESULT):
        return [dict(body)]
    if tx_type == COMMIT_RESULTS:
        return list(body["commits"])
    if tx_type == REVEAL_RESULTS:
        return list(body["reveals"])
    return []


def result_items(tx: Tx) -> list[dict[str, Any]]:
    """`result_items_of` a parsed tx."""
    return result_items_of(tx.type, tx.body)


# --------------------------------------------------------------------------- the envelope


@dataclass(frozen=True, eq=False)
class Tx:
    """A signed transaction. Construct with `Tx.from_dict` (checks form) or `sign_tx`."""

    type: str
    """One of TX_TYPES."""
    sender: str
    """Address of the signer, who pays, and whose nonce is used."""
    nonce: int
    """The sender's nonce: the first tx of an address has nonce 0, each next one +1."""
    body: dict[str, Any]
    """Type-specific fields (PROTOCOL.md §5.3); never mutated."""
    signature: str
    """Ed25519 signature (hex) over signing_bytes("tx", chain_id, envelope)."""

    def envelope(self) -> dict[str, Any]:
        """What is hashed and signed: everything but the signature."""
        return {"type": self.type, "sender": self.sender, "nonce": self.nonce, "body": self.body}

    @cached_property
    def encoded_envelope(self) -> bytes:
        """canonical_json(envelope). Only a post_job's free-form params need the full type walk;
        every other field was type- and range-checked by `from_dict`."""
        if self.type == POST_JOB:
            canonical_json(self.body["params"])  # raises EncodingError for floats etc.
        elif self.type == POST_JOBS:
            for job in self.body["jobs"]:
                canonical_json(job["params"])
        return trusted_canonical_json(self.envelope())

    @cached_property
    def hash(self) -> str:
        """digest(envelope); the id of the job a post_job creates."""
        return sha256_hex(self.encoded_envelope)

    @cached_property
    def body_json(self) -> str:
        """Canonical JSON text of the body (how the store keeps it)."""
        return trusted_canonical_json(self.body).decode("utf-8")

    @property
    def size(self) -> int:
        """Bytes of the canonical encoding of the whole tx (envelope + signature)."""
        return len(self.encoded_envelope) + len(self.signature) + len(',"signature":""')

    def to_dict(self) -> dict[str, Any]:
        """The wire form: the envelope plus "signature"."""
        out = self.envelope()
        out["signature"] = self.signature
        return out

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Tx) and self.hash == other.hash and self.signature == other.signature
        )

    def __hash__(self) -> int:
        return hash((self.hash, self.signature))

    @classmethod
    def from_dict(cls, raw: Any) -> Tx:
        """Parse the wire form, checking every stateless rule except size and signature."""
        if not isinstance(raw, dict):
            raise InvalidTransaction("a transaction must be a JSON object")
        missing = (_ENVELOPE_KEYS | {"signature"}) - set(raw)
        if missing:
            raise InvalidTransaction(f"transaction is missing {sorted(missing)}")
        unknown = set(raw) - _ENVELOPE_KEYS - {"signature"}
        if unknown:
            raise InvalidTransaction(f"transaction has unknown fields {sorted(unknown)}")
        tx_type = raw["type"]
        if tx_type not in _BODY_CHECKS:
            raise InvalidTransaction(f"unknown transaction type {tx_type!r}; known: {TX_TYPES}")
        sender = raw["sender"]
        if not isinstance(sender, str) or not HEX64.match(sender):
            raise InvalidTransaction("sender must be an address (64 lowercase hex characters)")
        nonce = raw["nonce"]
        if not isinstance(nonce, int) or isinstance(nonce, bool) or not 0 <= nonce <= MAX_NONCE:
            raise InvalidTransaction(f"nonce must be an integer in 0..{MAX_NONCE}")
        signature = raw["signature"]
        if not isinstance(signature, str) or not re.fullmatch(r"[0-9a-f]{128}", signature):
            raise InvalidTransaction("signature must be 128 lowercase hex characters")
        body = raw["body"]
        if not isinstance(body, dict):
            raise InvalidTransaction("body must be a JSON object")
        _BODY_CHECKS[tx_type](body)
        tx = cls(tx_type, sender, nonce, body, signature)
        try:
            tx.encoded_envelope  # noqa: B018 - refuse floats and other unencodable values now
        except EncodingError as exc:
            raise InvalidTransaction(f"transaction cannot be encoded canonically: {exc}") from exc
        except RecursionError as exc:
            raise InvalidTransaction("transaction body is nested too deeply") from exc
        return tx


def tx_signing_bytes(tx: Tx, chain_id: str) -> bytes:
    """signing_bytes("tx", chain_id, envelope), spliced from the already-encoded envelope.

    "payload" sorts last among the four keys of the signed object, so the canonical encoding is
    the prefix below followed by the envelope's canonical bytes (tests assert the equality).
    """
    prefix = trusted_canonical_json(
        {"chain_id": chain_id, "domain": SIGNING_DOMAIN, "kind": TX_KIND}
    )
    return prefix[:-1] + b',"payload":' + tx.encoded_envelope + b"}"


def check_signature(tx: Tx, chain_id: str) -> None:
    """Raise InvalidTransaction unless the signature is the sender's over this chain's tx bytes."""
    message = tx_signing_bytes(tx, chain_id)
    if not verify_raw(tx.sender, message, tx.signature):
        raise InvalidTransaction(f"transaction {tx.hash[:16]}…: signature is not the sender's")


def check_tx(tx: Tx, chain_id: str, params: Params, *, signature: bool = True) -> None:
    """Every stateless check on an already-parsed tx: size and (unless told not to) signature."""
    if tx.size > params.max_tx_bytes:
        raise InvalidTransaction(
            f"transaction is {tx.size} bytes; the limit is {params.max_tx_bytes}"
        )
    if signature:
        check_signature(tx, chain_id)


def parse_tx(raw: Any, chain_id: str, params: Params) -> Tx:
    """Parse and fully check a tx received from outside (the node's submit path)."""
    tx = Tx.from_dict(raw)
    check_tx(tx, chain_id, params)
    return tx


# --------------------------------------------------------------------------- builders


#: Stands in for the signature while `sign_tx` checks the form of the tx it is about to sign.
_UNSIGNED = "0" * 128


def sign_tx(key: Keypair, chain_id: str, tx_type: str, nonce: int, body: dict[str, Any]) -> Tx:
    """Build, check the form of, and sign a transaction.

    The form is checked first (`from_dict`, which also encodes the envelope canonically, once);
    the signature is then made over `tx_signing_bytes`, spliced from that encoding. Those are
    the bytes `Keypair.sign(TX_KIND, chain_id, envelope)` signs (tests assert it), without a
    second canonical walk of the body, which was a tenth of a miner's CPU.
    """
    tx = Tx.from_dict(
        {
            "type": tx_type,
            "sender": key.address,
            "nonce": nonce,
            "body": body,
            "signature": _UNSIGNED,
        }
    )
    # Frozen, but the signature is covered by nothing cached (hash and encoding are the
    # envelope's): set it in place rather than parse the tx a second time.
    object.__setattr__(tx, "signature", key.sign_raw(tx_signing_bytes(tx, chain_id)))
    return tx


def commitment(job_id: str, miner: str, outputs: Sequence[str], salt: str) -> str:
    """The value a miner commits: it binds the job, the miner's address, the outputs and a salt.

    Binding the address is what makes a copied commitment useless: revealing against it needs
    the copier's own address inside, which the original does not have.
    """
    if all(isinstance(v, str) and HEX64.match(v) for v in (job_id, miner, salt, *outputs)):
        # Hex strings only: the canonical encoding is this fixed text (tests assert equality).
        listed = ",".join(f'"{h}"' for h in outputs)
        text = f'{{"job_id":"{job_id}","miner":"{miner}","outputs":[{listed}],"salt":"{salt}"}}'
        return sha256_hex(text.encode())
    return digest({"job_id": job_id, "miner": miner, "outputs": list(outputs), "salt": salt})


def new_salt() -> str:
    """32 random bytes as hex: what a miner commits with (never reuse one)."""
    return os.urandom(32).hex()


def tensor_input(tensor: Tensor) -> dict[str, Any]:
    """A post_job input naming a tensor (its hash and the metadata the hash covers)."""
    return {"tensor": tensor.hash, **tensor.meta()}


def job_input(job_id: str, output: int = 0) -> dict[str, Any]:
    """A post_job input naming output `output` of an earlier job (a DAG edge)."""
    return {"job": job_id, "output": output}


def transfer_body(to: str, amount: int) -> dict[str, Any]:
    return {"to": to, "amount": amount}


def post_job_body(
    *,
    op: str,
    kernel_version: str,
    inputs: Sequence[dict[str, Any]],
    params: dict[str, Any],
    replication: int,
    reward: int,
    deadline: int,
    run: str | None = None,
    label: str | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "op": op,
        "kernel_version": kernel_version,
        "inputs": list(inputs),
        "params": dict(params),
        "replication": replication,
        "reward": reward,
        "deadline": deadline,
    }
    if run is not None:
        body["run"] = run
    if label is not None:
        body["label"] = label
    return body


def post_jobs_body(jobs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """A `post_jobs` body from `post_job_body(...)` items; job i gets `batch_job_id(hash, i)`."""
    return {"jobs": [dict(job) for job in jobs]}


def commit_body(job_id: str, miner: str, outputs: Sequence[str], salt: str) -> dict[str, Any]:
    return {"job_id": job_id, "commitment": commitment(job_id, miner, outputs, salt)}


def reveal_body(job_id: str, outputs: Sequence[str], salt: str) -> dict[str, Any]:
    return {"job_id": job_id, "outputs": list(outputs), "salt": salt}


def commits_body(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """A `commit_results` body from `commit_body(...)` items (distinct jobs)."""
    return {"commits": [dict(item) for item in items]}


def reveals_body(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """A `reveal_results` body from `reveal_body(...)` items (distinct jobs)."""
    return {"reveals": [dict(item) for item in items]}


def submit_body(job_id: str, outputs: Sequence[str]) -> dict[str, Any]:
    return {"job_id": job_id, "outputs": list(outputs)}


def checkpoint_body(
    run: str, epoch: int, model_hash: str, metrics: dict[str, int]
) -> dict[str, Any]:
    return {"run": run, "epoch": epoch, "model_hash": model_hash, "metrics": dict(metrics)}
