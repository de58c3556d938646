"""A block's commit certificate with every signature checked on its own, and the verdict.

`GET /blocks/{ref}/certificate` answers whether the certificate as a whole is valid. An auditor
also wants to see *which* signature is bad: here each one is checked with the ledger's own
primitives (genesis membership, `ledger.identity.verify` over the commit-vote payload), and the
overall verdict comes from `ledger.blocks.validate_certificate`, the rule the node and
`layerchain verify` apply.
"""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Path
from pydantic import BaseModel

from api.core.errors import ERROR_RESPONSES
from api.deps import NodeDep
from api.routes.blocks import _resolve
from ledger.blocks import validate_certificate
from ledger.certificate import COMMIT_KIND, commit_vote_payload
from ledger.errors import InvalidBlock, LedgerError
from ledger.identity import verify

router = APIRouter(prefix="/certificates", tags=["blocks"])

BLOCK_REF = r"^([0-9]{1,18}|[0-9a-f]{64})$"
"""A height (ASCII digits only) or a block hash."""


class SignatureCheck(BaseModel):
    validator: str
    name: str
    """The validator's name in the genesis ("" for a signer outside the set)."""
    signature: str
    member: bool
    """The signer is a genesis validator."""
    valid: bool
    """The signature verifies over (height, view, block hash) and the signer is a member."""
    problem: str | None = None


class CertificateCheck(BaseModel):
    height: int
    view: int
    block_hash: str
    header_hash: str
    """Hash of the stored header (the certificate must be for exactly this)."""
    quorum: int
    valid_signatures: int
    valid: bool
    """`ledger.blocks.validate_certificate` accepts the certificate for this header."""
    problem: str | None
    signatures: list[SignatureCheck]
    absent: list[str]
    """Genesis validators whose signature is not in the certificate."""


def _verifies(address: str, chain_id: str, payload: dict[str, object], signature: str) -> bool:
    try:
        return verify(address, COMMIT_KIND, chain_id, payload, signature)
    except LedgerError:  # a malformed signature or address string is simply not valid
        return False


@router.get("/{ref}", response_model=CertificateCheck, responses=ERROR_RESPONSES)
async def certificate_check(
    node: NodeDep,
    ref: str = Path(pattern=BLOCK_REF, description="Height or block hash (64 lowercase hex)."),
) -> CertificateCheck:
    """The commit certificate of a block with each validator's signature checked now."""
    height = _resolve(node, ref)
    store = node.chain.store
    cert = store.get_certificate(height)
    header = store.get_header(height)
    if cert is None or header is None:
        raise HTTPException(404, f"no certificate stored for height {height}")
    genesis = node.genesis
    names = {v.address: v.name for v in genesis.validators}
    payload = commit_vote_payload(cert.height, cert.view, cert.block_hash)
    checks = []
    for address, signature in cert.signatures:
        member = address in names
        good = member and _verifies(address, genesis.chain_id, payload, signature)
        problem = None
        if not member:
            problem = "not a genesis validator"
        elif not good:
            problem = "signature does not verify"
        checks.append(
            SignatureCheck(
                validator=address,
                name=names.get(address, ""),
                signature=signature,
                member=member,
                valid=good,
                problem=problem,
            )
        )
    verdict = None
    try:
        validate_certificate(cert, genesis, header)
    except InvalidBlock as exc:
        verdict = str(exc)
    signers = {c.validator for c in checks}
    return CertificateCheck(
        height=cert.height,
        view=cert.view,
        block_hash=cert.block_hash,
        header_hash=header.hash,
        quorum=genesis.quorum,
        valid_signatures=sum(1 for c in checks if c.valid),
        valid=verdict is None,
        problem=verdict,
        signatures=checks,
        absent=[v.address for v in genesis.validators if v.address not in signers],
    )
