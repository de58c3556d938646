"""Commit certificates: quorum, membership, distinctness, binding to height and hash."""

from __future__ import annotations

import pytest

from ledger.certificate import (
    CommitCertificate,
    commit_vote_payload,
    quorum_size,
    sign_commit_vote,
    verify_certificate,
)
from ledger.encoding import signing_bytes
from ledger.errors import InvalidBlock
from ledger.harness import actor_key
from ledger.identity import verify_raw

CHAIN = "cert-chain"
KEYS = [actor_key(f"validator-{i}") for i in range(4)]
VALIDATORS = [k.address for k in KEYS]
HASH = "ab" * 32


def _cert(keys: list, height: int = 5, view: int = 1, block_hash: str = HASH) -> CommitCertificate:
    sigs = {k.address: sign_commit_vote(k, CHAIN, height, view, block_hash) for k in keys}
    return CommitCertificate.build(height, view, block_hash, sigs)


def test_a_quorum_verifies_and_signs_exactly_the_commit_message() -> None:
    cert = _cert(KEYS[:3])
    verify_certificate(cert, CHAIN, VALIDATORS, height=5, block_hash=HASH)
    message = signing_bytes("commit", CHAIN, commit_vote_payload(5, 1, HASH))
    assert all(verify_raw(a, message, s) for a, s in cert.signatures)
    assert CommitCertificate.from_dict(cert.to_dict()) == cert


@pytest.mark.parametrize(
    ("cert", "kwargs", "message"),
    [
        (_cert(KEYS[:2]), {}, "2 signatures; a quorum is 3"),
        (_cert([*KEYS[:2], actor_key("mallory")]), {}, "not a genesis validator"),
        (_cert(KEYS[:3]), {"height": 6}, "for height 5, not 6"),
        (_cert(KEYS[:3]), {"block_hash": "cd" * 32}, "different block hash"),
        (_cert(KEYS[:3], block_hash="cd" * 32), {}, None),
    ],
)
def test_refusals(cert: CommitCertificate, kwargs: dict, message: str | None) -> None:
    if message is None:
        verify_certificate(cert, CHAIN, VALIDATORS, **kwargs)
        return
    with pytest.raises(InvalidBlock, match=message):
        verify_certificate(cert, CHAIN, VALIDATORS, **kwargs)


def test_a_duplicated_signer_counts_once() -> None:
    cert = _cert(KEYS[:2])
    doubled = CommitCertificate(5, 1, HASH, (*cert.signatures, cert.signatures[0]))
    with pytest.raises(InvalidBlock, match="twice"):
        verify_certificate(doubled, CHAIN, VALIDATORS)


def test_a_signature_for_another_view_or_chain_is_invalid() -> None:
    cert = _cert(KEYS[:3])
    moved = CommitCertificate(5, 2, HASH, cert.signatures)
    with pytest.raises(InvalidBlock, match="is invalid"):
        verify_certificate(moved, CHAIN, VALIDATORS)
    with pytest.raises(InvalidBlock, match="is invalid"):
        verify_certificate(cert, "other-chain", VALIDATORS)


def test_malformed_certificates() -> None:
    for raw in ({}, {"height": 1, "view": 0, "block_hash": HASH, "signatures": [{"x": 1}]}):
        with pytest.raises(InvalidBlock, match="malformed"):
            CommitCertificate.from_dict(raw)
    with pytest.raises(InvalidBlock, match="integers"):
        CommitCertificate.from_dict(
            {"height": "1", "view": 0, "block_hash": HASH, "signatures": []}
        )


@pytest.mark.parametrize(("n", "q"), [(1, 1), (2, 2), (3, 2), (4, 3), (5, 4), (6, 4), (7, 5)])
def test_quorum_size(n: int, q: int) -> None:
    assert quorum_size(n) == q
