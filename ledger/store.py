"""The ledger database: committed blocks with txs, receipts, certificates and state projections.

    store = Store.open("node/ledger.db", genesis)      # or any SQLAlchemy URL
    store.append(block, result, certificate)           # one DB transaction per block
    state = store.load_state()                         # the in-memory State, on restart

SQLite (the default) runs in WAL mode with synchronous=FULL and foreign keys on; a block, its
txs, receipts, certificate, state diff and the projection updates are written in one transaction,
so a crash at any moment leaves the database at the previous height or the new one, never between.
The hot path uses SQLAlchemy Core `executemany`, never the ORM.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from sqlalchemy import Engine, Select, and_, create_engine, delete, event, func, or_, select
from sqlalchemy.engine import Connection
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import StaticPool

from ledger import schema
from ledger.blocks import Block, BlockHeader
from ledger.certificate import CommitCertificate
from ledger.encoding import canonical_json, parse_json
from ledger.errors import (
    EncodingError,
    GenesisError,
    InvalidBlock,
    InvalidTransaction,
    StoreError,
)
from ledger.execution import BlockResult
from ledger.genesis import Genesis
from ledger.receipts import Receipt
from ledger.state import Account, Job, MinerStats, Run, State, initial_root
from ledger.transactions import Tx
from ledger.trusted_json import trusted_canonical_json

DEFAULT_PAGE = 50
MAX_PAGE = 1000


def database_url(path_or_url: str) -> str:
    """A SQLAlchemy URL: given as is, or a file path made into a SQLite URL."""
    return path_or_url if "://" in path_or_url else f"sqlite:///{path_or_url}"


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def make_engine(url: str) -> Engine:
    """An engine with the pragmas the ledger relies on (SQLite) or plain settings otherwise."""
    url = database_url(url)
    if url.startswith("sqlite"):
        memory = url in ("sqlite://", "sqlite:///:memory:") or "mode=memory" in url
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False},
            poolclass=StaticPool if memory else None,
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_pre_ping=True)


class Head(NamedTuple):
    """The last committed block (height 0 = genesis, before any block)."""

    height: int
    hash: str
    """Block hash (the genesis hash at height 0): the next block's prev_hash."""
    state_root: str
    """State root after `height`: the next block's app_hash."""
    time_ms: int


@dataclass(frozen=True)
class BlockRecord:
    """A stored block header with what the store knows beside it."""

    header: BlockHeader
    hash: str
    """As stored (verify recomputes it from the header)."""
    state_root: str


@dataclass(frozen=True)
class TxRecord:
    """A stored transaction with its place in the chain and its receipt."""

    tx: Tx
    height: int
    index: int
    receipt: Receipt


@dataclass(frozen=True)
class StoredBlock:
    """Everything stored for one height (what verify, reindex and state transfer read)."""

    block: Block
    stored_hash: str
    state_root: str
    receipts: tuple[Receipt, ...]
    certificate: CommitCertificate | None
    diff_json: str | None
    problem: str | None = None
    """Set when a stored row could not even be parsed (verify reports it at this height)."""


def _header_from_row(row: Any) -> BlockHeader:
    return BlockHeader(
        chain_id=row.chain_id,
        height=row.height,
        prev_hash=row.prev_hash,
        time_ms=row.time_ms,
        proposer=row.proposer,
        view=row.view,
        tx_root=row.tx_root,
        app_hash=row.app_hash,
        n_txs=row.n_txs,
    )


def _tx_from_row(row: Any) -> Tx:
    try:
        body = parse_json(row.body)
    except EncodingError as exc:
        raise InvalidTransaction(f"stored body of tx {row.height}/{row.idx}: {exc}") from exc
    return Tx.from_dict(
        {
            "type": row.type,
            "sender": row.sender,
            "nonce": row.nonce,
            "body": body,
            "signature": row.signature,
        }
    )


def _receipt_from_row(row: Any) -> Receipt:
    return Receipt(row.tx_hash, bool(row.ok), row.code, row.message)


