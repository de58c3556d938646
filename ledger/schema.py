"""The database schema: append-only ledger tables, and state tables that are projections.

Ledger tables (`meta`, `blocks`, `txs`, `receipts`, `certificates`, `block_diffs`) are the record:
triggers in the database abort any UPDATE or DELETE on them, so not even a bug in a node can
rewrite history. State tables (`accounts`, `jobs`, `results`, `miners`, `runs`, `checkpoints`) are
projections of the ledger for queries; `layerchain reindex` rebuilds them from the ledger tables.
"""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    Column,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)
from sqlalchemy.engine import Connection

SCHEMA_VERSION = "1"

metadata = MetaData()

# --------------------------------------------------------------------------- ledger (append-only)

meta = Table(
    "meta",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)
"""schema_version and the genesis JSON, written once when the database is created."""

blocks = Table(
    "blocks",
    metadata,
    Column("height", Integer, primary_key=True, autoincrement=False),
    Column("hash", String(64), nullable=False, unique=True),
    Column("chain_id", String(64), nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("time_ms", Integer, nullable=False),
    Column("proposer", String(64), nullable=False),
    Column("view", Integer, nullable=False),
    Column("tx_root", String(64), nullable=False),
    Column("app_hash", String(64), nullable=False),
    Column("n_txs", Integer, nullable=False),
    Column("state_root", String(64), nullable=False),
)
"""One row per block: the header fields, its hash, and the state root after executing it."""

txs = Table(
    "txs",
    metadata,
    Column("height", Integer, ForeignKey("blocks.height"), primary_key=True, autoincrement=False),
    Column("idx", Integer, primary_key=True, autoincrement=False),
    Column("hash", String(64), nullable=False),
    Column("type", String(32), nullable=False),
    Column("sender", String(64), nullable=False),
    Column("nonce", Integer, nullable=False),
    Column("body", Text, nullable=False),
    Column("signature", String(128), nullable=False),
    Index("ix_txs_hash", "hash"),
    Index("ix_txs_sender", "sender", "height", "idx"),
)
"""Transactions in block order. A replayed tx repeats a hash, so the key is (height, idx)."""

receipts = Table(
    "receipts",
    metadata,
    Column("height", Integer, primary_key=True, autoincrement=False),
    Column("idx", Integer, primary_key=True, autoincrement=False),
    Column("tx_hash", String(64), nullable=False),
    Column("ok", Boolean, nullable=False),
    Column("code", String(64), nullable=False),
    Column("message", Text, nullable=False),
    ForeignKeyConstraint(["height", "idx"], ["txs.height", "txs.idx"]),
    Index("ix_receipts_tx_hash", "tx_hash"),
)

certificates = Table(
    "certificates",
    metadata,
    Column("height", Integer, ForeignKey("blocks.height"), primary_key=True, autoincrement=False),
    Column("view", Integer, nullable=False),
    Column("block_hash", String(64), nullable=False),
    Column("signatures", Text, nullable=False),
)
"""Commit certificates; `signatures` is the canonical JSON list of {validator, signature}."""

block_diffs = Table(
    "block_diffs",
    metadata,
    Column("height", Integer, ForeignKey("blocks.height"), primary_key=True, autoincrement=False),
    Column("diff", Text, nullable=False),
)
"""Canonical state diff of each block: what the state root hashes."""

LEDGER_TABLES = ("meta", "blocks", "txs", "receipts", "certificates", "block_diffs")

# --------------------------------------------------------------------------- projections

accounts = Table(
    "accounts",
    metadata,
    Column("address", String(64), primary_key=True),
    Column("balance", Integer, nullable=False),
    Column("nonce", Integer, nullable=False),
    Column("updated_height", Integer, nullable=False),
)

jobs = Table(
    "jobs",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("status", String(16), nullable=False),
    Column("poster", String(64), nullable=False),
    Column("op", String(128), nullable=False),
    Column("run", String(128)),
    Column("label", String(128)),
    Column("replication", Integer, nullable=False),
    Column("reward", Integer, nullable=False),
    Column("posted_height", Integer, nullable=False),
    Column("open_height", Integer),
    Column("settled_height", Integer),
    Column("settlement", String(16)),
    Column("updated_height", Integer, nullable=False),
    Column("record", Text, nullable=False),
    Index("ix_jobs_status", "status", "posted_height", "id"),
    Index("ix_jobs_run", "run", "posted_height", "id"),
    Index("ix_jobs_poster", "poster", "posted_height", "id"),
    Index("ix_jobs_order", "posted_height", "id"),
)
"""One row per job; `record` is the full canonical job record (ledger.state.Job)."""

results = Table(
    "results",
    metadata,
    Column("job_id", String(64), primary_key=True),
    Column("miner", String(64), primary_key=True),
    Column("commitment", String(64)),
    Column("outputs", Text),
    Column("verdict", String(16)),
    Column("paid", Integer, nullable=False),
    Column("slashed", Integer, nullable=False),
    Column("updated_height", Integer, nullable=False),
    Index("ix_results_miner", "miner", "updated_height"),
)
"""Every miner's commitment / reveal on every job, and the verdict once the job is final."""

miners = Table(
    "miners",
    metadata,
    Column("address", String(64), primary_key=True),
    Column("accepted", Integer, nullable=False),
    Column("rejected", Integer, nullable=False),
    Column("missed", Integer, nullable=False),
    Column("earned", Integer, nullable=False),
    Column("slashed", Integer, nullable=False),
    Column("reputation", Integer, nullable=False),
    Column("updated_height", Integer, nullable=False),
)

runs = Table(
    "runs",
    metadata,
    Column("name", String(128), primary_key=True),
    Column("owner", String(64), nullable=False),
    Column("created_height", Integer, nullable=False),
    Column("last_epoch", Integer, nullable=False),
    Column("last_model_hash", String(64), nullable=False),
    Column("n_checkpoints", Integer, nullable=False),
    Column("updated_height", Integer, nullable=False),
)

checkpoints = Table(
    "checkpoints",
    metadata,
    Column("run", String(128), primary_key=True),
    Column("epoch", Integer, primary_key=True, autoincrement=False),
    Column("model_hash", String(64), nullable=False),
    Column("metrics", Text, nullable=False),
    Column("sender", String(64), nullable=False),
    Column("tx_hash", String(64), nullable=False),
    Column("height", Integer, nullable=False),
)

PROJECTION_TABLES = ("accounts", "jobs", "results", "miners", "runs", "checkpoints")


def install_append_only_triggers(conn: Connection) -> None:
    """Create the triggers that make the ledger tables append-only (SQLite or PostgreSQL)."""
    dialect = conn.dialect.name
    if dialect == "sqlite":
        for table in LEDGER_TABLES:
            for action in ("UPDATE", "DELETE"):
                conn.exec_driver_sql(
                    f"CREATE TRIGGER IF NOT EXISTS {table}_no_{action.lower()} "
                    f"BEFORE {action} ON {table} BEGIN "
                    f"SELECT RAISE(ABORT, '{table} is append-only: {action} refused'); END"
                )
    elif dialect == "postgresql":  # pragma: no cover - exercised only against a PostgreSQL server
        conn.exec_driver_sql(
            "CREATE OR REPLACE FUNCTION layerchain_append_only() RETURNS trigger AS $$ "
            "BEGIN RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP; END "
            "$$ LANGUAGE plpgsql"
        )
        for table in LEDGER_TABLES:
            conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {table}_append_only ON {table}")
            conn.exec_driver_sql(
                f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
                "FOR EACH ROW EXECUTE FUNCTION layerchain_append_only()"
            )
    else:
        raise NotImplementedError(f"append-only triggers for {dialect} are not written")
