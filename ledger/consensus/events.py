"""What the host feeds a replica (events) and what the replica asks the host to do (actions).

The replica is a pure state machine: `Replica.step(event) -> list[Action]`. The host (the node in
`api/`, or the simulator in `sim.py`) owns the network, the disk, the clock and the timers, and
performs the returned actions IN ORDER, under this contract:

* `Persist(record)` must be durable (fsync'd) before any later `Send` / `Broadcast` of the same
  action list is performed. This is what stops a restarted replica from signing two different
  digests for one (view, height, phase): every vote is persisted before anyone can see it.
* `Commit(block, certificate)` actions arrive in strictly increasing, contiguous height order;
  the host stores the block and its certificate (durably) and executes it. It must not wait for
  later actions of the list to do so, but it may perform the remaining actions first.
* `SetTimer(id, delay_ms)` replaces any running timer with the same id; when it fires the host
  feeds `TimerFired(id)`. `CancelTimer(id)` of an unknown id is a no-op.
* `Broadcast(msg)` goes to every other validator; `Send(to, msg)` to one (`to` is an address).
  Delivery may be lossy, duplicated or reordered: the protocol tolerates it.
* `FetchBlocks(from_height, peers)` asks the host to fetch committed blocks with their commit
  certificates from one of `peers` (any order of preference), starting at `from_height`, and to
  feed the answer back as `BlocksFetched`. The replica verifies everything it is given.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ledger.certificate import CommitCertificate


# ----------------------------------------------------------------------------------- events
@dataclass(frozen=True)
class Received:
    """A consensus message arrived from the network (already decoded, not yet verified)."""

    msg: Any
    """One of the classes in `ledger.consensus.messages`; anything else is dropped."""


@dataclass(frozen=True)
class ClientTx:
    """A client transaction reached this validator (the host has checked its form and signature).

    PBFT clients broadcast requests, so the host should deliver every tx to every validator
    (directly or by gossip); a tx that a validator holds and the primary leaves out past the
    view timeout triggers a view change.
    """

    tx_hash: str
    tx: Any = field(compare=False)
    """Opaque to the core; passed to `Application.propose`."""


@dataclass(frozen=True)
class TimerFired:
    """A timer set with `SetTimer(timer_id, ...)` expired."""

    timer_id: str


@dataclass(frozen=True)
class TimeAdvanced:
    """The host's clock now reads `now_ms` (the primary stamps proposed blocks with it)."""

    now_ms: int


@dataclass(frozen=True)
class BlocksFetched:
    """Answer to `FetchBlocks`: committed blocks with certificates, in increasing height order."""

    blocks: tuple[tuple[Any, CommitCertificate], ...]
    peer: str = ""
    """Address of the peer that answered (informational; an empty answer makes the replica retry
    with another peer)."""


@dataclass(frozen=True)
class AppReady:
    """The host finished executing block `height`; proposals and checks that got WAIT retry."""

    height: int


@dataclass(frozen=True)
class PeersAhead:
    """The host learned (e.g. from peers' status) that `peers` have committed up to `height`.

    The replica starts (or extends) state transfer towards `height`; since every fetched block is
    checked against its certificate, a peer that lies about its height only wastes a fetch.
    """

    height: int
    peers: tuple[str, ...]


Event = Received | ClientTx | TimerFired | TimeAdvanced | BlocksFetched | AppReady | PeersAhead


# ---------------------------------------------------------------------------------- actions
@dataclass(frozen=True)
class Send:
    """Send `msg` to the validator with address `to`."""

    to: str
    msg: Any


@dataclass(frozen=True)
class Broadcast:
    """Send `msg` to every validator except this one."""

    msg: Any


@dataclass(frozen=True)
class SetTimer:
    """(Re)start timer `timer_id` to fire once after `delay_ms` of the host's clock."""

    timer_id: str
    delay_ms: int


@dataclass(frozen=True)
class CancelTimer:
    """Stop timer `timer_id` if it is running."""

    timer_id: str


@dataclass(frozen=True)
class Persist:
    """Durably append `record` (a `ledger.consensus.records` object) before the sends that follow.

    On restart, the host constructs the replica with every record persisted so far, in order.
    """

    record: Any


@dataclass(frozen=True)
class Commit:
    """Block `block` is final at `block.height`, proven by `certificate` (store, then execute)."""

    block: Any
    certificate: CommitCertificate


@dataclass(frozen=True)
class FetchBlocks:
    """State transfer: fetch committed blocks (with certificates) from `from_height` upwards."""

    from_height: int
    peers: tuple[str, ...]


Action = Send | Broadcast | SetTimer | CancelTimer | Persist | Commit | FetchBlocks
