"""An independent layerchain verifier written from docs/PROTOCOL.md alone.

It exists to prove the protocol document is a specification: nothing here imports `ledger`,
`api`, `miner` or `driver`; it uses only the standard library, `cryptography` (Ed25519) and the
text of the doc. Every function cites the section it implements. If this module and the project
disagree on a real chain, either the doc is imprecise (fix the doc) or the code is wrong.

Scope: canonical JSON (§1), digests and signing bytes (§1), Ed25519 (§2), tensor hashes from wire
bytes (§3), tx hash and signature (§5.1), the Merkle root (§6.2), block hashes and the prev_hash
chain (§6.1, §6.3), commit certificates against the genesis validator set (§6.5), the state-root
chain over the stored diffs and the receipts root (§6.4), read from the SQLite ledger (§6.6);
and the exact-v1 `dense_forward` kernel (§4.2, §4.4, §4.5) in pure Python integers.
Full state-machine replay is out of scope.
"""

from __future__ import annotations

import ast
import hashlib
import json
import sqlite3
import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

INT_MAX = 2**63 - 1
DOMAIN = "layerchain/v1"
EMPTY_ROOT = hashlib.sha256(b"").hexdigest()
HEADER_KEYS = (
    "app_hash",
    "chain_id",
    "height",
    "n_txs",
    "prev_hash",
    "proposer",
    "time_ms",
    "tx_root",
    "view",
)
TX_WIRE_KEYS = {"type", "sender", "nonce", "body", "signature"}
JOB_KEYS = set(
    "id poster op kernel_version inputs params replication reward deadline output_metas macs "
    "posted_height status run label open_height commit_deadline closed_height reveal_deadline "
    "commits reveals outputs settled_height settlement verdicts paid slashed refund reason".split()
)
DIFF_KEYS = {"height", "accounts", "jobs", "miners", "runs", "checkpoints", "receipts_root"}


class VerifyError(Exception):
    """A check failed; `height` names the block where (None: not tied to a block)."""

    def __init__(self, message: str, height: int | None = None) -> None:
        super().__init__(message if height is None else f"height {height}: {message}")
        self.height = height


# --------------------------------------------------------------------------- §1 encoding

_SHORT_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r"}
_SHORT_ESCAPES["\t"] = "\\t"


def _encode_string(s: str) -> str:
    out = ['"']
    for ch in s:
        if ch in _SHORT_ESCAPES:
            out.append(_SHORT_ESCAPES[ch])
        elif ord(ch) < 0x20:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _encode(v: Any) -> str:
    if v is None:
        return "null"
    if v is True:
        return "true"
    if v is False:
        return "false"
    if isinstance(v, int):
        if not -INT_MAX <= v <= INT_MAX:
            raise VerifyError(f"integer {v} outside the canonical range")
        return str(v)
    if isinstance(v, str):
        return _encode_string(v)
    if isinstance(v, list | tuple):
        return "[" + ",".join(_encode(x) for x in v) + "]"
    if isinstance(v, Mapping):
        for k in v:
            if not isinstance(k, str):
                raise VerifyError(f"object key {k!r} is not a string")
        items = sorted(v.items(), key=lambda kv: kv[0])  # Python str order = code point order
        return "{" + ",".join(_encode_string(k) + ":" + _encode(x) for k, x in items) + "}"
    raise VerifyError(f"value of type {type(v).__name__} cannot be encoded canonically")


def canonical_json(v: Any) -> bytes:
    """§1: sorted keys, no whitespace, UTF-8, non-ASCII literal, integers only."""
    try:
        return _encode(v).encode("utf-8")
    except UnicodeEncodeError as e:  # a lone surrogate has no UTF-8 form
        raise VerifyError(f"string with no UTF-8 form: {e}") from e


def _refuse_float(text: str) -> Any:
    raise VerifyError(f"float {text} in JSON")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise VerifyError(f"duplicate key {k!r} in JSON")
        out[k] = v
    return out


def parse_json(text: str | bytes) -> Any:
    """§1 parsing: floats, NaN/Infinity and duplicate keys are refused."""
    try:
        return json.loads(
            text,
            parse_float=_refuse_float,
            parse_constant=_refuse_float,
            object_pairs_hook=_no_duplicates,
        )
    except ValueError as e:
        raise VerifyError(f"bad JSON: {e}") from e


def parse_canonical(text: str | bytes, what: str, height: int | None = None) -> Any:
    """Parse JSON that must already be canonical (re-encoding gives the same bytes)."""
    raw = text.encode() if isinstance(text, str) else text
    value = parse_json(raw)
    if canonical_json(value) != raw:
        raise VerifyError(f"{what} is not canonical JSON", height)
    return value


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def digest(v: Any) -> str:
    """§1: SHA-256 of the canonical JSON, 64 lowercase hex."""
    return sha256_hex(canonical_json(v))


def signing_bytes(kind: str, chain_id: str, payload: Any) -> bytes:
    """§1: the bytes every signature covers."""
    return canonical_json(
        {"chain_id": chain_id, "domain": DOMAIN, "kind": kind, "payload": payload}
    )


def _is_hex(s: Any, n_chars: int) -> bool:
    return isinstance(s, str) and len(s) == n_chars and all(c in "0123456789abcdef" for c in s)


# --------------------------------------------------------------------------- §2 identities


def verify_signature(address: str, message: bytes, signature: str) -> bool:
    """§2: Ed25519 over raw bytes; address = raw public key hex, signature = 64 bytes hex."""
    if not _is_hex(address, 64) or not _is_hex(signature, 128):
        return False
    try:
        Ed25519PublicKey.from_public_bytes(bytes.fromhex(address)).verify(
            bytes.fromhex(signature), message
        )
    except (InvalidSignature, ValueError):
        return False
    return True


