"""`layerchain testnet`: keys, genesis and home folders a node can start from."""

from __future__ import annotations

import stat
from pathlib import Path

from typer.testing import CliRunner

from api.core.config import load_settings
from layerchain.cli import app
from ledger.genesis import Genesis
from ledger.identity import Keypair


def test_testnet_writes_genesis_keys_and_homes(tmp_path: Path) -> None:
    out = tmp_path / "net"
    result = CliRunner().invoke(
        app,
        [
            "testnet",
            "--validators",
            "4",
            "--miners",
            "2",
            "--out",
            str(out),
            "--base-port",
            "31000",
            "--chain-id",
            "test-chain",
        ],
    )
    assert result.exit_code == 0, result.output
    genesis = Genesis.load(out / "genesis.json")
    assert genesis.chain_id == "test-chain"
    assert genesis.n == 4 and genesis.f == 1
    assert [v.url for v in genesis.validators] == [
        f"http://127.0.0.1:{31000 + i}" for i in range(4)
    ]
    client = Keypair.load(out / "client.pem")
    miners = [Keypair.load(out / "miners" / f"miner{i}.pem") for i in range(2)]
    assert genesis.balances[client.address] > 0
    assert all(genesis.balances[m.address] > 0 for m in miners)
    for i, validator in enumerate(genesis.validators):
        home = out / f"node{i}"
        key_file = home / "node_key.pem"
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        assert Keypair.load(key_file).address == validator.address
        settings = load_settings(home)
        assert settings.port == 31000 + i
        assert Genesis.load(settings.genesis_file).hash == genesis.hash
        assert settings.database_url.endswith(f"node{i}/data/ledger.db")


def test_testnet_refuses_to_overwrite(tmp_path: Path) -> None:
    runner = CliRunner()
    assert runner.invoke(app, ["testnet", "--out", str(tmp_path)]).exit_code == 0
    again = runner.invoke(app, ["testnet", "--out", str(tmp_path)])
    assert again.exit_code != 0
    text = " ".join(again.output.replace("│", " ").split())  # rich wraps the message in a box
    assert "already holds a testnet" in text


def test_settings_environment_overrides_config_file(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "config.toml").write_text('port = 9100\nname = "from-file"\n')
    monkeypatch.setenv("LAYERCHAIN_NAME", "from-env")
    settings = load_settings(tmp_path)
    assert settings.port == 9100
    assert settings.name == "from-env"
    assert settings.key_file == tmp_path.resolve() / "node_key.pem"
