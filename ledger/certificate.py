"""Commit certificates: proof that a block is final, checkable with the genesis validator set alone.

A certificate for block (height, view, block_hash) is a set of signatures by at least a quorum
(2f + 1 for n = 3f + 1) of distinct genesis validators, each over the domain-separated message

    signing_bytes("commit", chain_id, {"block_hash": ..., "height": ..., "view": ...})

These are exactly the signatures on the PBFT COMMIT messages, so the consensus core assembles the
certificate from the commits it collected; nothing is signed twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ledger.errors import InvalidBlock
from ledger.identity import Keypair, verify

COMMIT_KIND = "commit"


def commit_vote_payload(height: int, view: int, block_hash: str) -> dict[str, Any]:
    """The payload a validator signs to vote COMMIT for a block."""
    return {"block_hash": block_hash, "height": height, "view": view}


def sign_commit_vote(key: Keypair, chain_id: str, height: int, view: int, block_hash: str) -> str:
    return key.sign(COMMIT_KIND, chain_id, commit_vote_payload(height, view, block_hash))


def quorum_size(n: int) -> int:
    """Smallest vote count such that any two quorums of n validators share f + 1 members."""
    f = (n - 1) // 3
    return -(-(n + f + 1) // 2)


@dataclass(frozen=True)
class CommitCertificate:
    """At least a quorum of validator signatures over (height, view, block_hash)."""

    height: int
    view: int
    block_hash: str
    signatures: tuple[tuple[str, str], ...]
    """(validator address, signature hex) pairs, sorted by address."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "height": self.height,
            "view": self.view,
            "block_hash": self.block_hash,
            "signatures": [{"validator": a, "signature": s} for a, s in self.signatures],
        }

    @classmethod
    def from_dict(cls, raw: Any) -> CommitCertificate:
        try:
            pairs = ((str(s["validator"]), str(s["signature"])) for s in raw["signatures"])
            sigs = tuple(sorted(pairs))
            height, view, block_hash = raw["height"], raw["view"], raw["block_hash"]
        except (KeyError, TypeError) as exc:
            raise InvalidBlock(f"malformed commit certificate: {exc}") from exc
        if not all(isinstance(x, int) and not isinstance(x, bool) for x in (height, view)):
            raise InvalidBlock("certificate height and view must be integers")
        if not isinstance(block_hash, str):
            raise InvalidBlock("certificate block_hash must be a hex string")
        return cls(height, view, block_hash, sigs)

    @classmethod
    def build(
        cls, height: int, view: int, block_hash: str, signatures: dict[str, str]
    ) -> CommitCertificate:
        return cls(height, view, block_hash, tuple(sorted(signatures.items())))


def verify_certificate(
    cert: CommitCertificate,
    chain_id: str,
    validators: tuple[str, ...] | list[str],
    *,
    height: int | None = None,
    block_hash: str | None = None,
) -> None:
    """Raise InvalidBlock unless `cert` carries a quorum of valid, distinct validator signatures.

    With `height` / `block_hash` given, the certificate must also be for exactly that block.
    """
    if height is not None and cert.height != height:
        raise InvalidBlock(f"certificate is for height {cert.height}, not {height}")
    if block_hash is not None and cert.block_hash != block_hash:
        raise InvalidBlock("certificate is for a different block hash")
    members = set(validators)
    seen: set[str] = set()
    payload = commit_vote_payload(cert.height, cert.view, cert.block_hash)
    for address, signature in cert.signatures:
        if address not in members:
            raise InvalidBlock(f"certificate signer {address[:16]}… is not a genesis validator")
        if address in seen:
            raise InvalidBlock(f"certificate lists validator {address[:16]}… twice")
        if not verify(address, COMMIT_KIND, chain_id, payload, signature):
            raise InvalidBlock(f"certificate signature of validator {address[:16]}… is invalid")
        seen.add(address)
    need = quorum_size(len(members))
    if len(seen) < need:
        raise InvalidBlock(f"certificate has {len(seen)} signatures; a quorum is {need}")