def _cert_from_row(row: Any) -> CommitCertificate:
    try:
        signatures = parse_json(row.signatures)
    except EncodingError as exc:
        raise InvalidBlock(f"stored certificate {row.height}: {exc}") from exc
    return CommitCertificate.from_dict(
        {
            "height": row.height,
            "view": row.view,
            "block_hash": row.block_hash,
            "signatures": signatures,
        }
    )


def _job_from_row(row: Any) -> Job:
    return Job.from_dict(json.loads(row.record))


class Store:
    """A node's ledger database. Thread-safe for one writer and many readers."""

    def __init__(self, url: str, *, create: bool = True) -> None:
        """Open the database at `url` (path or SQLAlchemy URL), creating the schema if needed.

        With `create=False` nothing is written (an auditor opening someone else's ledger).
        """
        self.url = database_url(url)
        try:
            self.engine = make_engine(self.url)
            if create:
                with self.engine.begin() as conn:
                    schema.metadata.create_all(conn)
                    schema.install_append_only_triggers(conn)
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot open ledger database {self.url}: {exc}") from exc
        self._genesis: Genesis | None = None

    @classmethod
    def open(cls, url: str, genesis: Genesis | None = None) -> Store:
        """Open a ledger; with `genesis`, initialise a new one or check an existing one matches."""
        store = cls(url)
        if genesis is not None:
            store.init_genesis(genesis)
        else:
            store.genesis  # noqa: B018 - fail now, clearly, if the database has no genesis
        return store

    def close(self) -> None:
        self.engine.dispose()

    # ----------------------------------------------------------------------- genesis

    def init_genesis(self, genesis: Genesis) -> None:
        """Record the genesis (and its balances) in a new database, or check it is the same."""
        with self.engine.begin() as conn:
            row = conn.execute(
                select(schema.meta.c.value).where(schema.meta.c.key == "genesis")
            ).first()
            if row is not None:
                stored = Genesis.from_dict(parse_json(row.value))
                if stored.hash != genesis.hash:
                    raise StoreError(
                        f"the database holds genesis {stored.hash[:16]}…, not {genesis.hash[:16]}…"
                    )
                self._genesis = stored
                return
            conn.execute(
                schema.meta.insert(),
                [
                    {"key": "schema_version", "value": schema.SCHEMA_VERSION},
                    {"key": "genesis", "value": canonical_json(genesis.to_dict()).decode()},
                ],
            )
            _write_genesis_projection(conn, genesis)
        self._genesis = genesis

    @property
    def genesis(self) -> Genesis:
        """The genesis recorded in the database."""
        if self._genesis is None:
            try:
                with self.engine.connect() as conn:
                    row = conn.execute(
                        select(schema.meta.c.value).where(schema.meta.c.key == "genesis")
                    ).first()
            except SQLAlchemyError as exc:
                reason = getattr(exc, "orig", None) or exc
                raise StoreError(f"{self.url} is not a layerchain ledger: {reason}") from exc
            if row is None:
                raise StoreError(f"{self.url} holds no genesis: not an initialised ledger")
            try:
                self._genesis = Genesis.from_dict(parse_json(row.value))
            except (GenesisError, EncodingError) as exc:
                raise StoreError(f"the stored genesis is malformed: {exc}") from exc
        return self._genesis

    # ----------------------------------------------------------------------- writing

    def append(self, block: Block, result: BlockResult, certificate: CommitCertificate) -> None:
        """Store a committed block with its receipts, certificate, diff and projections, atomically.

        The caller has validated the block, executed it (`result`) and checked the certificate.
        """
        header = block.header
        if result.height != header.height or result.block_hash != header.hash:
            raise StoreError("the execution result is for a different block")
        if certificate.height != header.height or certificate.block_hash != header.hash:
            raise StoreError("the certificate is for a different block")
        height = header.height
        driver_error = self.engine.dialect.loaded_dbapi.Error
        try:
            with self.engine.begin() as conn:
                cursor = conn.connection.cursor()
                cursor.execute("SELECT max(height) FROM blocks")
                row = cursor.fetchone()  # a DBAPI cursor: skips SQLAlchemy's context
                head = row[0] if row is not None else None
                cursor.close()
                if (head or 0) != height - 1:
                    raise StoreError(f"cannot append block {height}: the head is {head or 0}")
                block_row = {
                    **header.to_dict(),
                    "hash": header.hash,
                    "state_root": result.state_root,
                }
                _insert_rows(conn, "blocks", tuple(block_row), [tuple(block_row.values())])
                _insert_rows(
                    conn,
                    "txs",
                    ("height", "idx", "hash", "type", "sender", "nonce", "body", "signature"),
                    [
                        (
                            height,
                            i,
                            tx.hash,
                            tx.type,
                            tx.sender,
                            tx.nonce,
                            tx.body_json,
                            tx.signature,
                        )
                        for i, tx in enumerate(block.txs)
                    ],
                )
                _insert_rows(
                    conn,
                    "receipts",
                    ("height", "idx", "tx_hash", "ok", "code", "message"),
                    [
                        (height, i, r.tx_hash, r.ok, r.code, r.message)
                        for i, r in enumerate(result.receipts)
                    ],
                )
                signatures = canonical_json(certificate.to_dict()["signatures"]).decode()
                _insert_rows(
                    conn,
                    "certificates",
                    ("height", "view", "block_hash", "signatures"),
                    [(height, certificate.view, certificate.block_hash, signatures)],
                )
                _insert_rows(conn, "block_diffs", ("height", "diff"), [(height, result.diff_json)])
                write_projection(conn, result.diff, result.job_json)
        except (SQLAlchemyError, driver_error) as exc:
            raise StoreError(f"cannot store block {height}: {exc}") from exc

    # ----------------------------------------------------------------------- chain reads

    def head(self) -> Head:
        """The last committed block, or height 0 (genesis) for an empty ledger."""
        with self.engine.connect() as conn:
            row = conn.execute(
                select(schema.blocks).order_by(schema.blocks.c.height.desc()).limit(1)
            ).first()
        if row is None:
            genesis = self.genesis
            return Head(0, genesis.hash, initial_root(genesis), genesis.genesis_time_ms)
        return Head(row.height, row.hash, row.state_root, row.time_ms)

    @property
    def height(self) -> int:
        return self.head().height

    def get_block_record(self, height: int) -> BlockRecord | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(schema.blocks).where(schema.blocks.c.height == height)
            ).first()
        return BlockRecord(_header_from_row(row), row.hash, row.state_root) if row else None

    def get_header(self, height: int) -> BlockHeader | None:
        record = self.get_block_record(height)
        return record.header if record else None

    def height_of(self, block_hash: str) -> int | None:
        """Height of the block with this hash, if stored."""
        with self.engine.connect() as conn:
            return conn.execute(
                select(schema.blocks.c.height).where(schema.blocks.c.hash == block_hash)
            ).scalar()

    def get_block(self, height: int) -> Block | None:
        """The block (header and txs) at `height`."""
        with self.engine.connect() as conn:
            row = conn.execute(
                select(schema.blocks).where(schema.blocks.c.height == height)
            ).first()
            if row is None:
                return None
            tx_rows = conn.execute(
                select(schema.txs).where(schema.txs.c.height == height).order_by(schema.txs.c.idx)
            ).all()
        return Block(_header_from_row(row), tuple(_tx_from_row(r) for r in tx_rows))

    def tx_hashes(self, height: int) -> list[str]:
        """The hashes of block `height`'s txs in block order, as stored (no tx is parsed: a
        Merkle proof needs only these)."""
        with self.engine.connect() as conn:
            return list(
                conn.execute(
                    select(schema.txs.c.hash)
                    .where(schema.txs.c.height == height)
                    .order_by(schema.txs.c.idx)
                ).scalars()
            )

    def get_block_by_hash(self, block_hash: str) -> Block | None:
        height = self.height_of(block_hash)
        return None if height is None else self.get_block(height)

    def list_blocks(
        self, *, before: int | None = None, limit: int = DEFAULT_PAGE
    ) -> list[BlockRecord]:
        """Newest first; pass the last height you got as `before` for the next page."""
        query = select(schema.blocks).order_by(schema.blocks.c.height.desc()).limit(_page(limit))
        if before is not None:
            query = query.where(schema.blocks.c.height < before)
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return [BlockRecord(_header_from_row(r), r.hash, r.state_root) for r in rows]

    def get_certificate(self, height: int) -> CommitCertificate | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(schema.certificates).where(schema.certificates.c.height == height)
            ).first()
        return _cert_from_row(row) if row else None

    def get_diff(self, height: int) -> str | None:
        """The canonical state diff of block `height` (JSON text)."""
        with self.engine.connect() as conn:
            return conn.execute(
                select(schema.block_diffs.c.diff).where(schema.block_diffs.c.height == height)
            ).scalar()

    def get_tx(self, tx_hash: str) -> TxRecord | None:
        """The first stored occurrence of a tx (a replay of it repeats the hash with a failure)."""
        records = self._tx_records(schema.txs.c.hash == tx_hash, limit=1)
        return records[0] if records else None

    def get_receipt(self, tx_hash: str) -> Receipt | None:
        record = self.get_tx(tx_hash)
        return record.receipt if record else None

    def txs_of_block(self, height: int) -> list[TxRecord]:
        return self._tx_records(schema.txs.c.height == height, limit=None)

    def list_txs(
        self,
        *,
        sender: str | None = None,
        before: tuple[int, int] | None = None,
        limit: int = DEFAULT_PAGE,
    ) -> list[TxRecord]:
        """Newest first, optionally one sender's; `before` = (height, index) of the last seen."""
        cond: Any = schema.txs.c.height >= 0
        if sender is not None:
            cond = and_(cond, schema.txs.c.sender == sender)
        if before is not None:
            h, i = before
            cond = and_(
                cond,
                or_(schema.txs.c.height < h, and_(schema.txs.c.height == h, schema.txs.c.idx < i)),
            )
        return self._tx_records(cond, limit=_page(limit), newest_first=True)

    def _tx_records(
        self, cond: Any, *, limit: int | None, newest_first: bool = False
    ) -> list[TxRecord]:
        t, r = schema.txs, schema.receipts
        order = (t.c.height.desc(), t.c.idx.desc()) if newest_first else (t.c.height, t.c.idx)
        query = (
            select(t, r.c.tx_hash, r.c.ok, r.c.code, r.c.message)
            .join(r, and_(r.c.height == t.c.height, r.c.idx == t.c.idx))
            .where(cond)
            .order_by(*order)
        )
        if limit is not None:
            query = query.limit(limit)
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return [
            TxRecord(_tx_from_row(row), row.height, row.idx, _receipt_from_row(row)) for row in rows
        ]

    def iter_blocks(self, start: int = 1, end: int | None = None) -> Iterator[StoredBlock]:
        """Every stored height from `start` to `end` (inclusive, default the head), in order.

        Rows are read as stored, without trusting them: a missing block, certificate or diff
        comes back as a gap in heights or as None, for the caller (verify) to report.
        """
        last = self.height if end is None else end
        batch = 32  # blocks per read: bounded memory even for 1,000-tx blocks
        for lo in range(start, last + 1, batch):
            hi = min(last, lo + batch - 1)
            yield from self._read_range(lo, hi)

    def _read_range(self, lo: int, hi: int) -> Iterator[StoredBlock]:
        b, t, r = schema.blocks, schema.txs, schema.receipts
        c, d = schema.certificates, schema.block_diffs
        with self.engine.connect() as conn:
            block_rows = conn.execute(
                select(b).where(b.c.height.between(lo, hi)).order_by(b.c.height)
            ).all()
            tx_rows = conn.execute(
                select(t).where(t.c.height.between(lo, hi)).order_by(t.c.height, t.c.idx)
            ).all()
            receipt_rows = conn.execute(
                select(r).where(r.c.height.between(lo, hi)).order_by(r.c.height, r.c.idx)
            ).all()
            cert_rows = conn.execute(select(c).where(c.c.height.between(lo, hi))).all()
            diff_rows = conn.execute(select(d).where(d.c.height.between(lo, hi))).all()
        txs_by: dict[int, list[Any]] = {}
        for row in tx_rows:
            txs_by.setdefault(row.height, []).append(row)
        receipts_by: dict[int, list[Receipt]] = {}
        for row in receipt_rows:
            receipts_by.setdefault(row.height, []).append(_receipt_from_row(row))
        certs = {row.height: row for row in cert_rows}
        diffs = {row.height: row.diff for row in diff_rows}
        for row in block_rows:
            h = row.height
            problem = None
            txs: tuple[Tx, ...] = ()
            cert = None
            try:
                txs = tuple(_tx_from_row(r) for r in txs_by.get(h, []))
                cert = _cert_from_row(certs[h]) if h in certs else None
            except (InvalidTransaction, InvalidBlock) as exc:
                problem = f"a stored row cannot be parsed: {exc}"
            yield StoredBlock(
                block=Block(_header_from_row(row), txs),
                stored_hash=row.hash,
                state_root=row.state_root,
                receipts=tuple(receipts_by.get(h, [])),
                certificate=cert,
                diff_json=diffs.get(h),
                problem=problem,
            )

    def block_heights(self) -> list[int]:
        """Every stored block height, ascending (verify uses it to find gaps)."""
        with self.engine.connect() as conn:
            return list(
                conn.execute(select(schema.blocks.c.height).order_by(schema.blocks.c.height))
                .scalars()
                .all()
            )

    # ----------------------------------------------------------------------- state reads

    def get_account(self, address: str) -> Account | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(schema.accounts).where(schema.accounts.c.address == address)
            ).first()
        return Account(row.balance, row.nonce) if row else None

    def list_accounts(
        self, *, after: str | None = None, limit: int = DEFAULT_PAGE
    ) -> list[tuple[str, Account]]:
        """Accounts by address; `after` = the last address seen."""
        query = select(schema.accounts).order_by(schema.accounts.c.address).limit(_page(limit))
        if after is not None:
            query = query.where(schema.accounts.c.address > after)
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return [(r.address, Account(r.balance, r.nonce)) for r in rows]

    def get_job(self, job_id: str) -> Job | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(schema.jobs.c.record).where(schema.jobs.c.id == job_id)
            ).first()
        return _job_from_row(row) if row else None

    def list_jobs(
        self,
        *,
        status: str | Sequence[str] | None = None,
        run: str | None = None,
        poster: str | None = None,
        after: tuple[int, str] | None = None,
        newest_first: bool = False,
        limit: int = DEFAULT_PAGE,
    ) -> list[Job]:
        """Jobs in posting order (oldest first unless `newest_first`), filtered.

        `after` = (posted_height, id) of the last job of the previous page. Miners ask for
        status "open" (committable) and "revealing" (awaiting their reveal).
        """
        j = schema.jobs
        query: Select[Any] = select(j.c.record)
        if status is not None:
            statuses = [status] if isinstance(status, str) else list(status)
            query = query.where(j.c.status.in_(statuses))
        if run is not None:
            query = query.where(j.c.run == run)
        if poster is not None:
            query = query.where(j.c.poster == poster)
        if after is not None:
            h, job_id = after
            if newest_first:
                query = query.where(
                    or_(j.c.posted_height < h, and_(j.c.posted_height == h, j.c.id < job_id))
                )
            else:
                query = query.where(
                    or_(j.c.posted_height > h, and_(j.c.posted_height == h, j.c.id > job_id))
                )
        if newest_first:
            query = query.order_by(j.c.posted_height.desc(), j.c.id.desc())
        else:
            query = query.order_by(j.c.posted_height, j.c.id)
        with self.engine.connect() as conn:
            rows = conn.execute(query.limit(_page(limit))).all()
        return [_job_from_row(r) for r in rows]

    def job_counts(self) -> dict[str, int]:
        """Number of jobs per status."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(schema.jobs.c.status, func.count()).group_by(schema.jobs.c.status)
            ).all()
        return {status: count for status, count in rows}

    def results_of_job(self, job_id: str) -> list[dict[str, Any]]:
        """Each miner's commitment, revealed outputs and verdict on one job."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(schema.results)
                .where(schema.results.c.job_id == job_id)
                .order_by(schema.results.c.miner)
            ).all()
        return [_result_dict(r) for r in rows]

    def results_of_miner(
        self, miner: str, *, limit: int = DEFAULT_PAGE, before: tuple[int, str] | None = None
    ) -> list[dict[str, Any]]:
        """A miner's results, most recently updated first; `before` = (updated_height, job_id)
        of the last row of the previous page (an indexed cursor, no offset scan)."""
        r = schema.results
        query = select(r).where(r.c.miner == miner)
        if before is not None:
            height, job_id = before
            query = query.where(
                or_(
                    r.c.updated_height < height,
                    and_(r.c.updated_height == height, r.c.job_id < job_id),
                )
            )
        query = query.order_by(r.c.updated_height.desc(), r.c.job_id.desc()).limit(_page(limit))
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return [_result_dict(row) for row in rows]

    def get_miner(self, address: str) -> MinerStats | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(schema.miners).where(schema.miners.c.address == address)
            ).first()
        return _miner_from_row(row) if row else None

    def list_miners(self, *, limit: int = MAX_PAGE) -> list[tuple[str, MinerStats]]:
        """Miners by reputation, best first."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(schema.miners)
                .order_by(schema.miners.c.reputation.desc(), schema.miners.c.address)
                .limit(_page(limit))
            ).all()
        return [(r.address, _miner_from_row(r)) for r in rows]

    def get_run(self, name: str) -> Run | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(schema.runs).where(schema.runs.c.name == name)).first()
        return _run_from_row(row) if row else None

    def list_runs(self, *, limit: int = MAX_PAGE) -> list[tuple[str, Run]]:
        """Runs, most recently created first."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(schema.runs)
                .order_by(schema.runs.c.created_height.desc(), schema.runs.c.name)
                .limit(_page(limit))
            ).all()
        return [(r.name, _run_from_row(r)) for r in rows]

    def checkpoints(self, run: str) -> list[dict[str, Any]]:
        """A run's checkpoints by epoch: {run, epoch, model_hash, metrics, sender, tx_hash,
        height} (the explorer's loss curve, the driver's replay)."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(schema.checkpoints)
                .where(schema.checkpoints.c.run == run)
                .order_by(schema.checkpoints.c.epoch)
            ).all()
        return [
            {
                "run": r.run,
                "epoch": r.epoch,
                "model_hash": r.model_hash,
                "metrics": json.loads(r.metrics),
                "sender": r.sender,
                "tx_hash": r.tx_hash,
                "height": r.height,
            }
            for r in rows
        ]

    def load_state(self) -> State:
        """The in-memory state after the head, rebuilt from the projections (node restart)."""
        genesis = self.genesis
        head = self.head()
        with self.engine.connect() as conn:
            accounts = {
                r.address: Account(r.balance, r.nonce)
                for r in conn.execute(select(schema.accounts))
            }
            jobs = {r.id: _job_from_row(r) for r in conn.execute(select(schema.jobs))}
            miners_ = {r.address: _miner_from_row(r) for r in conn.execute(select(schema.miners))}
            runs_ = {r.name: _run_from_row(r) for r in conn.execute(select(schema.runs))}
        return State.from_records(
            genesis,
            height=head.height,
            root=head.state_root,
            block_hash=head.hash,
            accounts=accounts,
            jobs=jobs,
            miners=miners_,
            runs=runs_,
        )

    # ----------------------------------------------------------------------- projections

    def projection_snapshot(self) -> dict[str, list[tuple[Any, ...]]]:
        """Every projection row, sorted (tests compare it before and after a reindex)."""
        out: dict[str, list[tuple[Any, ...]]] = {}
        with self.engine.connect() as conn:
            for name in schema.PROJECTION_TABLES:
                table = schema.metadata.tables[name]
                rows = conn.execute(select(table)).all()
                out[name] = sorted(tuple(r) for r in rows)
        return out

    def rebuild_projections(self, diffs: Iterator[dict[str, Any]]) -> int:
        """Replace every projection row by the genesis state plus `diffs`, in one transaction.

        Returns the number of diffs applied. Used by `layerchain reindex` after it checked each
        diff by replay.
        """
        count = 0
        driver_error = self.engine.dialect.loaded_dbapi.Error
        try:
            with self.engine.begin() as conn:
                for name in reversed(schema.PROJECTION_TABLES):
                    conn.execute(delete(schema.metadata.tables[name]))
                _write_genesis_projection(conn, self.genesis)
                for diff in diffs:
                    write_projection(conn, diff)
                    count += 1
        except (SQLAlchemyError, driver_error) as exc:
            raise StoreError(f"cannot rebuild the projections: {exc}") from exc
        return count


def _page(limit: int) -> int:
    return max(1, min(int(limit), MAX_PAGE))


def _miner_from_row(row: Any) -> MinerStats:
    return MinerStats(
        row.accepted, row.rejected, row.missed, row.earned, row.slashed, row.reputation
    )


def _run_from_row(row: Any) -> Run:
    return Run(
        row.owner, row.created_height, row.last_epoch, row.last_model_hash, row.n_checkpoints
    )


def _result_dict(row: Any) -> dict[str, Any]:
    return {
        "job_id": row.job_id,
        "miner": row.miner,
        "commitment": row.commitment,
        "outputs": json.loads(row.outputs) if row.outputs is not None else None,
        "verdict": row.verdict,
        "paid": row.paid,
        "slashed": row.slashed,
        "updated_height": row.updated_height,
    }


def _marks(conn: Connection, n: int) -> str:
    mark = "?" if conn.dialect.paramstyle == "qmark" else "%s"
    return ", ".join([mark] * n)


def _executemany(conn: Connection, sql: str, rows: Sequence[tuple[Any, ...]]) -> None:
    """executemany on the DBAPI cursor of `conn`'s transaction.

    The hot path skips SQLAlchemy's per-row parameter processing (about a tenth of a 1,000-tx
    block's cost) and its per-statement execution context (~40 µs each, about ten statements
    per block: half a 1-tx block's store time). Driver errors propagate as the DBAPI's own
    exception types; `Store.append` turns them into StoreError.
    """
    cursor = conn.connection.cursor()
    try:
        cursor.executemany(sql, rows)
    finally:
        cursor.close()


def _insert_rows(
    conn: Connection, table: str, columns: Sequence[str], rows: list[tuple[Any, ...]]
) -> None:
    """Batched INSERT through the driver's executemany (see `_executemany`)."""
    if rows:
        names = ", ".join(f'"{c}"' for c in columns)
        _executemany(
            conn, f"INSERT INTO {table} ({names}) VALUES ({_marks(conn, len(columns))})", rows
        )


