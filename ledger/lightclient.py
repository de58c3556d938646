"""Transaction inclusion proofs: show that a tx was committed, to someone who holds only the
genesis.

    proof = build_tx_proof(store, tx_hash)            # a node (GET /api/v1/txs/{hash}/proof)
    verified = verify_tx_proof(proof.to_dict(), genesis)   # anyone, offline

A proof is the signed tx, the header of the block holding it, the Merkle path from the tx hash
to the header's `tx_root` (PROTOCOL.md §6.2) and the block's commit certificate (§6.5). The
verifier recomputes the tx hash and checks its signature, folds the path up to `tx_root` (the
path's sides must also place the tx at the claimed index of a block of `n_txs`), recomputes the
header hash and checks that a quorum of the genesis validators signed the commit of exactly that
block. It needs no ledger, no node and no other block: the certificate alone makes the header
final (PBFT never certifies two blocks at one height).

What it does not prove: the tx's receipt (whether it succeeded). Receipts are committed through
the state root (`receipts_root` inside the block's diff, hashed into the next header's
`app_hash`), which a light client cannot check without that diff; `layerchain verify` on a ledger
file checks everything.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ledger.blocks import BlockHeader, validate_certificate
from ledger.certificate import CommitCertificate
from ledger.encoding import HEX64
from ledger.errors import InvalidBlock, InvalidTransaction, LedgerError
from ledger.genesis import Genesis
from ledger.merkle import merkle_proof, verify_proof
from ledger.store import Store
from ledger.transactions import Tx, check_tx

_PROOF_KEYS = {"tx", "height", "index", "header", "merkle_path", "certificate"}


class ProofError(LedgerError):
    """A tx inclusion proof is malformed or does not prove what it claims."""


@dataclass(frozen=True)
class TxProof:
    """A committed tx with what links it to a certified block header."""

    tx: Tx
    height: int
    index: int
    """The tx's position in its block."""
    header: BlockHeader
    path: tuple[tuple[str, str], ...]
    """Sibling hashes from the tx's leaf to `header.tx_root`: (side "L" or "R", hash)."""
    certificate: CommitCertificate

    def to_dict(self) -> dict[str, Any]:
        return {
            "tx": self.tx.to_dict(),
            "height": self.height,
            "index": self.index,
            "header": self.header.to_dict(),
            "merkle_path": [{"side": side, "hash": h} for side, h in self.path],
            "certificate": self.certificate.to_dict(),
        }

    @classmethod
    def from_dict(cls, raw: Any) -> TxProof:
        """Parse a proof's JSON form (every part's own form checked); ProofError if malformed."""
        if not isinstance(raw, dict) or set(raw) != _PROOF_KEYS:
            raise ProofError(f"a tx proof is an object with exactly the keys {sorted(_PROOF_KEYS)}")
        height, index = raw["height"], raw["index"]
        for name, value in (("height", height), ("index", index)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ProofError(f"proof {name} must be a non-negative integer")
        steps = raw["merkle_path"]
        if not isinstance(steps, list) or not all(
            isinstance(s, dict)
            and set(s) == {"side", "hash"}
            and s["side"] in ("L", "R")
            and isinstance(s["hash"], str)
            and HEX64.match(s["hash"]) is not None
            for s in steps
        ):
            raise ProofError('merkle_path must be a list of {"side": "L"|"R", "hash": hex}')
        try:
            return cls(
                tx=Tx.from_dict(raw["tx"]),
                height=height,
                index=index,
                header=BlockHeader.from_dict(raw["header"]),
                path=tuple((s["side"], s["hash"]) for s in steps),
                certificate=CommitCertificate.from_dict(raw["certificate"]),
            )
        except LedgerError as exc:
            raise ProofError(f"malformed proof: {exc}") from exc


def build_tx_proof(store: Store, tx_hash: str) -> TxProof | None:
    """The inclusion proof of a committed tx, or None if this ledger has no such tx."""
    record = store.get_tx(tx_hash)
    if record is None:
        return None
    header = store.get_header(record.height)
    certificate = store.get_certificate(record.height)
    if header is None or certificate is None:
        return None
    path = merkle_proof(store.tx_hashes(record.height), record.index)
    return TxProof(record.tx, record.height, record.index, header, tuple(path), certificate)


def expected_sides(index: int, n_txs: int) -> list[str]:
    """The sides a Merkle path must have for leaf `index` of `n_txs` (§6.2: an odd last node is
    carried up and adds no step)."""
    sides: list[str] = []
    size = n_txs
    while size > 1:
        sibling = index ^ 1
        if sibling < size:
            sides.append("L" if sibling < index else "R")
        index //= 2
        size = (size + 1) // 2
    return sides


def verify_tx_proof(raw: Any, genesis: Genesis) -> TxProof:
    """Check a proof (its JSON form) against `genesis` alone; the proof, or ProofError saying
    which link failed."""
    proof = raw if isinstance(raw, TxProof) else TxProof.from_dict(raw)
    header, tx = proof.header, proof.tx
    if header.chain_id != genesis.chain_id:
        raise ProofError(f"the header is of chain {header.chain_id!r}, not {genesis.chain_id!r}")
    if header.height != proof.height:
        raise ProofError(f"the header is at height {header.height}, not {proof.height}")
    try:
        check_tx(tx, genesis.chain_id, genesis.params)
    except InvalidTransaction as exc:
        raise ProofError(f"the tx does not hold: {exc}") from exc
    if not proof.index < header.n_txs:
        raise ProofError(f"index {proof.index} is outside a block of {header.n_txs} txs")
    if [side for side, _ in proof.path] != expected_sides(proof.index, header.n_txs):
        raise ProofError(f"the Merkle path does not lead from index {proof.index}")
    if not verify_proof(tx.hash, list(proof.path), header.tx_root):
        raise ProofError("the Merkle path does not lead from the tx hash to the header's tx_root")
    try:
        validate_certificate(proof.certificate, genesis, header)
    except InvalidBlock as exc:
        raise ProofError(f"the block is not certified: {exc}") from exc
    return proof