# --------------------------------------------------------------------------- §3 tensors

NPY_MAGIC = b"\x93NUMPY"
WIRE_MAGIC = b"LCT1\n"
ITEMSIZE = {"<i4": 4, "<i8": 8}


@dataclass(frozen=True)
class WireTensor:
    """A decoded tensor: dtype string, shape, frac_bits, and the raw little-endian data."""

    dtype: str
    shape: tuple[int, ...]
    frac_bits: int
    data: bytes

    @property
    def hash(self) -> str:
        return tensor_hash(self.dtype, self.shape, self.frac_bits, self.data)

    def values(self) -> list[int]:
        """The elements as Python ints, C order."""
        size = ITEMSIZE[self.dtype]
        fmt = "<" + ("i" if size == 4 else "q") * (len(self.data) // size)
        return list(struct.unpack(fmt, self.data))


def tensor_hash(dtype: str, shape: Sequence[int], frac_bits: int, data: bytes) -> str:
    """§3 tensor hash."""
    meta = canonical_json({"dtype": dtype, "frac_bits": frac_bits, "shape": list(shape)})
    return sha256_hex(b"layerchain/tensor/v1\n" + meta + b"\n" + data)


def decode_wire_tensor(blob: bytes, expected_hash: str | None = None) -> WireTensor:
    """§3 wire format: LCT1 line, canonical {"frac_bits"} line, then a strict .npy v1.0."""
    if not blob.startswith(WIRE_MAGIC):
        raise VerifyError("tensor wire bytes do not start with LCT1")
    end = blob.find(b"\n", len(WIRE_MAGIC))
    if end < 0:
        raise VerifyError("tensor wire bytes: no end of the frac_bits line")
    fb_line = blob[len(WIRE_MAGIC) : end]
    fb = parse_canonical(fb_line, "tensor frac_bits line")
    if not isinstance(fb, dict) or set(fb) != {"frac_bits"}:
        raise VerifyError("tensor frac_bits line must be exactly {frac_bits}")
    frac_bits = fb["frac_bits"]
    if type(frac_bits) is not int or not 0 <= frac_bits <= 30:
        raise VerifyError(f"tensor frac_bits {frac_bits!r} outside 0..30")
    npy = blob[end + 1 :]
    if npy[:6] != NPY_MAGIC or npy[6:8] != b"\x01\x00":
        raise VerifyError("tensor payload is not a .npy of format version 1.0")
    (header_len,) = struct.unpack("<H", npy[8:10])
    header_text = npy[10 : 10 + header_len].decode("latin-1")
    try:
        header = ast.literal_eval(header_text)
    except (ValueError, SyntaxError) as e:
        raise VerifyError(f"bad .npy header: {e}") from e
    if not isinstance(header, dict) or set(header) != {"descr", "fortran_order", "shape"}:
        raise VerifyError(f".npy header keys must be descr, fortran_order, shape: {header!r}")
    dtype, fortran, shape = header["descr"], header["fortran_order"], header["shape"]
    if dtype not in ITEMSIZE or fortran is not False:
        raise VerifyError(f".npy header: descr {dtype!r}, fortran_order {fortran!r} not allowed")
    if not isinstance(shape, tuple) or len(shape) > 4:
        raise VerifyError(f".npy header: bad shape {shape!r}")
    if not all(type(d) is int and d >= 0 for d in shape):
        raise VerifyError(f".npy header: bad shape {shape!r}")
    n = 1
    for d in shape:
        n *= d
    payload = npy[10 + header_len :]
    if len(payload) != n * ITEMSIZE[dtype]:
        raise VerifyError(
            f".npy payload is {len(payload)} bytes, shape needs {n * ITEMSIZE[dtype]}"
        )
    tensor = WireTensor(dtype, tuple(shape), frac_bits, payload)
    if expected_hash is not None and tensor.hash != expected_hash:
        raise VerifyError(f"tensor hash {tensor.hash} != expected {expected_hash}")
    return tensor


def encode_i8(shape: Sequence[int], frac_bits: int, values: Sequence[int]) -> WireTensor:
    """A kernel output (§4.1: always <i8, C order) from Python ints."""
    data = struct.pack("<" + "q" * len(values), *values)
    return WireTensor("<i8", tuple(shape), frac_bits, data)


# --------------------------------------------------------------------------- §4 dense_forward


class Refused(VerifyError):
    """§4.1: the kernel refuses the job (ExactRangeError)."""


def h(s: int) -> int:
    return 1 << (s - 1) if s > 0 else 0


def round_shift(v: int, s: int) -> int:
    """§4.2: divide by 2^s, round to nearest, ties toward +infinity."""
    return (v + (1 << (s - 1))) >> s if s > 0 else v


def _matrix(t: WireTensor, rank: int, name: str) -> list[int]:
    if len(t.shape) != rank:
        raise VerifyError(f"dense_forward: {name} must have {rank} dimensions, has {t.shape}")
    return t.values()


def dense_forward(
    params: Mapping[str, Any], x: WireTensor, w: WireTensor, b: WireTensor
) -> WireTensor:
    """§4.5 dense_forward with §4.4 activations, in Python integers."""
    act = params["act"]
    slope_keys = {"slope_shift", "slope_num"}
    expected = {"act", "out_frac"} | (slope_keys if act == "leaky_relu" else set())
    if set(params) != expected or act not in ("identity", "relu", "leaky_relu"):
        raise VerifyError(f"dense_forward: bad params {dict(params)!r}")
    xv, wv, bv = _matrix(x, 2, "x"), _matrix(w, 2, "w"), _matrix(b, 1, "b")
    n, k = x.shape
    k2, m = w.shape
    if k2 != k or b.shape != (m,):
        raise VerifyError("dense_forward: shapes do not line up")
    r = x.frac_bits + w.frac_bits
    out_frac = params["out_frac"]
    if not 0 <= out_frac <= min(r, 30) or b.frac_bits > r:
        raise VerifyError("dense_forward: out_frac or F(b) out of range")
    s = r - out_frac
    mx = max(abs(v) for v in xv)
    mw = max(abs(v) for v in wv)
    mb = max(abs(v) for v in bv)
    bshift = r - b.frac_bits
    if k * mx * mw + (mb << bshift) + h(s) > INT_MAX:
        raise Refused("dense_forward: outside the exact range")
    z = []
    for i in range(n):
        for j in range(m):
            acc = sum(xv[i * k + t] * wv[t * m + j] for t in range(k))
            z.append(round_shift(acc + (bv[j] << bshift), s))
    if act == "identity":
        a = z
    elif act == "relu":
        a = [v if v > 0 else 0 for v in z]
    else:
        num, sh = params["slope_num"], params["slope_shift"]
        if max(abs(v) for v in z) * num + h(sh) > INT_MAX:
            raise Refused("leaky_relu: outside the exact range")
        a = [v if v > 0 else round_shift(v * num, sh) for v in z]
    return encode_i8((n, m), out_frac, a)


def _act_grad(params: Mapping[str, Any], a: list[int], da: list[int]) -> list[int]:
    """§4.4: the activation's derivative, read off its output `a`."""
    act = params["act"]
    if act == "identity":
        return list(da)
    if act == "relu":
        return [d if x > 0 else 0 for x, d in zip(a, da, strict=True)]
    num, sh = params["slope_num"], params["slope_shift"]
    if max(abs(d) for d in da) * num + h(sh) > INT_MAX:
        raise Refused("leaky_relu': outside the exact range")
    return [d if x > 0 else round_shift(d * num, sh) for x, d in zip(a, da, strict=True)]


def _matmul(a: list[int], b: list[int], n: int, k: int, m: int) -> list[int]:
    return [sum(a[i * k + t] * b[t * m + j] for t in range(k)) for i in range(n) for j in range(m)]


def _transpose(a: list[int], rows: int, cols: int) -> list[int]:
    return [a[i * cols + j] for j in range(cols) for i in range(rows)]


def _maxabs(v: list[int]) -> int:
    return max(abs(x) for x in v)


def _backward(
    params: Mapping[str, Any], x: WireTensor, w: WireTensor | None, a: WireTensor, da: WireTensor
) -> list[WireTensor]:
    """§4.5 dense_backward (with `w`) and dense_backward_params (without)."""
    n, k = x.shape
    m = a.shape[1]
    xv, dav = x.values(), da.values()
    dz = _act_grad(params, a.values(), dav)
    out = []
    if w is not None:
        wv = w.values()
        sx = da.frac_bits + w.frac_bits - params["dx_frac"]
        if m * _maxabs(dz) * _maxabs(wv) + h(sx) > INT_MAX:
            raise Refused("dense_backward dx: outside the exact range")
        dx = [round_shift(v, sx) for v in _matmul(dz, _transpose(wv, k, m), n, m, k)]
        out.append(encode_i8((n, k), params["dx_frac"], dx))
    sw = x.frac_bits + da.frac_bits - params["dw_frac"]
    if n * _maxabs(xv) * _maxabs(dz) + h(sw) > INT_MAX:
        raise Refused("dense_backward dw: outside the exact range")
    dw = [round_shift(v, sw) for v in _matmul(_transpose(xv, n, k), dz, k, n, m)]
    if n * _maxabs(dz) > INT_MAX:
        raise Refused("dense_backward db: outside the exact range")
    db = [sum(dz[i * m + j] for i in range(n)) for j in range(m)]
    return [*out, encode_i8((k, m), params["dw_frac"], dw), encode_i8((m,), da.frac_bits, db)]


LOG2E = 1549082005
COEFFS = [1073741824, -744261118, 257941248, -59597083, 10327387, -1431680, 165394, -16377, 1419]
COEFFS += [-109, 8]


def _softmax_xent_grad(params: Mapping[str, Any], z: WireTensor, labels: WireTensor) -> WireTensor:
    """§4.5 softmax_xent_grad in integers."""
    n, c = z.shape
    p = params["out_frac"]
    zv, lv = z.values(), labels.values()
    if _maxabs(zv) >= 2**31:
        raise Refused("softmax_xent_grad: |z| >= 2^31")
    if any(not 0 <= label < c for label in lv):
        raise VerifyError("softmax_xent_grad: a label is outside 0..C-1")
    g = []
    for i in range(n):
        row = zv[i * c : (i + 1) * c]
        top = max(row)
        es = []
        for zij in row:
            u = round_shift((zij - top) * LOG2E, z.frac_bits)
            q, r = (-u) >> 30, (-u) & (2**30 - 1)
            e_ = COEFFS[10]
            for kk in range(9, -1, -1):
                e_ = COEFFS[kk] + round_shift(e_ * r, 30)
            es.append(round_shift(e_, min(q, 62)))
        total = sum(es)
        grow = [(2 * e * 2**p + total) // (2 * total) for e in es]
        grow[lv[i]] -= 2**p
        g.extend(grow)
    return encode_i8((n, c), p, g)


def _add(params: Mapping[str, Any], *ts: WireTensor) -> WireTensor:
    """§4.5 add."""
    if params or not 2 <= len(ts) <= 256:
        raise VerifyError("add: params must be {} and 2 to 256 inputs")
    if sum(_maxabs(t.values()) for t in ts) > INT_MAX:
        raise Refused("add: outside the exact range")
    vals = [t.values() for t in ts]
    return encode_i8(ts[0].shape, ts[0].frac_bits, [sum(col) for col in zip(*vals, strict=True)])


def _sgd_update(params: Mapping[str, Any], w: WireTensor, g: WireTensor) -> WireTensor:
    """§4.5 sgd_update."""
    num, sh = params["lr_num"], params["lr_shift"]
    s = g.frac_bits + sh - w.frac_bits
    gv, wv = g.values(), w.values()
    if _maxabs(gv) * num + h(s) > INT_MAX:
        raise Refused("sgd_update: step outside the exact range")
    step = [round_shift(v * num, s) for v in gv]
    if _maxabs(wv) + _maxabs(step) > INT_MAX:
        raise Refused("sgd_update: update outside the exact range")
    return encode_i8(w.shape, w.frac_bits, [a - b for a, b in zip(wv, step, strict=True)])


def _mlp_grad(params: Mapping[str, Any], inputs: Sequence[WireTensor]) -> list[WireTensor]:
    """§4.5 mlp_grad: the stated composition of the single-layer ops."""
    layers = params["layers"]
    slope = {k: params[k] for k in ("slope_num", "slope_shift") if k in params}
    acts_of = [
        {"act": params["act"], **slope} if i < layers - 1 else {"act": "identity"}
        for i in range(layers)
    ]
    x, labels, ws = inputs[0], inputs[1], inputs[2:]
    a = [x]
    for i in range(layers):
        sub = {**acts_of[i], "out_frac": params["act_frac"]}
        a.append(dense_forward(sub, a[i], ws[2 * i], ws[2 * i + 1]))
    g = _softmax_xent_grad({"out_frac": params["grad_frac"]}, a[layers], labels)
    grads: list[WireTensor] = []
    for i in range(layers - 1, 0, -1):
        sub = {**acts_of[i], "dx_frac": params["grad_frac"], "dw_frac": params["dw_frac"]}
        g, dw, db = _backward(sub, a[i], ws[2 * i], a[i + 1], g)
        grads = [dw, db, *grads]
    dw, db = _backward({**acts_of[0], "dw_frac": params["dw_frac"]}, a[0], None, a[1], g)
    return [a[layers], dw, db, *grads]


def execute(op: str, params: Mapping[str, Any], inputs: Sequence[WireTensor]) -> list[WireTensor]:
    """§4.5: run an exact-v1 op in Python integers (params are assumed already valid)."""
    if op == "mlp_grad":
        return _mlp_grad(params, inputs)
    if op == "dense_forward":
        return [dense_forward(params, *inputs)]
    if op == "dense_backward":
        return _backward(params, inputs[0], inputs[1], inputs[2], inputs[3])
    if op == "dense_backward_params":
        return _backward(params, inputs[0], None, inputs[1], inputs[2])
    if op == "softmax_xent_grad":
        return [_softmax_xent_grad(params, *inputs)]
    if op == "add":
        return [_add(params, *inputs)]
    if op == "sgd_update":
        return [_sgd_update(params, *inputs)]
    raise VerifyError(f"unknown op {op!r}")


# --------------------------------------------------------------------------- §5 transactions


def tx_envelope(tx: Mapping[str, Any]) -> dict[str, Any]:
    return {k: tx[k] for k in ("type", "sender", "nonce", "body")}


def tx_hash(tx: Mapping[str, Any]) -> str:
    """§5.1: digest of the envelope (the wire form without `signature`)."""
    return digest(tx_envelope(tx))


NAME_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.:/@+-")


def _int_in(v: Any, lo: int, hi: int) -> bool:
    return type(v) is int and lo <= v <= hi


def _is_name(v: Any) -> bool:
    return isinstance(v, str) and 1 <= len(v) <= 128 and set(v) <= NAME_CHARS


def _hashes(v: Any) -> bool:
    return isinstance(v, list) and 1 <= len(v) <= 16 and all(_is_hex(x, 64) for x in v)


def _input_ref(ref: Any) -> bool:
    """§5.3 input refs: a tensor with its metadata, or an earlier job's output."""
    if not isinstance(ref, dict):
        return False
    if set(ref) == {"job", "output"}:
        return _is_hex(ref["job"], 64) and _int_in(ref["output"], 0, 15)
    if set(ref) != {"tensor", "dtype", "shape", "frac_bits"}:
        return False
    shape = ref["shape"]
    return (
        _is_hex(ref["tensor"], 64)
        and ref["dtype"] in ITEMSIZE
        and isinstance(shape, list)
        and 1 <= len(shape) <= 4
        and all(_int_in(d, 1, INT_MAX) for d in shape)
        and _int_in(ref["frac_bits"], 0, 30)
    )


def _metrics(v: Any) -> bool:
    return (
        isinstance(v, dict)
        and len(v) <= 16
        and all(_is_name(k) and _int_in(x, -(2**62), 2**62) for k, x in v.items())
    )


_BODY_RULES: dict[str, tuple[dict[str, Callable[[Any], bool]], set[str]]] = {
    "transfer": ({"to": lambda v: _is_hex(v, 64), "amount": lambda v: _int_in(v, 1, 2**62)}, set()),
    "post_job": (
        {
            "op": _is_name,
            "kernel_version": _is_name,
            "inputs": lambda v: (
                isinstance(v, list) and 1 <= len(v) <= 16 and all(_input_ref(r) for r in v)
            ),
            "params": lambda v: isinstance(v, dict),
            "replication": lambda v: _int_in(v, 1, 16),
            "reward": lambda v: _int_in(v, 0, 2**62),
            "deadline": lambda v: _int_in(v, 1, 100000),
            "run": _is_name,
            "label": _is_name,
        },
        {"run", "label"},
    ),
    "commit_result": (
        {"job_id": lambda v: _is_hex(v, 64), "commitment": lambda v: _is_hex(v, 64)},
        set(),
    ),
    "reveal_result": (
        {"job_id": lambda v: _is_hex(v, 64), "outputs": _hashes, "salt": lambda v: _is_hex(v, 64)},
        set(),
    ),
    "submit_result": ({"job_id": lambda v: _is_hex(v, 64), "outputs": _hashes}, set()),
    "post_jobs": ({"jobs": lambda v: _batch(v, "post_job", distinct_jobs=False)}, set()),
    "commit_results": ({"commits": lambda v: _batch(v, "commit_result")}, set()),
    "reveal_results": ({"reveals": lambda v: _batch(v, "reveal_result")}, set()),
    "checkpoint": (
        {
            "run": _is_name,
            "epoch": lambda v: _int_in(v, 0, 2**62),
            "model_hash": lambda v: _is_hex(v, 64),
            "metrics": _metrics,
        },
        set(),
    ),
}


def _batch(items: Any, single: str, distinct_jobs: bool = True) -> bool:
    """§5.3 batches: 1 to 64 bodies of the single-job type; result batches name no job twice."""
    if not isinstance(items, list) or not 1 <= len(items) <= 64:
        return False
    try:
        for item in items:
            check_body(single, item)
    except VerifyError:
        return False
    return not distinct_jobs or len({item["job_id"] for item in items}) == len(items)


def check_body(tx_type: str, body: Any) -> None:
    """§5.2/§5.3: the body has exactly its type's required keys (plus optional ones), each of
    the stated form."""
    if tx_type not in _BODY_RULES:
        raise VerifyError(f"unknown tx type {tx_type!r}")
    if not isinstance(body, dict):
        raise VerifyError("tx body is not an object")
    rules, optional = _BODY_RULES[tx_type]
    required = set(rules) - optional
    if not required <= set(body) <= set(rules):
        raise VerifyError(f"{tx_type} body keys {sorted(body)} are not {sorted(required)}")
    for key, value in body.items():
        if not rules[key](value):
            raise VerifyError(f"{tx_type} body: {key} = {value!r} is not of the stated form")


def commitment(job_id: str, miner: str, outputs: Sequence[str], salt: str) -> str:
    """§5.3: the value a commit_result binds."""
    return digest({"job_id": job_id, "miner": miner, "outputs": list(outputs), "salt": salt})


def audited(block_hash_: str, job_id: str, audit_rate_ppm: int) -> bool:
    """§5.5: the audit decision for a job resolved in the block with this hash."""
    n = int.from_bytes(hashlib.sha256(bytes.fromhex(block_hash_) + bytes.fromhex(job_id)).digest())
    return n % 10**6 < audit_rate_ppm


def check_tx(tx: Mapping[str, Any], chain_id: str, max_tx_bytes: int | None = None) -> str:
    """§5.1/§5.2 envelope checks and the signature; returns the tx hash."""
    if set(tx) != TX_WIRE_KEYS:
        raise VerifyError(f"tx keys {sorted(tx)} are not the five wire keys")
    if not _is_hex(tx["sender"], 64) or not _is_hex(tx["signature"], 128):
        raise VerifyError("tx sender or signature is not lowercase hex of the right length")
    if type(tx["nonce"]) is not int or not 0 <= tx["nonce"] <= 2**62:
        raise VerifyError(f"tx nonce {tx['nonce']!r} out of range")
    check_body(tx["type"], tx["body"])
    if max_tx_bytes is not None and len(canonical_json(dict(tx))) > max_tx_bytes:
        raise VerifyError("tx larger than max_tx_bytes")
    envelope = tx_envelope(tx)
    if not verify_signature(tx["sender"], signing_bytes("tx", chain_id, envelope), tx["signature"]):
        raise VerifyError(f"tx {digest(envelope)}: bad signature")
    return digest(envelope)


# --------------------------------------------------------------------------- §6 blocks


def merkle_root(hashes: Sequence[str]) -> str:
    """§6.2: leaf = H(0x00||h), node = H(0x01||l||r), odd last node carried up."""
    if not hashes:
        return EMPTY_ROOT
    level = [hashlib.sha256(b"\x00" + bytes.fromhex(x)).digest() for x in hashes]
    while len(level) > 1:
        nxt = [
            hashlib.sha256(b"\x01" + level[i] + level[i + 1]).digest()
            for i in range(0, len(level) - 1, 2)
        ]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return level[0].hex()


def block_hash(header: Mapping[str, Any]) -> str:
    """§6.1: digest of the header object."""
    return digest(dict(header))


def quorum(n: int) -> int:
    """§6.5 / §7.1: ceil((n + f + 1) / 2) with f = floor((n - 1) / 3)."""
    f = (n - 1) // 3
    return -(-(n + f + 1) // 2)


def check_certificate(
    cert: Mapping[str, Any],
    chain_id: str,
    validators: Sequence[str],
    height: int,
    block_hash_: str,
) -> None:
    """§6.5: >= quorum distinct genesis validators signed the COMMIT vote for this block."""
    if cert["height"] != height or cert["block_hash"] != block_hash_:
        raise VerifyError("certificate is for another block", height)
    payload = {"block_hash": block_hash_, "height": height, "view": cert["view"]}
    message = signing_bytes("commit", chain_id, payload)
    seen: set[str] = set()
    members = set(validators)
    sigs = cert["signatures"]
    for entry in sigs:
        addr = entry["validator"]
        if addr not in members:
            raise VerifyError(f"certificate signer {addr} is not a genesis validator", height)
        if addr in seen:
            raise VerifyError(f"certificate signer {addr} repeats", height)
        if not verify_signature(addr, message, entry["signature"]):
            raise VerifyError(f"certificate: bad signature by {addr}", height)
        seen.add(addr)
    if len(seen) < quorum(len(validators)):
        raise VerifyError(
            f"certificate has {len(seen)} signers, quorum is {quorum(len(validators))}", height
        )


def verify_tx_proof(proof: Mapping[str, Any], genesis: Mapping[str, Any]) -> str:
    """§6.8: a tx inclusion proof checked against a normalised genesis alone; the tx hash."""
    keys = {"tx", "height", "index", "header", "merkle_path", "certificate"}
    if not isinstance(proof, Mapping) or set(proof) != keys:
        raise VerifyError("a proof has exactly the keys " + ", ".join(sorted(keys)))
    header, height, index = proof["header"], proof["height"], proof["index"]
    if header["chain_id"] != genesis["chain_id"] or header["height"] != height:
        raise VerifyError("the header is of another chain or height")
    tx_hash_ = check_tx(proof["tx"], genesis["chain_id"], genesis["params"]["max_tx_bytes"])
    n = header["n_txs"]
    if type(index) is not int or not 0 <= index < n:
        raise VerifyError(f"index {index!r} is outside a block of {n} txs")
    sides, i, size = [], index, n
    while size > 1:
        if i ^ 1 < size:
            sides.append("L" if i ^ 1 < i else "R")
        i, size = i // 2, (size + 1) // 2
    path = proof["merkle_path"]
    if [step["side"] for step in path] != sides:
        raise VerifyError("the path's sides are not those of the index")
    node = hashlib.sha256(b"\x00" + bytes.fromhex(tx_hash_)).digest()
    for step in path:
        sibling = bytes.fromhex(step["hash"])
        pair = sibling + node if step["side"] == "L" else node + sibling
        node = hashlib.sha256(b"\x01" + pair).digest()
    if node.hex() != header["tx_root"]:
        raise VerifyError("the path does not lead to the header's tx_root")
    validators = [v["address"] for v in genesis["validators"]]
    check_certificate(
        proof["certificate"], genesis["chain_id"], validators, height, block_hash(header)
    )
    return tx_hash_


PARAM_DEFAULTS = {
    "replication": 2,
    "reward_per_job": 10,
    "commit_blocks": 20,
    "reveal_blocks": 20,
    "slash_amount": 20,
    "audit_rate_ppm": 20000,
    "max_job_macs": 2**28,
    "max_tensor_elements": 2**22,
    "max_block_txs": 2000,
    "max_tx_bytes": 16384,
    "checkpoint_interval": 16,
    "watermark_window": 32,
}
"""§6.7: every genesis parameter and its default."""


def normalise_genesis(raw: Mapping[str, Any]) -> dict[str, Any]:
    """§6.7: the genesis with every default filled in (what the genesis hash covers)."""
    unknown = set(raw) - {"chain_id", "validators", "params", "balances", "genesis_time_ms"}
    if unknown or "chain_id" not in raw or not raw.get("validators"):
        raise VerifyError(f"genesis: bad keys {sorted(raw)}")
    params = dict(raw.get("params", {}))
    if set(params) - set(PARAM_DEFAULTS):
        raise VerifyError(f"genesis: unknown params {sorted(set(params) - set(PARAM_DEFAULTS))}")
    addresses = [v["address"] for v in raw["validators"]]
    if len(set(addresses)) != len(addresses):
        raise VerifyError("genesis: a validator address repeats")
    return {
        "chain_id": raw["chain_id"],
        "validators": [
            {"address": v["address"], "name": v.get("name", ""), "url": v.get("url", "")}
            for v in raw["validators"]
        ],
        "params": {**PARAM_DEFAULTS, **params},
        "balances": dict(raw.get("balances", {})),
        "genesis_time_ms": raw.get("genesis_time_ms", 0),
    }


def genesis_hash(genesis: Mapping[str, Any]) -> str:
    """§6.7: digest of the normalised genesis (not of the file as written)."""
    return digest(normalise_genesis(genesis))


def root0(genesis_hash_: str) -> str:
    """§6.4: root(0) = digest({"genesis_hash": G})."""
    return digest({"genesis_hash": genesis_hash_})


def next_root(prev_root: str, diff_bytes: bytes) -> str:
    """§6.4: root(h) = SHA-256(bytes(root(h-1)) || canonical_json(diff(h)))."""
    return sha256_hex(bytes.fromhex(prev_root) + diff_bytes)


def receipt_digest(receipt: Mapping[str, Any]) -> str:
    return digest(dict(receipt))


# --------------------------------------------------------------------------- the SQLite ledger


@dataclass
class Report:
    """What a successful verification covered."""

    height: int
    n_txs: int
    genesis_hash: str
    state_root: str
    kernel_checks: int = 0


TensorSource = Callable[[str], bytes]
"""Returns a tensor's wire bytes by hash (or raises KeyError)."""


def dir_tensor_source(root: str) -> TensorSource:
    """§6.6: the tensor with hash H is the row H of ROOT/pack.sqlite, or the file ROOT/H[0:2]/H."""
    pack = f"{root}/pack.sqlite"

    def read(tensor_hash: str) -> bytes:
        if not _is_hex(tensor_hash, 64):
            raise KeyError(tensor_hash)
        try:
            conn = sqlite3.connect(f"file:{pack}?mode=ro", uri=True)
        except sqlite3.OperationalError:
            conn = None  # no pack: files only
        if conn is not None:
            try:
                row = conn.execute(
                    "SELECT blob FROM tensors WHERE hash = ?", (tensor_hash,)
                ).fetchone()
            except sqlite3.OperationalError:
                row = None
            finally:
                conn.close()
            if row is not None:
                return bytes(row[0])
        try:
            with open(f"{root}/{tensor_hash[:2]}/{tensor_hash}", "rb") as f:
                return f.read()
        except FileNotFoundError:
            raise KeyError(tensor_hash) from None

    return read


def _rows(conn: sqlite3.Connection, sql: str, *args: Any) -> list[sqlite3.Row]:
    return list(conn.execute(sql, args))


def verify_sqlite(path: str, tensors: TensorSource | None = None) -> Report:
    """Verify a ledger database from the raw rows (§6.6), trusting only its stored genesis.

    With `tensors`, every settled `dense_forward` job is also recomputed (§4.5) and its output
    hash compared with the settled one."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    conn.row_factory = sqlite3.Row
    try:
        return _verify(conn, tensors)
    finally:
        conn.close()


def _verify(conn: sqlite3.Connection, tensors: TensorSource | None) -> Report:
    meta = {r["key"]: r["value"] for r in _rows(conn, "SELECT key, value FROM meta")}
    if "genesis" not in meta:
        raise VerifyError("meta has no genesis")
    genesis = parse_canonical(meta["genesis"], "genesis")
    if genesis != normalise_genesis(genesis):
        raise VerifyError("the stored genesis is not normalised (§6.7)")
    chain_id = genesis["chain_id"]
    validators = [v["address"] for v in genesis["validators"]]
    params = genesis["params"]
    g_hash = genesis_hash(genesis)
    root = root0(g_hash)
    prev_hash = g_hash
    prev_time = genesis["genesis_time_ms"]
    heights = [r["height"] for r in _rows(conn, "SELECT height FROM blocks ORDER BY height")]
    if heights != list(range(1, len(heights) + 1)):
        raise VerifyError(f"block heights are not 1..n: {heights[:10]}...")
    n_txs_total = 0
    jobs: dict[str, dict[str, Any]] = {}
    commitments: dict[tuple[str, str], str] = {}
    for height in heights:
        row = _rows(conn, "SELECT * FROM blocks WHERE height = ?", height)[0]
        header = {k: row[k] for k in HEADER_KEYS}
        bh = block_hash(header)
        if bh != row["hash"]:
            raise VerifyError("stored hash != digest(header)", height)
        if header["chain_id"] != chain_id:
            raise VerifyError("chain_id differs from the genesis", height)
        if header["prev_hash"] != prev_hash:
            raise VerifyError("prev_hash does not link to the previous block", height)
        if header["time_ms"] < prev_time:
            raise VerifyError("time_ms goes backwards", height)
        if header["proposer"] not in validators:
            raise VerifyError("proposer is not a genesis validator", height)
        if header["app_hash"] != root:
            raise VerifyError("app_hash != state root after the previous block", height)
        tx_rows = _rows(conn, "SELECT * FROM txs WHERE height = ? ORDER BY idx", height)
        if [r["idx"] for r in tx_rows] != list(range(len(tx_rows))):
            raise VerifyError("tx indexes are not 0..n-1", height)
        if header["n_txs"] > params["max_block_txs"]:
            raise VerifyError("more txs than max_block_txs", height)
        if header["n_txs"] != len(tx_rows):
            raise VerifyError("n_txs != number of stored txs", height)
        hashes = []
        block_txs: list[dict[str, Any]] = []
        for r in tx_rows:
            tx = {
                "type": r["type"],
                "sender": r["sender"],
                "nonce": r["nonce"],
                "body": parse_canonical(r["body"], f"tx {r['idx']} body", height),
                "signature": r["signature"],
            }
            try:
                th = check_tx(tx, chain_id, params.get("max_tx_bytes"))
            except VerifyError as e:
                raise VerifyError(f"tx {r['idx']}: {e}", height) from e
            if th != r["hash"]:
                raise VerifyError(f"tx {r['idx']}: stored hash != digest(envelope)", height)
            hashes.append(th)
            block_txs.append(tx)
        if merkle_root(hashes) != header["tx_root"]:
            raise VerifyError("tx_root != Merkle root of the tx hashes", height)
        cert_rows = _rows(conn, "SELECT * FROM certificates WHERE height = ?", height)
        if not cert_rows:
            raise VerifyError("no certificate", height)
        c = cert_rows[0]
        cert = {
            "height": c["height"],
            "view": c["view"],
            "block_hash": c["block_hash"],
            "signatures": parse_canonical(c["signatures"], "certificate signatures", height),
        }
        check_certificate(cert, chain_id, validators, height, bh)
        receipts = _rows(conn, "SELECT * FROM receipts WHERE height = ? ORDER BY idx", height)
        if [(r["idx"], r["tx_hash"]) for r in receipts] != list(enumerate(hashes)):
            raise VerifyError("receipts do not match the txs one to one", height)
        receipts_root = merkle_root(
            [
                receipt_digest(
                    {
                        "tx_hash": r["tx_hash"],
                        "ok": bool(r["ok"]),
                        "code": r["code"],
                        "message": r["message"],
                    }
                )
                for r in receipts
            ]
        )
        diff_rows = _rows(conn, "SELECT diff FROM block_diffs WHERE height = ?", height)
        if not diff_rows:
            raise VerifyError("no state diff", height)
        diff_text = diff_rows[0]["diff"]
        diff = parse_canonical(diff_text, "state diff", height)
        if not isinstance(diff, dict) or set(diff) != DIFF_KEYS:
            raise VerifyError("state diff keys are not those of §6.4", height)
        if diff.get("height") != height:
            raise VerifyError("state diff names another height", height)
        if diff.get("receipts_root") != receipts_root:
            raise VerifyError("receipts_root in the diff != Merkle root of the receipts", height)
        root = next_root(root, diff_text.encode("utf-8"))
        if row["state_root"] != root:
            raise VerifyError("stored state_root != H(previous root, diff)", height)
        for job_id, job in diff["jobs"].items():
            _check_job_record(job_id, job, height, bh, params["audit_rate_ppm"])
            jobs[job_id] = {**job, "_written_at": height}
        for tx, r in zip(block_txs, receipts, strict=True):
            _check_commitment(tx, r, commitments, height)
        prev_hash, prev_time = bh, header["time_ms"]
        n_txs_total += len(tx_rows)
    report = Report(len(heights), n_txs_total, g_hash, root)
    if tensors is not None:
        report.kernel_checks = _check_dense_jobs(jobs, tensors)
    return report


def _check_job_record(
    job_id: str, job: Mapping[str, Any], height: int, block_hash_: str, audit_rate_ppm: int
) -> None:
    """§5.5: the record's fields, and the audit decision of a job resolved in this block."""
    if set(job) != JOB_KEYS or job["id"] != job_id:
        raise VerifyError(f"job {job_id}: record keys differ from §5.5", height)
    if job["status"] == "settled":
        right = [m for m, v in job["verdicts"].items() if v == "right"]
        share = job["reward"] // len(right) if right else 0
        if job["paid"] != {m: share for m in right}:
            raise VerifyError(f"job {job_id}: paid {job['paid']} is not reward // n_right", height)
        if job["refund"] != job["reward"] - sum(job["paid"].values()):
            raise VerifyError(f"job {job_id}: refund is not the unpaid rest", height)
        punished = {m for m, v in job["verdicts"].items() if v in ("wrong", "missed")}
        if set(job["slashed"]) != punished:
            raise VerifyError(f"job {job_id}: slashed miners are not the wrong/missed ones", height)
    if job["status"] in ("expired", "failed"):
        if job["paid"] or job["refund"] != job["reward"] or not job["reason"]:
            raise VerifyError(f"job {job_id}: {job['status']} without a full refund", height)
        if any(v != "wrong" for m, v in job["verdicts"].items() if m in job["reveals"]):
            raise VerifyError(
                f"job {job_id}: a revealer of a {job['status']} job is not wrong", height
            )
    if job["settled_height"] == height and job["settlement"] in ("agreed", "audited"):
        expected = "audited" if audited(block_hash_, job_id, audit_rate_ppm) else "agreed"
        if job["settlement"] != expected:
            raise VerifyError(
                f"job {job_id}: settlement {job['settlement']}, rule says {expected}", height
            )


def _applied_items(tx: Mapping[str, Any], receipt: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """§5.4: the items of a result tx that applied (a batch names the others in its message)."""
    body = tx["body"]
    if tx["type"] in ("commit_result", "reveal_result"):
        return [body] if receipt["ok"] else []
    items = body.get("commits") or body.get("reveals") or []
    if not receipt["ok"]:
        return []
    skipped: set[int] = set()
    if receipt["message"]:
        prefix = "not applied: "
        if not receipt["message"].startswith(prefix):
            raise VerifyError(f"batch receipt message {receipt['message']!r} is not §5.4's form")
        for part in receipt["message"][len(prefix) :].split(", "):
            index, _, code = part.partition(" ")
            if not index.isdigit() or not code or int(index) >= len(items):
                raise VerifyError(f"batch receipt names item {part!r} that does not exist")
            skipped.add(int(index))
    return [item for i, item in enumerate(items) if i not in skipped]


def _check_commitment(
    tx: Mapping[str, Any],
    receipt: Mapping[str, Any],
    commitments: dict[tuple[str, str], str],
    height: int,
) -> None:
    """§5.3: an accepted reveal opens exactly the sender's accepted commitment."""
    kind = {"commit_results": "commit_result", "reveal_results": "reveal_result"}.get(
        tx["type"], tx["type"]
    )
    for item in _applied_items(tx, receipt) if kind in ("commit_result", "reveal_result") else []:
        key = (item["job_id"], tx["sender"])
        if kind == "commit_result":
            commitments[key] = item["commitment"]
            continue
        if commitments.get(key) != commitment(
            item["job_id"], tx["sender"], item["outputs"], item["salt"]
        ):
            raise VerifyError(
                f"accepted reveal on {item['job_id']} does not open its commitment", height
            )


def _resolve_input(ref: Mapping[str, Any], jobs: Mapping[str, Mapping[str, Any]]) -> str:
    if "tensor" in ref:
        return str(ref["tensor"])
    parent = jobs.get(ref["job"])
    if parent is None or parent.get("outputs") is None:
        raise VerifyError(f"input job {ref['job']} did not settle in this ledger")
    return str(parent["outputs"][ref["output"]])


def _check_dense_jobs(jobs: Mapping[str, Mapping[str, Any]], tensors: TensorSource) -> int:
    """Recompute each settled dense_forward job (§4.5) and compare with its settled outputs."""
    checked = 0
    settled = [
        (job["settled_height"], job_id)
        for job_id, job in jobs.items()
        if job["status"] == "settled" and job["op"] == "dense_forward"
    ]
    for _, job_id in sorted(settled):  # an input job is checked before the jobs reading it
        job = jobs[job_id]
        if job["kernel_version"] != "exact-v1":
            raise VerifyError(f"job {job_id}: unknown kernel version {job['kernel_version']}")
        hashes = [_resolve_input(ref, jobs) for ref in job["inputs"]]
        try:
            blobs = [tensors(hx) for hx in hashes]
        except KeyError as e:
            raise VerifyError(
                f"job {job_id}: input tensor {e} unavailable", job["_written_at"]
            ) from e
        inputs = [decode_wire_tensor(blob, hx) for blob, hx in zip(blobs, hashes, strict=True)]
        out = dense_forward(job["params"], *inputs)
        if [out.hash] != job["outputs"]:
            raise VerifyError(
                f"job {job_id}: recomputed dense_forward output {out.hash} != settled "
                f"{job['outputs']}",
                job["_written_at"],
            )
        checked += 1
    return checked
