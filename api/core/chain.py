"""The node's view of its ledger: the store, the in-memory state, and the ledger's own rules.

Nothing here re-implements a rule: building a block is `ledger.blocks.make_block`, checking one
is `ledger.blocks.validate_block`, executing one is `ledger.execution.apply_block`, storing is
`ledger.store.Store.append`. This module only decides *when* (the parent must be executed first)
and keeps the caches that make the hot path cheap (the signatures this node already verified, the
committed tx hashes).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from sqlalchemy import Engine, event, select, text

from api.core.mempool import order_for_block
from api.p2p.codec import ConsensusBlock
from ledger import schema
from ledger.blocks import Block, BlockHeader, make_block, validate_block, validate_certificate
from ledger.certificate import CommitCertificate
from ledger.errors import InvalidBlock, InvalidTransaction
from ledger.execution import BlockResult, apply_block
from ledger.executor import KernelExecutor
from ledger.genesis import Genesis
from ledger.state import State
from ledger.store import Head, Store
from ledger.tensorstore import TensorStore
from ledger.transactions import Tx, check_signature, job_bodies, result_items

#: How long a proposer holds a tx whose nonce is ahead of its sender's next one (the gap may be
#: gossip still on its way). Well under the view timeout: a tx held longer looks censored.
NONCE_HOLD_S = 2.0
SIG_CACHE = 1 << 18


def referenced_tensors(tx: Tx) -> list[str]:
    """Hashes of the tensors a tx names: job inputs given as tensors, revealed/submitted outputs.

    A validator votes for a block only when it holds all of them (tensor replication), so every
    honest validator can re-execute any job of the block later.
    """
    inputs = [ref for job in job_bodies(tx.type, tx.body) for ref in job["inputs"]]
    outputs = [h for item in result_items(tx) for h in item.get("outputs", ())]
    return [ref["tensor"] for ref in inputs if "tensor" in ref] + outputs


def _relax_sqlite_sync(engine: Engine) -> None:
    """synchronous=NORMAL in WAL mode: every commit atomic and kept if the process dies; after
    an OS crash or power loss the last commits may be gone (never half there)."""

    def relax(dbapi_conn: Any, _record: Any) -> None:
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    event.listen(engine, "connect", relax)
    engine.dispose()  # reconnect every pooled connection with the pragma


class Chain:
    """Store + state + executor of one node, with the block-level operations the node needs."""

    def __init__(self, genesis: Genesis, database_url: str, tensors: TensorStore) -> None:
        self.genesis = genesis
        self.tensors = tensors
        self.store = Store.open(database_url, genesis)
        if self.store.engine.dialect.name == "sqlite":
            # The ledger needs no fsync per block: what this validator signed is in its
            # consensus WAL, fsync'd before every message (setting `fsync`). A power
            # loss can only take the ledger's last blocks, which the node fetches again from its
            # peers by state transfer, each checked against its commit certificate. This takes
            # an fsync (0.5-1 ms on a loaded machine) off every block's critical path.
            _relax_sqlite_sync(self.store.engine)
        self.state: State = self.store.load_state()
        self.executor = KernelExecutor(tensors)
        self.head: Head = self.store.head()
        self.parent: BlockHeader | None = (
            self.store.get_header(self.head.height) if self.head.height else None
        )
        with self.store.engine.connect() as conn:
            hashes = conn.execute(select(schema.txs.c.hash)).scalars().all()
        self.committed: set[str] = set(hashes)
        self._verified: OrderedDict[tuple[str, str], None] = OrderedDict()
        self.last_result: BlockResult | None = None
        self._checked: tuple[Block | None, str] = (None, "")
        """The last block `check` passed and the head it was checked on."""

    # ------------------------------------------------------------------------ reading

    @property
    def height(self) -> int:
        return self.head.height

    @property
    def head_hash(self) -> str:
        return self.head.hash

    def tx_committed(self, tx_hash: str) -> bool:
        return tx_hash in self.committed

    def next_nonce(self, sender: str) -> int:
        return self.state.nonce(sender)

    def database_ok(self) -> bool:
        try:
            with self.store.engine.connect() as conn:
                conn.execute(text("SELECT 1")).scalar()
            return True
        except Exception:  # any failure of the database is "not healthy"
            return False

    def blocks_with_certificates(self, start: int, end: int) -> list[dict[str, Any]]:
        """Committed blocks [start, end] with certificates, as state transfer serves them."""
        out = []
        for stored in self.store.iter_blocks(start, end):
            if stored.certificate is None:
                break
            out.append(
                {"block": stored.block.to_dict(), "certificate": stored.certificate.to_dict()}
            )
        return out

    # ----------------------------------------------------------------- signature cache

    def mark_verified(self, tx: Tx) -> None:
        """Remember that this process checked `tx`'s signature (mempool admission)."""
        self._verified[(tx.hash, tx.signature)] = None
        if len(self._verified) > SIG_CACHE:
            self._verified.popitem(last=False)

    def check_signatures(self, txs: Iterable[Tx]) -> None:
        """Verify every signature not verified before (raises InvalidTransaction)."""
        for tx in txs:
            if (tx.hash, tx.signature) not in self._verified:
                check_signature(tx, self.genesis.chain_id)
                self.mark_verified(tx)

    # ---------------------------------------------------------------- block proposal

    def propose(
        self,
        height: int,
        view: int,
        prev_hash: str,
        txs: Sequence[Tx],
        proposer: str,
        time_ms: int,
        held_since: Callable[[Tx], float],
        tensor_ready: Callable[[str], bool] | None = None,
    ) -> ConsensusBlock | None:
        """The block at `height` from `txs`, or None (WAIT) until the parent is executed.

        A tx goes in only when every tensor it names is ready: held here (`tensor_ready`, by
        default), or whatever the caller's stricter rule says. No `txs` at all asks for an
        empty block (a heartbeat, api/core/heartbeat.py)."""
        if height != self.head.height + 1 or prev_hash != self.head.hash:
            return None
        ready_tensor = tensor_ready or self.tensors.has
        ready = [
            tx
            for tx in txs
            if tx.hash not in self.committed
            and all(ready_tensor(h) for h in referenced_tensors(tx))
        ]
        chosen = order_for_block(
            ready,
            self.genesis.params.max_block_txs,
            self.state.nonce,
            held_since,
            NONCE_HOLD_S,
        )
        if txs and not chosen:
            return None  # everything is held back (nonce gaps, tensors on their way)
        block = make_block(
            chain_id=self.genesis.chain_id,
            height=height,
            prev_hash=prev_hash,
            time_ms=max(time_ms, self.head.time_ms),
            proposer=proposer,
            view=view,
            app_hash=self.head.state_root,
            txs=chosen,
        )
        return ConsensusBlock(block)

    # ------------------------------------------------------------------ block checks

    def missing_tensors(self, block: ConsensusBlock) -> list[str]:
        missing: list[str] = []
        for tx in block.block.txs:
            missing.extend(h for h in referenced_tensors(tx) if not self.tensors.has(h))
        return sorted(set(missing))

    def check(self, block: ConsensusBlock, view: int, proposer: str) -> None:
        """Raise a LedgerError unless `block` may follow the head, proposed by `proposer`."""
        inner = block.block
        if inner.header.view != view:
            raise InvalidBlock(f"block says view {inner.header.view}, proposed in view {view}")
        if inner.header.proposer != proposer:
            raise InvalidBlock("block names a proposer other than the primary of its view")
        validate_block(
            inner, self.genesis, self.parent, app_hash=self.head.state_root, check_signatures=False
        )
        try:
            self.check_signatures(inner.txs)
        except InvalidTransaction as exc:
            raise InvalidBlock(f"block {inner.height}: {exc}") from exc
        seen: set[str] = set()
        for tx in inner.txs:
            if tx.hash in self.committed:
                raise InvalidBlock(f"block {inner.height}: tx {tx.hash[:16]}… is already committed")
            if tx.hash in seen:
                raise InvalidBlock(f"block {inner.height}: tx {tx.hash[:16]}… appears twice")
            seen.add(tx.hash)
        self._checked = (inner, self.head.hash)

    # ---------------------------------------------------------------------- commit

    def commit(
        self, block: Block, certificate: CommitCertificate, *, certificate_checked: bool = False
    ) -> BlockResult:
        """Validate, execute and store a committed block (raises MissingTensor to retry later).

        `certificate_checked`: the consensus core already verified every signature of the
        certificate (it builds certificates only from verified COMMITs, and checks fetched ones),
        so only its height and block hash are compared here — three Ed25519 checks fewer on the
        critical path of every block.
        """
        if not certificate_checked:
            validate_certificate(certificate, self.genesis, block.header)
        elif certificate.height != block.height or certificate.block_hash != block.hash:
            raise InvalidBlock(f"block {block.height}: the certificate is for another block")
        checked, on_head = self._checked
        if checked is not block or on_head != self.head.hash:
            # Not the very object `check` passed on this head (state transfer, a restart):
            # validate it in full.
            validate_block(
                block,
                self.genesis,
                self.parent,
                app_hash=self.head.state_root,
                check_signatures=False,
            )
            try:
                self.check_signatures(block.txs)
            except InvalidTransaction as exc:
                raise InvalidBlock(f"committed block {block.height}: {exc}") from exc
        result = apply_block(self.state, block, self.executor)
        self.store.append(block, result, certificate)
        self.head = Head(block.height, block.hash, result.state_root, block.header.time_ms)
        self.parent = block.header
        self.committed.update(tx.hash for tx in block.txs)
        self.last_result = result
        return result

    def close(self) -> None:
        self.store.close()
