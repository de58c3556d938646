"""Stateless checks of consensus messages: shape, signatures, certificates, VIEW-CHANGE contents.

These functions depend only on the configuration and the message, so every honest replica reaches
the same verdict, and the NEW-VIEW check can recompute exactly what the new primary computed.
"""

from __future__ import annotations

from typing import Any

from ledger.consensus.config import ConsensusConfig
from ledger.consensus.messages import (
    Checkpoint,
    Commit,
    NewView,
    Prepare,
    PreparedCert,
    PrePrepare,
    Verifier,
    ViewChange,
)

_HASH_LEN = 64
_MAX_INT = 2**62


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < _MAX_INT


def _is_hash(value: Any) -> bool:
    return isinstance(value, str) and len(value) == _HASH_LEN


def _is_str(value: Any) -> bool:
    return isinstance(value, str)


def block_matches(block: Any, height: int, block_hash: str) -> bool:
    """True when `block` claims exactly (`height`, `block_hash`) and has a string prev_hash."""
    try:
        return (
            block.height == height
            and block.hash == block_hash
            and isinstance(block.prev_hash, str)
            and all(isinstance(t, str) for t in block.tx_hashes)
        )
    except (AttributeError, TypeError):
        return False


def well_formed(msg: Any) -> bool:
    """Field types of a message (and of everything it embeds) are what the protocol expects."""
    if not isinstance(msg, PrePrepare | Prepare | Commit | Checkpoint | ViewChange | NewView):
        return False
    if not (_is_str(msg.sender) and _is_str(msg.signature)):
        return False
    if isinstance(msg, PrePrepare | Prepare | Commit):
        return _is_int(msg.view) and _is_int(msg.height) and _is_hash(msg.block_hash)
    if isinstance(msg, Checkpoint):
        return _is_int(msg.height) and _is_hash(msg.block_hash)
    if isinstance(msg, ViewChange):
        if not (_is_int(msg.view) and _is_int(msg.stable_height) and _is_hash(msg.stable_hash)):
            return False
        if not (isinstance(msg.checkpoint_proof, tuple) and isinstance(msg.prepared, tuple)):
            return False
        if not all(isinstance(c, Checkpoint) and well_formed(c) for c in msg.checkpoint_proof):
            return False
        for cert in msg.prepared:
            if not isinstance(cert, PreparedCert) or not isinstance(cert.prepares, tuple):
                return False
            if not (isinstance(cert.pre_prepare, PrePrepare) and well_formed(cert.pre_prepare)):
                return False
            if not all(isinstance(p, Prepare) and well_formed(p) for p in cert.prepares):
                return False
        return True
    if isinstance(msg, NewView):
        if not (_is_int(msg.view) and isinstance(msg.view_changes, tuple)):
            return False
        if not isinstance(msg.pre_prepares, tuple):
            return False
        return all(isinstance(v, ViewChange) and well_formed(v) for v in msg.view_changes) and all(
            isinstance(p, PrePrepare) and well_formed(p) for p in msg.pre_prepares
        )
    return False


def check_checkpoint_proof(
    cfg: ConsensusConfig,
    verifier: Verifier,
    height: int,
    block_hash: str,
    proof: tuple[Checkpoint, ...],
) -> bool:
    """`proof` holds a quorum of distinct validators' valid CHECKPOINTs for (height, block_hash)."""
    if height == 0:
        return block_hash == cfg.genesis_hash
    members = set(cfg.validators)
    signers: set[str] = set()
    for cp in proof:
        if cp.height != height or cp.block_hash != block_hash:
            return False
        if cp.sender not in members or cp.sender in signers:
            return False
        if not verifier.message(cp, cfg.chain_id):
            return False
        signers.add(cp.sender)
    return len(signers) >= cfg.quorum


def check_prepared_cert(cfg: ConsensusConfig, verifier: Verifier, cert: PreparedCert) -> bool:
    """The PRE-PREPARE is the view's primary's, with 2f matching PREPAREs from distinct backups."""
    pp = cert.pre_prepare
    primary = cfg.primary(pp.view)
    if pp.sender != primary or not block_matches(pp.block, pp.height, pp.block_hash):
        return False
    if not verifier.message(pp, cfg.chain_id):
        return False
    members = set(cfg.validators)
    signers: set[str] = set()
    for p in cert.prepares:
        if (p.view, p.height, p.block_hash) != (pp.view, pp.height, pp.block_hash):
            return False
        if p.sender not in members or p.sender == primary or p.sender in signers:
            return False
        if not verifier.message(p, cfg.chain_id):
            return False
        signers.add(p.sender)
    return len(signers) >= cfg.quorum - 1


