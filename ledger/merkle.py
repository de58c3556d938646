"""Merkle root of a block's transaction hashes, with inclusion proofs for light clients.

Tree rule (PROTOCOL.md §6.2): leaves and inner nodes are hashed with different one-byte prefixes,
so a leaf can never be passed off as an inner node; an odd node at the end of a level is carried up
unchanged (never duplicated, which would let two different lists share a root, as in Bitcoin's
CVE-2012-2459); the root of an empty list is SHA-256 of the empty string.
"""

from __future__ import annotations

import hashlib

from ledger.errors import InvalidBlock

LEAF_PREFIX = b"\x00"
NODE_PREFIX = b"\x01"
#: Root of zero transactions: SHA-256 of no bytes.
EMPTY_ROOT = hashlib.sha256(b"").hexdigest()


def _leaf(tx_hash: str) -> bytes:
    try:
        raw = bytes.fromhex(tx_hash)
    except ValueError as exc:
        raise InvalidBlock(f"transaction hash {tx_hash!r} is not hex") from exc
    if len(raw) != 32:
        raise InvalidBlock(f"transaction hash {tx_hash!r} is not 32 bytes")
    return hashlib.sha256(LEAF_PREFIX + raw).digest()


def _node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(NODE_PREFIX + left + right).digest()


def _next_level(level: list[bytes]) -> list[bytes]:
    out = [_node(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
    if len(level) % 2:
        out.append(level[-1])
    return out


def merkle_root(tx_hashes: list[str] | tuple[str, ...]) -> str:
    """Merkle root (hex) of a list of 32-byte hashes given as hex, in block order."""
    if not tx_hashes:
        return EMPTY_ROOT
    level = [_leaf(h) for h in tx_hashes]
    while len(level) > 1:
        level = _next_level(level)
    return level[0].hex()


def merkle_proof(tx_hashes: list[str] | tuple[str, ...], index: int) -> list[tuple[str, str]]:
    """Sibling path from leaf `index` to the root: [(side, sibling_hex)], side "L" or "R".

    A level where the node is the carried-up odd one contributes no step.
    """
    if not 0 <= index < len(tx_hashes):
        raise InvalidBlock(f"proof index {index} outside 0..{len(tx_hashes) - 1}")
    level = [_leaf(h) for h in tx_hashes]
    path: list[tuple[str, str]] = []
    while len(level) > 1:
        sibling = index ^ 1
        if sibling < len(level):
            path.append(("L" if sibling < index else "R", level[sibling].hex()))
        level = _next_level(level)
        index //= 2
    return path


def verify_proof(tx_hash: str, path: list[tuple[str, str]], root: str) -> bool:
    """True when `path` (from `merkle_proof`) links `tx_hash` to `root`."""
    node = _leaf(tx_hash)
    for side, sibling_hex in path:
        sibling = bytes.fromhex(sibling_hex)
        node = _node(sibling, node) if side == "L" else _node(node, sibling)
    return node.hex() == root
