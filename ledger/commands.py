"""`layerchain` subcommands that need only the ledger: keygen, verify, reindex, verify-proof."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from ledger.errors import LedgerError
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


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(1)


def verify(
    ledger: Annotated[str, typer.Argument(help="Ledger database: a file path or SQLAlchemy URL.")],
    genesis: Annotated[
        Path | None,
        typer.Option(help="Trusted genesis.json; checked against the one stored in the ledger."),
    ] = None,
    reexecute: Annotated[
        bool, typer.Option(help="Re-execute every settled job from the tensors (needs --tensors).")
    ] = False,
    tensors: Annotated[
        Path | None, typer.Option(help="Tensor store directory, to recompute re-executed jobs.")
    ] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    start: Annotated[
        int, typer.Option("--from", min=1, help="Count heights from here (all are replayed).")
    ] = 1,
    end: Annotated[
        int | None, typer.Option("--to", min=1, help="Stop after this height (default: head).")
    ] = None,
) -> None:
    """Audit a ledger offline: hash links, tx roots, signatures, certificates, full replay.

    Exits 1 and names the first bad height if anything is wrong.
    """
    from ledger.genesis import Genesis
    from ledger.store import Store
    from ledger.tensorstore import TensorStore
    from ledger.verify import verify_ledger

    if reexecute and tensors is None:
        raise _fail("--reexecute needs --tensors DIR (the jobs' input tensors)")
    if "://" not in ledger and not Path(ledger).is_file():
        raise _fail(f"{ledger} does not exist")
    try:
        trusted = Genesis.load(genesis) if genesis is not None else None
        store = Store(ledger, create=False)
        report = verify_ledger(
            store,
            genesis=trusted,
            tensors=TensorStore(tensors) if tensors is not None else None,
            reexecute=reexecute,
            start=start,
            end=end,
        )
        store.close()
    except LedgerError as exc:
        raise _fail(str(exc)) from exc
    if json_output:
        typer.echo(json.dumps(report.to_dict(), indent=2, sort_keys=True))
    else:
        typer.echo(report.summary())
    if not report.ok:
        raise typer.Exit(1)


def reindex(
    ledger: Annotated[str, typer.Argument(help="Ledger database: a file path or SQLAlchemy URL.")],
    tensors: Annotated[
        Path | None, typer.Option(help="Tensor store directory, to recompute re-executed jobs.")
    ] = None,
) -> None:
    """Rebuild the state tables (accounts, jobs, results, miners, runs) from the ledger tables."""
    from ledger.store import Store
    from ledger.tensorstore import TensorStore
    from ledger.verify import reindex as run_reindex

    if "://" not in ledger and not Path(ledger).is_file():
        raise _fail(f"{ledger} does not exist")
    try:
        store = Store.open(ledger)
        report = run_reindex(store, tensors=TensorStore(tensors) if tensors is not None else None)
        store.close()
    except LedgerError as exc:
        raise _fail(str(exc)) from exc
    typer.echo(
        f"reindexed {report.blocks} blocks in {report.seconds:.2f} s; "
        f"state root {report.state_root}"
    )


def verify_proof(
    proof: Annotated[
        str,
        typer.Argument(
            help="A tx proof as JSON (a file, or - for stdin); with --node, the tx hash to ask for."
        ),
    ],
    genesis: Annotated[Path, typer.Option(help="The chain's genesis.json (the only trust root).")],
    node: Annotated[
        str | None,
        typer.Option(help="Fetch the proof of tx PROOF from this node (trusted for nothing)."),
    ] = None,
) -> None:
    """Check a tx inclusion proof with nothing but the genesis: the tx and its signature, the
    Merkle path to the block header, and a quorum of validator signatures on that header.

    Exits 1 saying which link failed.
    """
    import sys

    from ledger.encoding import parse_json
    from ledger.genesis import Genesis
    from ledger.lightclient import verify_tx_proof

    if node is not None:
        text = _fetch_proof(node, proof)
    else:
        try:
            text = sys.stdin.read() if proof == "-" else Path(proof).read_text()
        except OSError as exc:
            raise _fail(f"cannot read {proof}: {exc.strerror}") from exc
    try:
        trusted = Genesis.load(genesis)
        checked = verify_tx_proof(parse_json(text), trusted)
    except LedgerError as exc:
        raise _fail(str(exc)) from exc
    if node is not None and checked.tx.hash != proof:
        raise _fail(f"{node} answered with a proof of tx {checked.tx.hash}, not {proof}")
    signers = len(checked.certificate.signatures)
    typer.echo(
        f"OK: tx {checked.tx.hash} ({checked.tx.type} from {checked.tx.sender[:16]}…, nonce "
        f"{checked.tx.nonce}) is tx {checked.index} of block {checked.height} "
        f"({checked.header.hash[:16]}…), committed by {signers} of "
        f"{len(trusted.validator_addresses)} validators"
    )


def _fetch_proof(node: str, tx_hash: str) -> str:
    """The proof JSON a node answers for `tx_hash` (checked afterwards like any other)."""
    import httpx

    from ledger.encoding import HEX64

    if not HEX64.match(tx_hash):
        raise _fail(f"{tx_hash!r} is not a tx hash (64 lowercase hex characters)")
    url = f"{node.rstrip('/')}/api/v1/txs/{tx_hash}/proof"
    try:
        response = httpx.get(url, timeout=10)
    except httpx.HTTPError as exc:
        raise _fail(f"cannot reach {node}: {exc}") from exc
    if response.status_code != 200:
        raise _fail(f"{url}: HTTP {response.status_code}: {response.text[:300]}")
    return response.text
