"""`layerchain`: one console script; each package contributes its subcommands from `commands.py`.

Register a new subcommand with one line below. The CLI turns `LedgerError`s into a one-line
message and exit status 1, never a traceback.
"""

from __future__ import annotations

import typer

from api import commands as api_commands
from driver import commands as driver_commands
from driver import network_commands
from ledger import commands as ledger_commands
from miner import commands as miner_commands

app = typer.Typer(
    name="layerchain",
    help="Proof-of-compute ledger for distributed neural-network training.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

app.command("keygen")(ledger_commands.keygen)
app.command("verify")(ledger_commands.verify)
app.command("reindex")(ledger_commands.reindex)
app.command("verify-proof")(ledger_commands.verify_proof)
app.command("train")(driver_commands.train)
app.command("testnet")(api_commands.testnet)
app.command("node")(api_commands.node)
app.command("miner")(miner_commands.miner)
app.command("replay")(network_commands.replay)
app.command("devnet")(network_commands.devnet)


@app.callback()
def main() -> None:
    """Proof-of-compute ledger for distributed neural-network training."""