def _upsert_rows(
    conn: Connection,
    table: str,
    columns: Sequence[str],
    keys: Sequence[str],
    rows: list[tuple[Any, ...]],
    fixed: Sequence[str] = (),
) -> None:
    """Batched INSERT ... ON CONFLICT (keys) DO UPDATE (SQLite >= 3.24 and PostgreSQL).

    `fixed` columns never change once a row exists: they are left out of the update, so SQLite
    leaves alone every index built only from keys and fixed columns.
    """
    if rows:
        names = ", ".join(f'"{c}"' for c in columns)
        updates = ", ".join(
            f'"{c}" = excluded."{c}"' for c in columns if c not in keys and c not in fixed
        )
        conflict = ", ".join(f'"{k}"' for k in keys)
        _executemany(
            conn,
            f"INSERT INTO {table} ({names}) VALUES ({_marks(conn, len(columns))}) "
            f"ON CONFLICT ({conflict}) DO UPDATE SET {updates}",
            rows,
        )


def _write_genesis_projection(conn: Connection, genesis: Genesis) -> None:
    _upsert_rows(
        conn,
        "accounts",
        ("address", "balance", "nonce", "updated_height"),
        ("address",),
        [(a, amount, 0, 0) for a, amount in sorted(genesis.balances.items())],
    )


