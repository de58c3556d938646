"""`layerchain` subcommands that need only the ledger: keys, and (later) verify and reindex."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ledger.identity import Keypair


def keygen(
    out: Annotated[Path, typer.Argument(help="Where to write the PEM (PKCS#8) private key.")],
) -> None:
    """Create an Ed25519 key pair; print its address (the public key in hex)."""
    if out.exists():
        typer.echo(f"error: {out} already exists; refusing to overwrite a key", err=True)
        raise typer.Exit(1)
    key = Keypair.generate()
    key.save(out)
    typer.echo(key.address)
