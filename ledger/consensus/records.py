"""What a replica asks the host to persist, and what it is rebuilt from after a crash.

Records are appended in the order the replica emits them (`Persist` actions); on restart the host
passes them all back, in order, to the `Replica` constructor. Together with the host's committed
blocks they are enough for the replica never to contradict anything it signed before the crash.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ledger.consensus.messages import Checkpoint, NewView, PreparedCert, ViewChange

Phase = Literal["pre-prepare", "prepare", "commit"]


@dataclass(frozen=True)
class VoteRecord:
    """The replica signed `phase` for `block_hash` at (`view`, `height`); it never signs another."""

    phase: Phase
    view: int
    height: int
    block_hash: str


@dataclass(frozen=True, eq=False)
class PreparedRecord:
    """The replica holds this prepared certificate; a later VIEW-CHANGE must report it."""

    cert: PreparedCert


@dataclass(frozen=True, eq=False)
class ViewChangeRecord:
    """The replica left view `vc.view - 1` (or lower) and asked for `vc.view` with this message."""

    vc: ViewChange


@dataclass(frozen=True, eq=False)
class NewViewRecord:
    """The replica installed view `nv.view` from this NEW-VIEW (sent or accepted)."""

    nv: NewView


@dataclass(frozen=True, eq=False)
class StableRecord:
    """A checkpoint became stable: 2f+1 signatures that `block_hash` is final at `height`."""

    height: int
    block_hash: str
    proof: tuple[Checkpoint, ...]


Record = VoteRecord | PreparedRecord | ViewChangeRecord | NewViewRecord | StableRecord


def compact(records: list[Record]) -> list[Record]:
    """The records a restart still needs: drop what the latest stable checkpoint made obsolete.

    Votes and prepared certificates at or below the stable height are never consulted again, and
    only the latest VIEW-CHANGE / NEW-VIEW matter. The host may rewrite its log with this at any
    time (atomically: write the new log, fsync, rename).
    """
    stable = max((r.height for r in records if isinstance(r, StableRecord)), default=0)
    last_view_record = max(
        (i for i, r in enumerate(records) if isinstance(r, ViewChangeRecord | NewViewRecord)),
        default=-1,
    )
    kept: list[Record] = []
    for i, r in enumerate(records):
        if isinstance(r, VoteRecord) and r.height <= stable:
            continue
        if isinstance(r, PreparedRecord) and r.cert.height <= stable:
            continue
        if isinstance(r, ViewChangeRecord | NewViewRecord) and i != last_view_record:
            continue
        if isinstance(r, StableRecord) and r.height != stable:
            continue
        kept.append(r)
    return kept
