"""PBFT messages: what each carries, what exactly is signed, and the kind string that names it.

Every message is signed by its `sender` (a validator address) over
`signing_bytes(KIND, chain_id, payload())`; the block body that rides along with a PRE-PREPARE
is not signed itself, it is bound by its hash. COMMIT signs exactly
`ledger.certificate.commit_vote_payload(height, view, block_hash)` with kind "commit", so the
commit votes a replica collects ARE a `CommitCertificate`.

Messages compare by identity (`eq=False`): two messages are "the same vote" when their
(sender, payload) agree, which the replica checks explicitly.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from ledger.certificate import COMMIT_KIND, commit_vote_payload
from ledger.encoding import MAX_SAFE_INT, SIGNING_DOMAIN, signing_bytes
from ledger.identity import Keypair, verify_raw


class _Signed:
    """Mixin: the signed bytes of a message, computed once per message object."""

    KIND: ClassVar[str]
    sender: str
    signature: str

    def payload(self) -> dict[str, Any]:  # pragma: no cover - overridden
        raise NotImplementedError

    def signed_bytes(self, chain_id: str) -> bytes:
        cached = self.__dict__.get("_signed_bytes")
        if cached is not None and cached[0] == chain_id:
            return cached[1]  # type: ignore[no-any-return]
        data = fast_signing_bytes(self.KIND, chain_id, self.payload())
        self.__dict__["_signed_bytes"] = (chain_id, data)
        return data


def fast_signing_bytes(kind: str, chain_id: str, payload: dict[str, Any]) -> bytes:
    """`ledger.encoding.signing_bytes`, faster for payloads made only of str, int and lists.

    Consensus payloads are exactly that (their field types are checked before anything is
    verified), and for such values sorted-key, compact `json.dumps` IS the canonical encoding;
    anything else (bools, floats, bytes, huge ints) takes the general path.
    """
    if not _plain(payload):
        return signing_bytes(kind, chain_id, payload)
    if not (kind and chain_id and isinstance(kind, str) and isinstance(chain_id, str)):
        return signing_bytes(kind, chain_id, payload)
    envelope = {"chain_id": chain_id, "domain": SIGNING_DOMAIN, "kind": kind, "payload": payload}
    return json.dumps(envelope, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _plain(value: Any) -> bool:
    kind = type(value)
    if kind is str:
        return True
    if kind is int:
        return -MAX_SAFE_INT <= value <= MAX_SAFE_INT  # type: ignore[no-any-return]
    if kind is list:
        return all(_plain(v) for v in value)
    if kind is dict:
        return all(type(k) is str and _plain(v) for k, v in value.items())
    return False


@dataclass(frozen=True, eq=False)
class PrePrepare(_Signed):
    """The primary of `view` proposes `block` at `height`."""

    KIND: ClassVar[str] = "pre-prepare"
    view: int
    height: int
    block_hash: str
    block: Any
    """The block itself (opaque; bound to the signature by `block_hash`)."""
    sender: str
    signature: str

    def payload(self) -> dict[str, Any]:
        return {"block_hash": self.block_hash, "height": self.height, "view": self.view}


@dataclass(frozen=True, eq=False)
class Prepare(_Signed):
    """A backup accepted the primary's proposal of `block_hash` at (`view`, `height`)."""

    KIND: ClassVar[str] = "prepare"
    view: int
    height: int
    block_hash: str
    sender: str
    signature: str

    def payload(self) -> dict[str, Any]:
        return {"block_hash": self.block_hash, "height": self.height, "view": self.view}


@dataclass(frozen=True, eq=False)
class Commit(_Signed):
    """The sender holds a prepared certificate for `block_hash` at (`view`, `height`)."""

    KIND: ClassVar[str] = COMMIT_KIND
    view: int
    height: int
    block_hash: str
    sender: str
    signature: str

    def payload(self) -> dict[str, Any]:
        return commit_vote_payload(self.height, self.view, self.block_hash)


@dataclass(frozen=True, eq=False)
class Checkpoint(_Signed):
    """The sender committed `block_hash` at `height` (a multiple of the checkpoint interval)."""

    KIND: ClassVar[str] = "checkpoint"
    height: int
    block_hash: str
    sender: str
    signature: str

    def payload(self) -> dict[str, Any]:
        return {"block_hash": self.block_hash, "height": self.height}