def check_view_change(cfg: ConsensusConfig, verifier: Verifier, vc: ViewChange) -> str | None:
    """None when `vc` is valid (its own signature is checked by the caller), else the reason."""
    if vc.stable_height % cfg.checkpoint_interval:
        return "stable checkpoint height is not a multiple of the checkpoint interval"
    if vc.stable_height == 0 and vc.checkpoint_proof:
        return "the genesis needs no checkpoint proof"
    if not check_checkpoint_proof(
        cfg, verifier, vc.stable_height, vc.stable_hash, vc.checkpoint_proof
    ):
        return "invalid stable checkpoint proof"
    last = vc.stable_height
    for cert in vc.prepared:
        if cert.height <= last or cert.height > vc.stable_height + cfg.watermark_window:
            return "prepared certificates out of order or outside the watermarks"
        if cert.view >= vc.view:
            return "prepared certificate from a view not below the new view"
        if not check_prepared_cert(cfg, verifier, cert):
            return f"invalid prepared certificate at height {cert.height}"
        last = cert.height
    return None


def select_chain(
    cfg: ConsensusConfig, vcs: tuple[ViewChange, ...]
) -> tuple[ViewChange, list[PreparedCert]]:
    """The new view's starting point: the VC with the latest stable checkpoint, and the chain O.

    O re-proposes, for each height above that checkpoint, the prepared certificate of the highest
    view, as long as each links (prev_hash) to the one below. It stops at the first height with no
    certificate or a broken link: nothing above such a gap can have committed anywhere, because an
    honest replica only sends COMMIT for height h once it has sent COMMIT for h - 1 in the same
    view (or h - 1 is final), so a committed block and all its uncommitted ancestors are prepared
    at f + 1 honest replicas and show up in every quorum of VIEW-CHANGEs. The gap is filled by
    the new primary's next fresh proposal, which is what the paper's null requests are for.
    """
    anchor = max(vcs, key=lambda v: (v.stable_height, v.sender))
    base = anchor.stable_height
    by_height: dict[int, list[PreparedCert]] = {}
    for vc in vcs:
        for cert in vc.prepared:
            if base < cert.height <= base + cfg.watermark_window:
                by_height.setdefault(cert.height, []).append(cert)
    chain: list[PreparedCert] = []
    prev = anchor.stable_hash
    height = base + 1
    while height in by_height:
        top_view = max(c.view for c in by_height[height])
        best = min((c for c in by_height[height] if c.view == top_view), key=lambda c: c.block_hash)
        if best.pre_prepare.block.prev_hash != prev:
            break
        chain.append(best)
        prev = best.block_hash
        height += 1
    return anchor, chain


def check_new_view(cfg: ConsensusConfig, verifier: Verifier, nv: NewView) -> str | None:
    """None when `nv` is a valid NEW-VIEW (its own signature is checked by the caller)."""
    if nv.sender != cfg.primary(nv.view):
        return "NEW-VIEW not from the primary of its view"
    members = set(cfg.validators)
    senders: set[str] = set()
    for vc in nv.view_changes:
        if vc.view != nv.view:
            return "NEW-VIEW embeds a VIEW-CHANGE for another view"
        if vc.sender not in members or vc.sender in senders:
            return "NEW-VIEW embeds VIEW-CHANGEs from unknown or repeated senders"
        if not verifier.message(vc, cfg.chain_id):
            return "NEW-VIEW embeds a badly signed VIEW-CHANGE"
        reason = check_view_change(cfg, verifier, vc)
        if reason is not None:
            return f"NEW-VIEW embeds an invalid VIEW-CHANGE: {reason}"
        senders.add(vc.sender)
    if len(senders) < cfg.quorum:
        return "NEW-VIEW needs a quorum of VIEW-CHANGEs"
    _anchor, chain = select_chain(cfg, nv.view_changes)
    if len(chain) != len(nv.pre_prepares):
        return "NEW-VIEW re-proposes a different set of heights than its VIEW-CHANGEs prove"
    for cert, pp in zip(chain, nv.pre_prepares, strict=True):
        if (pp.view, pp.height, pp.block_hash) != (nv.view, cert.height, cert.block_hash):
            return f"NEW-VIEW re-proposes the wrong block at height {cert.height}"
        if pp.sender != nv.sender or not verifier.message(pp, cfg.chain_id):
            return "NEW-VIEW carries a badly signed PRE-PREPARE"
        if not block_matches(pp.block, pp.height, pp.block_hash):
            return "NEW-VIEW carries a block that does not match its hash"
    return None
