"""Ed25519 identities: addresses, key files, domain-separated signatures."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from ledger.errors import IdentityError
from ledger.identity import Keypair, check_address, verify, verify_raw


def test_address_is_the_raw_public_key_hex() -> None:
    key = Keypair.from_seed(bytes(32))
    assert check_address(key.address) == key.address
    assert len(key.address) == 64
    assert key.address == Keypair.from_seed(bytes(32)).address
    assert Keypair.from_seed(b"\x01" * 32).address != key.address


def test_sign_and_verify_with_domain_separation() -> None:
    key = Keypair.generate()
    sig = key.sign("tx", "chain", {"n": 1})
    assert len(sig) == 128
    assert verify(key.address, "tx", "chain", {"n": 1}, sig)
    assert not verify(key.address, "commit", "chain", {"n": 1}, sig)
    assert not verify(key.address, "tx", "other", {"n": 1}, sig)
    assert not verify(key.address, "tx", "chain", {"n": 2}, sig)
    assert not verify(Keypair.generate().address, "tx", "chain", {"n": 1}, sig)


@pytest.mark.parametrize(
    ("address", "signature"),
    [("zz", "00" * 64), ("AB" * 32, "00" * 64), ("ab" * 32, "00"), ("ab" * 32, None)],
)
def test_verify_raw_rejects_malformed_input_without_raising(address: str, signature: str) -> None:
    assert not verify_raw(address, b"msg", signature)


def test_key_file_round_trip_and_mode(tmp_path: Path) -> None:
    key = Keypair.generate()
    path = tmp_path / "keys" / "node.pem"
    key.save(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert Keypair.load(path).address == key.address
    with pytest.raises(FileExistsError):
        key.save(path)


def test_bad_key_material(tmp_path: Path) -> None:
    with pytest.raises(IdentityError, match="32 bytes"):
        Keypair.from_seed(b"short")
    with pytest.raises(IdentityError, match="cannot read key file"):
        Keypair.load(tmp_path / "missing.pem")
    (tmp_path / "junk.pem").write_bytes(b"not a key")
    with pytest.raises(IdentityError, match="PKCS#8"):
        Keypair.load(tmp_path / "junk.pem")
    with pytest.raises(IdentityError, match="64 lowercase hex"):
        check_address("ab")


def test_keygen_command(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from layerchain.cli import app

    out = tmp_path / "k.pem"
    result = CliRunner().invoke(app, ["keygen", str(out)])
    assert result.exit_code == 0
    assert result.output.strip() == Keypair.load(out).address
    again = CliRunner().invoke(app, ["keygen", str(out)])
    assert again.exit_code == 1 and "refusing to overwrite" in again.output