@dataclass(frozen=True, eq=False)
class PreparedCert:
    """Proof that a block was prepared: its PRE-PREPARE and 2f matching PREPAREs of backups."""

    pre_prepare: PrePrepare
    prepares: tuple[Prepare, ...]

    @property
    def view(self) -> int:
        return self.pre_prepare.view

    @property
    def height(self) -> int:
        return self.pre_prepare.height

    @property
    def block_hash(self) -> str:
        return self.pre_prepare.block_hash

    def summary(self) -> dict[str, Any]:
        """The part of the certificate a VIEW-CHANGE signature covers."""
        return {
            "block_hash": self.block_hash,
            "height": self.height,
            "pre_prepare_signature": self.pre_prepare.signature,
            "prepares": sorted([p.sender, p.signature] for p in self.prepares),
            "view": self.view,
        }


@dataclass(frozen=True, eq=False)
class ViewChange(_Signed):
    """The sender moves to `view`: its stable checkpoint (with proof) and prepared certificates."""

    KIND: ClassVar[str] = "view-change"
    view: int
    stable_height: int
    stable_hash: str
    checkpoint_proof: tuple[Checkpoint, ...]
    """2f+1 CHECKPOINTs for (stable_height, stable_hash); empty for the genesis (height 0)."""
    prepared: tuple[PreparedCert, ...]
    """The highest-view prepared certificate of each height above the stable checkpoint."""
    sender: str
    signature: str

    def payload(self) -> dict[str, Any]:
        return {
            "checkpoint_proof": sorted([c.sender, c.signature] for c in self.checkpoint_proof),
            "prepared": [p.summary() for p in self.prepared],
            "stable_hash": self.stable_hash,
            "stable_height": self.stable_height,
            "view": self.view,
        }


@dataclass(frozen=True, eq=False)
class NewView(_Signed):
    """The primary of `view` installs it: 2f+1 VIEW-CHANGEs and the re-proposed blocks (O)."""

    KIND: ClassVar[str] = "new-view"
    view: int
    view_changes: tuple[ViewChange, ...]
    pre_prepares: tuple[PrePrepare, ...]
    """PRE-PREPAREs of `view` for the chain O computed from `view_changes` (see viewchange.py)."""
    sender: str
    signature: str

    def payload(self) -> dict[str, Any]:
        return {
            "pre_prepares": [[p.height, p.block_hash, p.signature] for p in self.pre_prepares],
            "view": self.view,
            "view_changes": sorted([v.sender, v.signature] for v in self.view_changes),
        }


Message = PrePrepare | Prepare | Commit | Checkpoint | ViewChange | NewView
MESSAGE_TYPES: tuple[type, ...] = (PrePrepare, Prepare, Commit, Checkpoint, ViewChange, NewView)


def sign_message(key: Keypair, chain_id: str, cls: type, **fields: Any) -> Any:
    """Build a message of class `cls` from `fields`, signed by `key` (sender = key.address)."""
    unsigned = cls(**fields, sender=key.address, signature="")
    data = unsigned.signed_bytes(chain_id)
    msg = cls(**fields, sender=key.address, signature=key.sign_raw(data))
    msg.__dict__["_signed_bytes"] = (chain_id, data)
    return msg


class Verifier:
    """Signature checks with a bounded memo, shared by every replica that trusts this process.

    Ed25519 verification dominates the cost of PBFT; it is deterministic, so the verdict for
    (address, message bytes, signature) can be remembered. Bounded (LRU) so a flood of garbage
    cannot grow it without limit.
    """

    def __init__(self, capacity: int = 65_536) -> None:
        self.capacity = capacity
        self._memo: OrderedDict[tuple[str, bytes, str], bool] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def check(self, address: str, data: bytes, signature: str) -> bool:
        key = (address, data, signature)
        verdict = self._memo.get(key)
        if verdict is not None:
            self.hits += 1
            self._memo.move_to_end(key)
            return verdict
        self.misses += 1
        verdict = verify_raw(address, data, signature)
        self._memo[key] = verdict
        if len(self._memo) > self.capacity:
            self._memo.popitem(last=False)
        return verdict

    def message(self, msg: Any, chain_id: str) -> bool:
        """True when `msg` carries a valid signature of its `sender`."""
        return self.check(msg.sender, msg.signed_bytes(chain_id), msg.signature)


BlockCodec = Callable[[Any], Any]