_JOB_COLUMNS = (
    "id",
    "status",
    "poster",
    "op",
    "run",
    "label",
    "replication",
    "reward",
    "posted_height",
    "open_height",
    "settled_height",
    "settlement",
    "updated_height",
    "record",
)
#: What a job's posting sets for good (its record's other fields move as it runs).
_JOB_FIXED = ("poster", "op", "run", "label", "replication", "reward", "posted_height")
_RESULT_COLUMNS = (
    "job_id",
    "miner",
    "commitment",
    "outputs",
    "verdict",
    "paid",
    "slashed",
    "updated_height",
)
_MINER_COLUMNS = (
    "address",
    "accepted",
    "rejected",
    "missed",
    "earned",
    "slashed",
    "reputation",
    "updated_height",
)
_RUN_COLUMNS = (
    "name",
    "owner",
    "created_height",
    "last_epoch",
    "last_model_hash",
    "n_checkpoints",
    "updated_height",
)
_CHECKPOINT_COLUMNS = ("run", "epoch", "model_hash", "metrics", "sender", "tx_hash", "height")


def write_projection(
    conn: Connection, diff: dict[str, Any], job_json: dict[str, str] | None = None
) -> None:
    """Apply one block's state diff to the projection tables (`job_json`: the job records'
    canonical JSON if already encoded, see `ledger.execution.encode_diff`)."""
    h = diff["height"]
    _upsert_rows(
        conn,
        "accounts",
        ("address", "balance", "nonce", "updated_height"),
        ("address",),
        [(a, v["balance"], v["nonce"], h) for a, v in diff["accounts"].items()],
    )
    job_rows, result_rows = [], []
    for job_id, rec in diff["jobs"].items():
        record = (job_json or {}).get(job_id) or trusted_canonical_json(rec).decode()
        job_rows.append(
            (
                job_id,
                rec["status"],
                rec["poster"],
                rec["op"],
                rec["run"],
                rec["label"],
                rec["replication"],
                rec["reward"],
                rec["posted_height"],
                rec["open_height"],
                rec["settled_height"],
                rec["settlement"],
                h,
                record,
            )
        )
        for miner in sorted(set(rec["commits"]) | set(rec["reveals"])):
            outputs = rec["reveals"].get(miner)
            result_rows.append(
                (
                    job_id,
                    miner,
                    rec["commits"].get(miner),
                    json.dumps(outputs) if outputs is not None else None,
                    rec["verdicts"].get(miner),
                    rec["paid"].get(miner, 0),
                    rec["slashed"].get(miner, 0),
                    h,
                )
            )
    _upsert_rows(conn, "jobs", _JOB_COLUMNS, ("id",), job_rows, fixed=_JOB_FIXED)
    _upsert_rows(conn, "results", _RESULT_COLUMNS, ("job_id", "miner"), result_rows)
    _upsert_rows(
        conn,
        "miners",
        _MINER_COLUMNS,
        ("address",),
        [(a, *(v[c] for c in _MINER_COLUMNS[1:-1]), h) for a, v in diff["miners"].items()],
    )
    _upsert_rows(
        conn,
        "runs",
        _RUN_COLUMNS,
        ("name",),
        [(n, *(v[c] for c in _RUN_COLUMNS[1:-1]), h) for n, v in diff["runs"].items()],
    )
    _insert_rows(
        conn,
        "checkpoints",
        _CHECKPOINT_COLUMNS,
        [
            (*(c[k] for k in _CHECKPOINT_COLUMNS[:3]), canonical_json(c["metrics"]).decode())
            + tuple(c[k] for k in _CHECKPOINT_COLUMNS[4:])
            for c in diff["checkpoints"]
        ],
    )
