"""JSON-ready encoding of consensus messages and persisted records, and strict decoding.

The host moves messages as canonical JSON (`ledger.encoding.canonical_json` / `parse_json`).
Blocks are opaque here: the host passes `encode_block(block) -> JSON value` and
`decode_block(value) -> block`; `decode_block` must raise `EncodingError` (or `InvalidBlock`) on
garbage and must return a block whose `.hash` is the true digest of its content.
Decoding never trusts its input: unknown or missing fields, wrong types and oversized lists are
refused with `EncodingError`, before any signature is checked.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ledger.consensus.messages import (
    Checkpoint,
    Commit,
    NewView,
    Prepare,
    PreparedCert,
    PrePrepare,
    ViewChange,
)
from ledger.consensus.records import (
    NewViewRecord,
    PreparedRecord,
    StableRecord,
    ViewChangeRecord,
    VoteRecord,
)
from ledger.errors import EncodingError, InvalidBlock

EncodeBlock = Callable[[Any], Any]
DecodeBlock = Callable[[Any], Any]

#: Longest list accepted anywhere in a message (validators, certificates, re-proposals).
MAX_LIST = 1024


# ------------------------------------------------------------------------------- encoding
def _vote_fields(msg: PrePrepare | Prepare | Commit) -> dict[str, Any]:
    return {
        "view": msg.view,
        "height": msg.height,
        "block_hash": msg.block_hash,
        "sender": msg.sender,
        "signature": msg.signature,
    }


def _pp(msg: PrePrepare, encode_block: EncodeBlock) -> dict[str, Any]:
    return {**_vote_fields(msg), "block": encode_block(msg.block)}


def _cp(msg: Checkpoint) -> dict[str, Any]:
    return {
        "height": msg.height,
        "block_hash": msg.block_hash,
        "sender": msg.sender,
        "signature": msg.signature,
    }


def _cert(cert: PreparedCert, encode_block: EncodeBlock) -> dict[str, Any]:
    return {
        "pre_prepare": _pp(cert.pre_prepare, encode_block),
        "prepares": [_vote_fields(p) for p in cert.prepares],
    }


def _vc(msg: ViewChange, encode_block: EncodeBlock) -> dict[str, Any]:
    return {
        "view": msg.view,
        "stable_height": msg.stable_height,
        "stable_hash": msg.stable_hash,
        "checkpoint_proof": [_cp(c) for c in msg.checkpoint_proof],
        "prepared": [_cert(c, encode_block) for c in msg.prepared],
        "sender": msg.sender,
        "signature": msg.signature,
    }


def message_to_wire(msg: Any, encode_block: EncodeBlock) -> dict[str, Any]:
    """A JSON-ready dict for `msg`, with its kind under "type"."""
    if isinstance(msg, PrePrepare):
        body = _pp(msg, encode_block)
    elif isinstance(msg, Prepare | Commit):
        body = _vote_fields(msg)
    elif isinstance(msg, Checkpoint):
        body = _cp(msg)
    elif isinstance(msg, ViewChange):
        body = _vc(msg, encode_block)
    elif isinstance(msg, NewView):
        body = {
            "view": msg.view,
            "view_changes": [_vc(v, encode_block) for v in msg.view_changes],
            "pre_prepares": [_pp(p, encode_block) for p in msg.pre_prepares],
            "sender": msg.sender,
            "signature": msg.signature,
        }
    else:
        raise EncodingError(f"not a consensus message: {type(msg).__name__}")
    return {"type": msg.KIND, **body}


# ------------------------------------------------------------------------------- decoding
def _fields(raw: Any, what: str, keys: set[str]) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise EncodingError(f"{what} must be a JSON object")
    if set(raw) != keys:
        missing, extra = sorted(keys - set(raw)), sorted(set(raw) - keys)
        raise EncodingError(f"{what}: missing fields {missing}, unknown fields {extra}")
    return raw


def _int(raw: dict[str, Any], key: str, what: str) -> int:
    value = raw[key]
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**62:
        raise EncodingError(f"{what}.{key} must be a non-negative integer")
    return value


def _hex(raw: dict[str, Any], key: str, what: str, length: int) -> str:
    value = raw[key]
    if not isinstance(value, str) or len(value) != length:
        raise EncodingError(f"{what}.{key} must be {length} hex characters")
    try:
        bytes.fromhex(value)
    except ValueError:
        raise EncodingError(f"{what}.{key} must be {length} hex characters") from None
    return value


def _list(raw: dict[str, Any], key: str, what: str) -> list[Any]:
    value = raw[key]
    if not isinstance(value, list) or len(value) > MAX_LIST:
        raise EncodingError(f"{what}.{key} must be a list of at most {MAX_LIST} items")
    return value


_VOTE_KEYS = {"view", "height", "block_hash", "sender", "signature"}


def _signer(raw: dict[str, Any], what: str) -> dict[str, str]:
    return {"sender": _hex(raw, "sender", what, 64), "signature": _hex(raw, "signature", what, 128)}


def _vote(cls: type, raw: Any, what: str) -> Any:
    raw = _fields(raw, what, _VOTE_KEYS)
    return cls(
        view=_int(raw, "view", what),
        height=_int(raw, "height", what),
        block_hash=_hex(raw, "block_hash", what, 64),
        **_signer(raw, what),
    )


def _pp_from(raw: Any, decode_block: DecodeBlock, what: str = "pre-prepare") -> PrePrepare:
    raw = _fields(raw, what, _VOTE_KEYS | {"block"})
    try:
        block = decode_block(raw["block"])
    except InvalidBlock as exc:
        raise EncodingError(f"{what}.block: {exc}") from exc
    return PrePrepare(
        view=_int(raw, "view", what),
        height=_int(raw, "height", what),
        block_hash=_hex(raw, "block_hash", what, 64),
        block=block,
        **_signer(raw, what),
    )


def _cp_from(raw: Any, what: str = "checkpoint") -> Checkpoint:
    raw = _fields(raw, what, {"height", "block_hash", "sender", "signature"})
    return Checkpoint(
        height=_int(raw, "height", what),
        block_hash=_hex(raw, "block_hash", what, 64),
        **_signer(raw, what),
    )


def _cert_from(raw: Any, decode_block: DecodeBlock) -> PreparedCert:
    what = "prepared certificate"
    raw = _fields(raw, what, {"pre_prepare", "prepares"})
    return PreparedCert(
        _pp_from(raw["pre_prepare"], decode_block),
        tuple(_vote(Prepare, p, "prepare") for p in _list(raw, "prepares", what)),
    )


def _vc_from(raw: Any, decode_block: DecodeBlock) -> ViewChange:
    what = "view-change"
    keys = {"view", "stable_height", "stable_hash", "checkpoint_proof", "prepared"}
    raw = _fields(raw, what, keys | {"sender", "signature"})
    return ViewChange(
        view=_int(raw, "view", what),
        stable_height=_int(raw, "stable_height", what),
        stable_hash=_hex(raw, "stable_hash", what, 64),
        checkpoint_proof=tuple(_cp_from(c) for c in _list(raw, "checkpoint_proof", what)),
        prepared=tuple(_cert_from(c, decode_block) for c in _list(raw, "prepared", what)),
        **_signer(raw, what),
    )


def message_from_wire(raw: Any, decode_block: DecodeBlock) -> Any:
    """Decode a message produced by `message_to_wire`; EncodingError says what was wrong."""
    if not isinstance(raw, dict) or not isinstance(raw.get("type"), str):
        raise EncodingError("a consensus message is a JSON object with a string 'type'")
    kind = raw["type"]
    body = {k: v for k, v in raw.items() if k != "type"}
    if kind == PrePrepare.KIND:
        return _pp_from(body, decode_block)
    if kind == Prepare.KIND:
        return _vote(Prepare, body, kind)
    if kind == Commit.KIND:
        return _vote(Commit, body, kind)
    if kind == Checkpoint.KIND:
        return _cp_from(body)
    if kind == ViewChange.KIND:
        return _vc_from(body, decode_block)
    if kind == NewView.KIND:
        what = "new-view"
        body = _fields(body, what, {"view", "view_changes", "pre_prepares", "sender", "signature"})
        return NewView(
            view=_int(body, "view", what),
            view_changes=tuple(
                _vc_from(v, decode_block) for v in _list(body, "view_changes", what)
            ),
            pre_prepares=tuple(
                _pp_from(p, decode_block) for p in _list(body, "pre_prepares", what)
            ),
            **_signer(body, what),
        )
    raise EncodingError(f"unknown consensus message type {kind!r}")


# -------------------------------------------------------------------------------- records
def record_to_wire(record: Any, encode_block: EncodeBlock) -> dict[str, Any]:
    """A JSON-ready dict for a persisted record (see records.py)."""
    if isinstance(record, VoteRecord):
        return {
            "record": "vote",
            "phase": record.phase,
            "view": record.view,
            "height": record.height,
            "block_hash": record.block_hash,
        }
    if isinstance(record, PreparedRecord):
        return {"record": "prepared", "cert": _cert(record.cert, encode_block)}
    if isinstance(record, ViewChangeRecord):
        return {"record": "view-change", "vc": _vc(record.vc, encode_block)}
    if isinstance(record, NewViewRecord):
        return {"record": "new-view", "nv": message_to_wire(record.nv, encode_block)}
    if isinstance(record, StableRecord):
        return {
            "record": "stable",
            "height": record.height,
            "block_hash": record.block_hash,
            "proof": [_cp(c) for c in record.proof],
        }
    raise EncodingError(f"not a consensus record: {type(record).__name__}")


def record_from_wire(raw: Any, decode_block: DecodeBlock) -> Any:
    """Decode a record produced by `record_to_wire`."""
    if not isinstance(raw, dict):
        raise EncodingError("a consensus record is a JSON object")
    kind = raw.get("record")
    if kind == "vote":
        raw = _fields(raw, "vote record", {"record", "phase", "view", "height", "block_hash"})
        if raw["phase"] not in ("pre-prepare", "prepare", "commit"):
            raise EncodingError("vote record phase must be pre-prepare, prepare or commit")
        return VoteRecord(
            raw["phase"],
            _int(raw, "view", "vote record"),
            _int(raw, "height", "vote record"),
            _hex(raw, "block_hash", "vote record", 64),
        )
    if kind == "prepared":
        raw = _fields(raw, "prepared record", {"record", "cert"})
        return PreparedRecord(_cert_from(raw["cert"], decode_block))
    if kind == "view-change":
        raw = _fields(raw, "view-change record", {"record", "vc"})
        return ViewChangeRecord(_vc_from(raw["vc"], decode_block))
    if kind == "new-view":
        raw = _fields(raw, "new-view record", {"record", "nv"})
        nv = message_from_wire(raw["nv"], decode_block)
        if not isinstance(nv, NewView):
            raise EncodingError("new-view record does not hold a NEW-VIEW")
        return NewViewRecord(nv)
    if kind == "stable":
        raw = _fields(raw, "stable record", {"record", "height", "block_hash", "proof"})
        return StableRecord(
            _int(raw, "height", "stable record"),
            _hex(raw, "block_hash", "stable record", 64),
            tuple(_cp_from(c) for c in _list(raw, "proof", "stable record")),
        )
    raise EncodingError(f"unknown consensus record {kind!r}")
