"""One PBFT replica as a pure state machine: `step(event) -> list[Action]`.

Castro–Liskov PBFT over a chain of blocks: the sequence number is the block height, and a block
at height h names its parent by `prev_hash`. Normal case PRE-PREPARE → PREPARE → COMMIT with
several heights in flight inside the watermark window; CHECKPOINTs every K heights, stable at a
quorum, with garbage collection below; VIEW-CHANGE / NEW-VIEW with exponential backoff; state
transfer for a replica that fell behind a stable checkpoint. See docs/PROTOCOL.md section 7.

Chaining adds one rule to the paper: a replica sends COMMIT for height h only once it has sent
COMMIT for h - 1 in the same view (or h - 1 is final). So whenever a block commits, it and all
its uncommitted ancestors are prepared at f + 1 honest replicas, and every later NEW-VIEW
re-proposes that whole chain.

No I/O, clocks, threads or randomness: the host performs the actions (see events.py for the
ordering contract) and feeds back events.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from itertools import islice
from typing import Any

from ledger.certificate import CommitCertificate, verify_certificate
from ledger.consensus import events as ev
from ledger.consensus.app import Application, held_txs
from ledger.consensus.config import ConsensusConfig
from ledger.consensus.messages import (
    Checkpoint,
    Commit,
    NewView,
    Prepare,
    PreparedCert,
    PrePrepare,
    Verifier,
    ViewChange,
    sign_message,
)
from ledger.consensus.records import (
    NewViewRecord,
    Phase,
    PreparedRecord,
    StableRecord,
    ViewChangeRecord,
    VoteRecord,
)
from ledger.consensus.validate import (
    block_matches,
    check_new_view,
    check_view_change,
    select_chain,
    well_formed,
)
from ledger.errors import InvalidBlock
from ledger.identity import Keypair

VIEW_TIMER = "view"
FETCH_TIMER = "fetch"

#: Bugs the tests can plant to prove that the simulator catches them. Never used in production.
KNOWN_BUGS = frozenset({"commit_quorum_2f", "forget_prepared", "no_persist", "no_heartbeat_watch"})

#: How many views ahead of the current one normal-case messages are buffered (they often
#: arrive before the NEW-VIEW that installs their view).
_FUTURE_VIEWS = 2


@dataclass
class _Snapshot:
    """What the replica was waiting for when the view timer was armed."""

    committed_height: int
    txs: frozenset[str]
    in_flight: bool
    backlog: int
    """Txs waiting at this validator then: the core's pending ones plus those its host held."""
    heartbeat: bool = False
    """Armed by an idle backup whose host said a heartbeat block is owed (`_watch_heartbeat`)."""


class Replica:
    """A PBFT replica. Construct it (fresh or from persisted records), call `start()`, then `step`.

    `records` are every `Persist` record emitted before a crash, in order; `committed_height` and
    `committed_hashes` come from the host's block store (the hash of each committed height above
    the last stable checkpoint, at least the head). `verifier` may be shared between replicas
    of one process (the simulator does so); `bugs` plants known bugs for the simulator's tests.
    """

    def __init__(
        self,
        config: ConsensusConfig,
        key: Keypair,
        app: Application,
        *,
        records: Iterable[Any] = (),
        committed_height: int = 0,
        committed_hashes: Mapping[int, str] | None = None,
        verifier: Verifier | None = None,
        bugs: frozenset[str] = frozenset(),
    ) -> None:
        unknown = set(bugs) - KNOWN_BUGS
        if unknown:
            raise ValueError(f"unknown planted bugs: {sorted(unknown)}")
        if key.address not in config.validators:
            raise ValueError("this key is not in the validator set")
        self.cfg = config
        self.key = key
        self.address = key.address
        self.app = app
        self.verifier = verifier if verifier is not None else Verifier()
        self.bugs = frozenset(bugs)
        self._members = frozenset(config.validators)
        self._out: list[Any] = []

        self.view = 0
        self.active = True
        """False while changing view (between sending VIEW-CHANGE and installing NEW-VIEW)."""
        self.now_ms = 0

        self.stable_height = 0
        self.stable_hash = config.genesis_hash
        self.stable_proof: tuple[Checkpoint, ...] = ()
        self.committed_height = committed_height
        self.hashes: dict[int, str] = {0: config.genesis_hash}
        if committed_hashes:
            self.hashes.update(committed_hashes)
        if committed_height and committed_height not in self.hashes:
            raise ValueError("committed_hashes must include the committed head")

        # Normal case, current view.
        self.accepted: dict[int, PrePrepare] = {}
        self.early: dict[tuple[int, int], PrePrepare] = {}
        self.votes: dict[tuple[str, int, int, str], str] = {}
        """(phase, view, height, sender) -> block hash: one vote per sender, first one wins."""
        self.prepares: dict[tuple[int, int, str], dict[str, Prepare]] = {}
        self.commits: dict[tuple[int, int, str], dict[str, Commit]] = {}
        self.prepared: dict[int, PreparedCert] = {}
        """The P set: the highest-view prepared certificate of each height above stable."""
        self.ready: dict[int, tuple[Any, CommitCertificate]] = {}
        """Committed locally, waiting for every lower height to commit first."""
        self.sent: dict[tuple[str, int, int], str] = {}
        """(phase, view, height) -> hash this replica signed: it never signs another."""
        self.rejected: set[tuple[int, int]] = set()

        # Checkpoints.
        self.checkpoints: dict[str, dict[int, Checkpoint]] = {}

        # View change.
        self.view_changes: dict[str, ViewChange] = {}
        """Latest valid VIEW-CHANGE of each validator."""
        self.my_vc: ViewChange | None = None
        self.new_view: NewView | None = None
        self.backoff = 0

        # Clients and timers.
        self.pending: dict[str, Any] = {}
        self.waiting_app = False
        self.snapshot: _Snapshot | None = None

        # Following the views this replica has left (see `_learn_old_view`).
        self.old_blocks: dict[tuple[int, str], Any] = {}
        """(height, hash) -> block, from PRE-PREPAREs of views below the current one."""
        self.old_commits: dict[tuple[int, int, str], dict[str, Commit]] = {}
        """(view, height, hash) -> COMMITs of views below the current one, by sender."""

        # State transfer.
        self.fetch_target = 0
        self.fetch_peers: tuple[str, ...] = ()

        self._in_flight: set[str] | None = None

        self.anomalies: list[str] = []
        """Things that can only happen if more than f replicas are faulty (or a bug)."""

        self._restore(records)

    # ------------------------------------------------------------------------------ public
    @property
    def primary(self) -> str:
        return self.cfg.primary(self.view)

    @property
    def is_primary(self) -> bool:
        return self.primary == self.address

    def start(self) -> list[Any]:
        """Actions to perform once after construction (timers; re-sending an open VIEW-CHANGE)."""
        self._out = []
        if self.stable_height > self.committed_height:
            peers = tuple(c.sender for c in self.stable_proof)
            self._start_fetch(self.stable_height, peers)
        if not self.active and self.my_vc is not None:
            self._out.append(ev.Broadcast(self.my_vc))
            self._set_view_timer()
        else:
            self._try_propose()
            self._arm_view_timer()
        return self._take()

    def step(self, event: Any) -> list[Any]:
        """Feed one event; return the actions the host must perform, in order."""
        self._out = []
        if isinstance(event, ev.Received):
            self._on_message(event.msg)
        elif isinstance(event, ev.ClientTx):
            self._on_client_tx(event.tx_hash, event.tx)
        elif isinstance(event, ev.TimerFired):
            self._on_timer(event.timer_id)
        elif isinstance(event, ev.TimeAdvanced):
            self.now_ms = max(self.now_ms, event.now_ms)
            if self.active and not self.pending:
                if self.is_primary:
                    self._try_propose()  # a heartbeat may be due
                else:
                    self._watch_heartbeat()
        elif isinstance(event, ev.BlocksFetched):
            self._on_blocks_fetched(event)
        elif isinstance(event, ev.AppReady):
            self._on_app_ready()
        elif isinstance(event, ev.PeersAhead):
            members = tuple(p for p in event.peers if p in self._members)
            if members and isinstance(event.height, int):
                self._start_fetch(event.height, members)
        return self._take()

    # ------------------------------------------------------------------------- restoring
    def _restore(self, records: Iterable[Any]) -> None:
        for rec in records:
            if isinstance(rec, VoteRecord):
                self.sent[(rec.phase, rec.view, rec.height)] = rec.block_hash
            elif isinstance(rec, PreparedRecord):
                old = self.prepared.get(rec.cert.height)
                if old is None or old.view <= rec.cert.view:
                    self.prepared[rec.cert.height] = rec.cert
            elif isinstance(rec, ViewChangeRecord):
                if rec.vc.view >= self.view:
                    self.view, self.active, self.my_vc = rec.vc.view, False, rec.vc
                    self.view_changes[self.address] = rec.vc
            elif isinstance(rec, NewViewRecord):
                if rec.nv.view >= self.view:
                    self.view, self.active, self.new_view = rec.nv.view, True, rec.nv
            elif isinstance(rec, StableRecord):
                if rec.height > self.stable_height:
                    self.stable_height, self.stable_hash = rec.height, rec.block_hash
                    self.stable_proof = rec.proof
        self.hashes.setdefault(self.stable_height, self.stable_hash)
        if self.active and self.new_view is not None and self.new_view.view == self.view:
            for pp in self.new_view.pre_prepares:
                if pp.height > self.stable_height:
                    self.accepted[pp.height] = pp
        self._collect_garbage()

    # -------------------------------------------------------------------------- plumbing
    def _take(self) -> list[Any]:
        out, self._out = self._out, []
        return out

    def _persist(self, record: Any) -> None:
        if "no_persist" not in self.bugs:
            self._out.append(ev.Persist(record))

    def _sign(self, cls: type, **fields: Any) -> Any:
        return sign_message(self.key, self.cfg.chain_id, cls, **fields)

    def _vote(self, phase: Phase, view: int, height: int, block_hash: str) -> bool:
        """Record that we vote `phase` for `block_hash`; False if we signed another one before."""
        key = (phase, view, height)
        previous = self.sent.get(key)
        if previous is not None:
            return previous == block_hash
        self._persist(VoteRecord(phase, view, height, block_hash))
        self.sent[key] = block_hash
        return True

    def _hash_at(self, height: int) -> str | None:
        """The hash this replica links height + 1 to: final, or accepted in the current view."""
        if height <= self.committed_height or height == self.stable_height:
            return self.hashes.get(height)
        pp = self.accepted.get(height)
        return pp.block_hash if pp is not None else None

    def _in_flight_txs(self) -> set[str]:
        """Txs of accepted, uncommitted blocks (cached: asked for on every client tx)."""
        if self._in_flight is None:
            seen: set[str] = set()
            for height, pp in self.accepted.items():
                if height > self.committed_height:
                    seen.update(pp.block.tx_hashes)
            self._in_flight = seen
        return self._in_flight

    # -------------------------------------------------------------------------- messages
    def _on_message(self, msg: Any) -> None:
        if not well_formed(msg):  # also rejects anything that is not a consensus message
            return
        if msg.sender not in self._members or msg.sender == self.address:
            return
        if not self.verifier.message(msg, self.cfg.chain_id):
            return
        if isinstance(msg, PrePrepare):
            self._on_pre_prepare(msg)
        elif isinstance(msg, Prepare):
            self._on_vote("prepare", msg)
        elif isinstance(msg, Commit):
            self._on_vote("commit", msg)
        elif isinstance(msg, Checkpoint):
            self._on_checkpoint(msg)
        elif isinstance(msg, ViewChange):
            self._on_view_change(msg)
        elif isinstance(msg, NewView):
            self._on_new_view(msg)

    def _in_window(self, view: int, height: int) -> bool:
        """Buffer messages of this and the next few views inside twice the watermark window."""
        if not self.view <= view <= self.view + _FUTURE_VIEWS:
            return False
        return self.stable_height < height <= self.stable_height + 2 * self.cfg.watermark_window

    # ---------------------------------------------------------------------- normal case
    def _on_pre_prepare(self, pp: PrePrepare) -> None:
        if pp.view < self.view:
            self._learn_old_view(pp)
            return
        if pp.sender != self.cfg.primary(pp.view) or not self._in_window(pp.view, pp.height):
            return
        if not block_matches(pp.block, pp.height, pp.block_hash):
            return
        key = (pp.view, pp.height)
        if key in self.early or key in self.rejected:
            return
        if pp.view == self.view and pp.height in self.accepted:
            return
        self.early[key] = pp
        if pp.view == self.view and self.active:
            self._try_accept(pp.height)

    def _try_accept(self, height: int) -> None:
        """Accept buffered PRE-PREPAREs of the current view from `height` up while they chain."""
        while True:
            pp = self.early.get((self.view, height))
            if pp is None or height > self.stable_height + self.cfg.watermark_window:
                return
            verdict = self._judge(pp)
            if verdict == "wait":
                return
            del self.early[(self.view, height)]
            if verdict == "invalid":
                self.rejected.add((self.view, height))
                return
            self._accept(pp)
            height += 1

    def _judge(self, pp: PrePrepare) -> str:
        """ "ok", "wait" (parent or app not ready) or "invalid" for a PRE-PREPARE of this view."""
        height, block = pp.height, pp.block
        if height <= self.committed_height:
            return "ok" if self.hashes.get(height) == pp.block_hash else "invalid"
        parent = self._hash_at(height - 1)
        if parent is None:
            return "wait"
        if block.prev_hash != parent:
            return "invalid"
        txs = list(block.tx_hashes)
        if len(set(txs)) != len(txs) or len(txs) > self.cfg.max_block_txs:
            return "invalid"
        if not self._in_flight_txs().isdisjoint(txs):
            return "invalid"
        verdict = self.app.check(block, pp.view, pp.sender)
        return "ok" if verdict.status == "ok" else verdict.status

    def _accept(self, pp: PrePrepare) -> None:
        self.accepted[pp.height] = pp
        self._in_flight = None
        if not self.is_primary:
            if not self._vote("prepare", pp.view, pp.height, pp.block_hash):
                self.anomalies.append(f"refused to prepare twice at {pp.view}/{pp.height}")
                return
            prepare = self._sign(Prepare, view=pp.view, height=pp.height, block_hash=pp.block_hash)
            self._record_vote("prepare", prepare)
            self._out.append(ev.Broadcast(prepare))
        self._arm_view_timer()
        self._check_prepared(pp.height)

    def _on_vote(self, phase: str, msg: Prepare | Commit) -> None:
        if msg.view < self.view and isinstance(msg, Commit):
            self._learn_old_view(msg)
            return
        if not self._in_window(msg.view, msg.height):
            return
        if phase == "prepare" and msg.sender == self.cfg.primary(msg.view):
            return
        if not self._record_vote(phase, msg):
            return
        if msg.view == self.view and self.active:
            if phase == "prepare":
                self._check_prepared(msg.height)
            else:
                self._check_committed(msg.height)

    def _record_vote(self, phase: str, msg: Prepare | Commit) -> bool:
        key = (phase, msg.view, msg.height, msg.sender)
        first = self.votes.setdefault(key, msg.block_hash)
        if first != msg.block_hash:
            return False  # an equivocating voter: keep its first vote only
        table: Any = self.prepares if phase == "prepare" else self.commits
        table.setdefault((msg.view, msg.height, msg.block_hash), {})[msg.sender] = msg
        return True

    def _check_prepared(self, height: int) -> None:
        pp = self.accepted.get(height)
        if pp is None or not self.active:
            return
        cert = self.prepared.get(height)
        if cert is None or cert.view != self.view:
            votes = self.prepares.get((self.view, height, pp.block_hash), {})
            if len(votes) < self.cfg.quorum - 1:
                return
            chosen = tuple(sorted(votes.values(), key=lambda p: p.sender)[: self.cfg.quorum - 1])
            cert = PreparedCert(pp, chosen)
            self.prepared[height] = cert
            self._persist(PreparedRecord(cert))
        self._try_commit_vote(height)

    def _parent_settled(self, height: int) -> bool:
        """COMMIT at `height` needs a COMMIT sent for its parent in this view, or the parent final.

        By induction, a replica that sent COMMIT at h prepared every height from h down to its
        committed head in this view; so when a block commits, f + 1 honest replicas hold prepared
        certificates for it and all its uncommitted ancestors, and every NEW-VIEW re-proposes
        the whole chain (see `validate.select_chain`).
        """
        pp = self.accepted[height]
        parent = height - 1
        if parent <= self.committed_height or parent == self.stable_height:
            return self.hashes.get(parent) == pp.block.prev_hash
        return self.sent.get(("commit", self.view, parent)) == pp.block.prev_hash

    def _try_commit_vote(self, height: int) -> None:
        while True:
            pp = self.accepted.get(height)
            cert = self.prepared.get(height)
            if pp is None or cert is None or cert.view != self.view:
                return
            if cert.block_hash != pp.block_hash or not self._parent_settled(height):
                return
            if ("commit", self.view, height) not in self.sent:
                if not self._vote("commit", self.view, height, pp.block_hash):
                    self.anomalies.append(f"refused to commit twice at {self.view}/{height}")
                    return
                commit = self._sign(Commit, view=self.view, height=height, block_hash=pp.block_hash)
                self._record_vote("commit", commit)
                self._out.append(ev.Broadcast(commit))
            self._check_committed(height)
            height += 1

    def _check_committed(self, height: int) -> None:
        pp = self.accepted.get(height)
        cert = self.prepared.get(height)
        if pp is None or cert is None or cert.view != self.view:
            return
        if height <= self.committed_height or height in self.ready:
            return
        if self.sent.get(("commit", self.view, height)) != pp.block_hash:
            return
        votes = self.commits.get((self.view, height, pp.block_hash), {})
        need = self.cfg.quorum - 1 if "commit_quorum_2f" in self.bugs else self.cfg.quorum
        if len(votes) < need:
            return
        signatures = {sender: c.signature for sender, c in votes.items()}
        certificate = CommitCertificate.build(height, self.view, pp.block_hash, signatures)
        self.ready[height] = (pp.block, certificate)
        self._flush_ready()

    def _flush_ready(self) -> None:
        progressed = False
        while self.committed_height + 1 in self.ready:
            block, cert = self.ready.pop(self.committed_height + 1)
            if block.prev_hash != self.hashes.get(self.committed_height):
                self.anomalies.append(f"committed block {block.height} does not link to its parent")
                self.ready[block.height] = (block, cert)
                break
            self._apply_commit(block, cert)
            progressed = True
        if progressed:
            self._after_progress()

    def _apply_commit(self, block: Any, cert: CommitCertificate) -> None:
        height = block.height
        self._out.append(ev.Commit(block, cert))
        self.committed_height = height
        self.hashes[height] = block.hash
        self._in_flight = None
        for tx_hash in block.tx_hashes:
            self.pending.pop(tx_hash, None)
        self.backoff = 0
        if height % self.cfg.checkpoint_interval == 0:
            checkpoint = self._sign(Checkpoint, height=height, block_hash=block.hash)
            self.checkpoints.setdefault(self.address, {})[height] = checkpoint
            self._out.append(ev.Broadcast(checkpoint))
            self._check_stable(height)

    def _after_progress(self) -> None:
        self.ready = {h: v for h, v in self.ready.items() if h > self.committed_height}
        if self.active:
            # Blocks the parent of which just became final may now be acceptable / committable.
            self._try_accept(self.committed_height + 1)
            self._try_commit_vote(self.committed_height + 1)
            self._try_propose()
        self._arm_view_timer()

    # ------------------------------------------------------------------------ proposing
    def _on_client_tx(self, tx_hash: str, tx: Any) -> None:
        if tx_hash in self.pending or len(self.pending) >= self.cfg.max_pending_txs:
            return
        if self.app.tx_committed(tx_hash):
            return
        self.pending[tx_hash] = tx
        self._try_propose()
        self._arm_view_timer()

    def _try_propose(self) -> None:
        if not (self.active and self.is_primary):
            return
        while True:
            top = max(self.accepted, default=self.committed_height)
            top = max(top, self.committed_height, self.stable_height)
            signed_before = [h for (p, v, h) in self.sent if p == "pre-prepare" and v == self.view]
            if signed_before and max(signed_before) > top:
                return  # proposals lost in a crash: wait for the view change
            height = top + 1
            if height > self.stable_height + self.cfg.watermark_window:
                return
            parent = self._hash_at(height - 1)
            if parent is None:
                return
            in_flight = self._in_flight_txs()
            fresh = ((h, tx) for h, tx in self.pending.items() if h not in in_flight)
            txs = list(islice(fresh, self.cfg.max_block_txs))
            if not txs:
                # Nothing to order: only a heartbeat (an empty block the host asks for, so
                # deadlines counted in blocks pass on an idle chain), never pipelined.
                if height != self.committed_height + 1 or not self.app.heartbeat_due(
                    height, self.now_ms
                ):
                    return
            elif height > self.committed_height + 1 and len(txs) < self.cfg.max_block_txs:
                # Batching: while a block is in flight, wait for a full block (or for the commit
                # that empties the pipeline) rather than proposing one block per tx.
                return
            block = self.app.propose(
                height,
                self.view,
                parent,
                txs,
                self.address,
                self.now_ms,
            )
            if block is None:
                self.waiting_app = True
                return
            self.waiting_app = False
            if block.height != height or block.prev_hash != parent or (txs and not block.tx_hashes):
                self.anomalies.append("the application proposed an unusable block")
                return
            if not self._vote("pre-prepare", self.view, height, block.hash):
                return
            pp = self._sign(
                PrePrepare, view=self.view, height=height, block_hash=block.hash, block=block
            )
            self._out.append(ev.Broadcast(pp))
            self._accept(pp)

    def _on_app_ready(self) -> None:
        if not self.active:
            return
        heights = sorted(h for (v, h) in self.early if v == self.view)
        if heights:
            self._try_accept(heights[0])
        if self.waiting_app:
            self._try_propose()

    # ----------------------------------------------------------------------- checkpoints
    def _on_checkpoint(self, cp: Checkpoint) -> None:
        if cp.height <= self.stable_height or cp.height % self.cfg.checkpoint_interval:
            return
        mine = self.checkpoints.setdefault(cp.sender, {})
        if cp.height in mine:
            return
        mine[cp.height] = cp
        keep = self.cfg.watermark_window // self.cfg.checkpoint_interval + 2
        while len(mine) > keep:
            del mine[min(mine)]
        self._check_stable(cp.height)

    def _check_stable(self, height: int) -> None:
        by_hash: dict[str, list[Checkpoint]] = {}
        for table in self.checkpoints.values():
            cp = table.get(height)
            if cp is not None:
                by_hash.setdefault(cp.block_hash, []).append(cp)
        for block_hash, proof in by_hash.items():
            if len(proof) < self.cfg.quorum:
                continue
            if height > self.committed_height:
                self._start_fetch(height, tuple(cp.sender for cp in proof))
            elif self.hashes.get(height) != block_hash:
                self.anomalies.append(f"a quorum checkpointed another block at {height}")
            else:
                self._make_stable(height, block_hash, tuple(sorted(proof, key=lambda c: c.sender)))
            return

    def _make_stable(
        self, height: int, block_hash: str, proof: tuple[Checkpoint, ...], resume: bool = True
    ) -> None:
        if height <= self.stable_height:
            return
        self.stable_height, self.stable_hash, self.stable_proof = height, block_hash, proof
        self.hashes[height] = block_hash
        self._persist(StableRecord(height, block_hash, proof))
        self._collect_garbage()
        if resume and self.active:
            self._try_accept(min((h for (v, h) in self.early if v == self.view), default=height))
            self._try_propose()

    def _drop_old_views(self) -> None:
        v = self.view
        self.votes = {k: x for k, x in self.votes.items() if k[1] >= v}
        self.prepares = {k: x for k, x in self.prepares.items() if k[0] >= v}
        self.commits = {k: x for k, x in self.commits.items() if k[0] >= v}
        self.rejected = {k for k in self.rejected if k[0] >= v}

    def _collect_garbage(self) -> None:
        """Forget everything at or below the stable checkpoint (it is final and provable)."""
        s = self.stable_height
        self._in_flight = None
        self.accepted = {h: p for h, p in self.accepted.items() if h > s}
        self.early = {k: p for k, p in self.early.items() if k[1] > s}
        self.prepared = {h: c for h, c in self.prepared.items() if h > s}
        self.ready = {h: v for h, v in self.ready.items() if h > s}
        self.votes = {k: v for k, v in self.votes.items() if k[2] > s}
        self.prepares = {k: v for k, v in self.prepares.items() if k[1] > s}
        self.commits = {k: v for k, v in self.commits.items() if k[1] > s}
        self.sent = {k: v for k, v in self.sent.items() if k[2] > s}
        self.rejected = {k for k in self.rejected if k[1] > s}
        self.old_blocks = {k: b for k, b in self.old_blocks.items() if k[0] > s}
        self.old_commits = {k: v for k, v in self.old_commits.items() if k[1] > s}
        keep = min(s, self.committed_height)
        self.hashes = {h: x for h, x in self.hashes.items() if h >= keep}
        for table in self.checkpoints.values():
            for h in [h for h in table if h <= s]:
                del table[h]

    # ------------------------------------------------------------- following older views
    def _learn_old_view(self, msg: PrePrepare | Commit) -> None:
        """Commit what the others commit in a view this replica has left, without voting.

        A replica whose view timer expired while the others saw progress asks alone for the
        next view; the others rightly do not follow (f + 1 must), so it waits outside their
        view, possibly for a long time. It must not vote there again (its VIEW-CHANGE may yet
        be part of a NEW-VIEW quorum), but it may learn: a quorum of COMMITs for (view, height,
        hash) is a commit certificate, the very proof state transfer accepts, and the block
        comes with the PRE-PREPARE. So it keeps its chain, its clients' commits and its
        checkpoints current at the others' pace instead of polling for blocks.
        """
        height = msg.height
        if not self.committed_height < height <= self.committed_height + self.cfg.watermark_window:
            return
        if msg.view < self.view - _FUTURE_VIEWS:
            return
        if isinstance(msg, PrePrepare):
            if msg.sender != self.cfg.primary(msg.view):
                return
            if not block_matches(msg.block, height, msg.block_hash):
                return
            if len(self.old_blocks) >= 2 * self.cfg.watermark_window:
                return
            self.old_blocks.setdefault((height, msg.block_hash), msg.block)
        else:
            if any(  # one COMMIT per sender, view and height (an equivocator's first)
                msg.sender in v and k[0] == msg.view and k[1] == height
                for k, v in self.old_commits.items()
            ):
                return
            self.old_commits.setdefault((msg.view, height, msg.block_hash), {})[msg.sender] = msg
        progressed = False
        while True:
            height = self.committed_height + 1
            found = self._old_certificate(height)
            if found is None:
                break
            block, certificate = found
            self._apply_commit(block, certificate)
            progressed = True
        if progressed:
            c = self.committed_height
            self.old_blocks = {k: b for k, b in self.old_blocks.items() if k[0] > c}
            self.old_commits = {k: v for k, v in self.old_commits.items() if k[1] > c}
            self._after_progress()

    def _old_certificate(self, height: int) -> tuple[Any, CommitCertificate] | None:
        """A block at `height` with a quorum of COMMITs of an older view, linked to our head."""
        for (view, h, block_hash), votes in self.old_commits.items():
            if h != height or len(votes) < self.cfg.quorum:
                continue
            block = self.old_blocks.get((height, block_hash))
            if block is None or block.prev_hash != self.hashes.get(height - 1):
                continue
            signatures = {sender: c.signature for sender, c in votes.items()}
            return block, CommitCertificate.build(height, view, block_hash, signatures)
        return None

    # ----------------------------------------------------------------------- view timer
    def _timeout(self) -> int:
        return self.cfg.view_timeout_ms << min(self.backoff, self.cfg.max_backoff_exponent)

    def _set_view_timer(self) -> None:
        self._out.append(ev.SetTimer(VIEW_TIMER, self._timeout()))

    def _arm_view_timer(self) -> None:
        """In a view, watch for progress on what this replica is waiting for right now."""
        if not self.active or self.snapshot is not None:
            return
        in_flight = self._waits_on_blocks()
        if not self.pending and not in_flight:
            return
        backlog = len(self.pending) + held_txs(self.app)
        self.snapshot = _Snapshot(
            self.committed_height, frozenset(self.pending), in_flight, backlog
        )
        self._set_view_timer()

    def _watch_heartbeat(self) -> None:
        """An idle backup whose host says a heartbeat block is owed (a deadline waits on the
        height) expects one: if no block commits within a view timeout, the primary is silent
        (crashed, or proposing nothing) and the view changes, as for a pending tx. Without this a
        dead primary on an idle chain was never replaced, and deadlines waited for the next tx."""
        if self.snapshot is not None or not self.active or self._waits_on_blocks():
            return
        if "no_heartbeat_watch" in self.bugs:
            return
        if self.app.heartbeat_due(self.committed_height + 1, self.now_ms):
            self.snapshot = _Snapshot(self.committed_height, frozenset(), False, 0, heartbeat=True)
            self._set_view_timer()

    def _waits_on_blocks(self) -> bool:
        """Is a block of this view above the committed height accepted or seen early?"""
        return any(h > self.committed_height for h in self.accepted) or any(
            v == self.view and h > self.committed_height for (v, h) in self.early
        )

    def _on_timer(self, timer_id: str) -> None:
        if timer_id == FETCH_TIMER:
            self._retry_fetch()
            return
        if timer_id != VIEW_TIMER:
            return
        if not self.active:
            # Changing view: move on only once a quorum has given up on the views below this one
            # too (PBFT liveness rule; counting VIEW-CHANGEs for this view or later ones, so a
            # replica that already moved further still counts), otherwise keep asking.
            target = self.view
            changing = sum(1 for vc in self.view_changes.values() if vc.view >= target)
            if changing >= self.cfg.quorum:
                self._start_view_change(target + 1)
            else:
                if self.my_vc is not None:
                    self._out.append(ev.Broadcast(self.my_vc))
                self._set_view_timer()
            return
        snap, self.snapshot = self.snapshot, None
        if snap is not None and self._stalled(snap):
            self._start_view_change(self.view + 1)
            return
        self._arm_view_timer()

    def _stalled(self, snap: _Snapshot) -> bool:
        """A whole timeout passed without the progress this replica was waiting for."""
        waiting = [t for t in snap.txs if t in self.pending]
        if self.committed_height == snap.committed_height and (
            snap.in_flight or waiting or snap.heartbeat
        ):
            return True
        # Blocks commit, and more txs were waiting than fit in one block: a tx left out is
        # queued behind others, not censored, and changing view would only slow everyone down.
        # That period is not judged; the next one, once the backlog fits in a block, is.
        # The backlog counts the txs the host still held back (admission, nonce gaps): under
        # load the core's own pending set can be small while thousands wait at this node, and
        # so at the primary (a lone backup used to ask for a view change here and leave).
        if snap.backlog > self.cfg.max_block_txs:
            return False
        # Other blocks commit, but a tx held a whole period ago is still not even proposed:
        # the primary is ignoring it (censorship).
        in_flight = self._in_flight_txs()
        return any(t not in in_flight for t in waiting)

    # ----------------------------------------------------------------------- view change
    def _start_view_change(self, view: int) -> None:
        if view <= self.view and not (view == self.view and self.active):
            return
        if view < self.view:
            return
        self.view, self.active = view, False
        self.backoff += 1
        self.snapshot = None
        self.new_view = None
        self.accepted = {}
        self._in_flight = None
        self.early = {k: p for k, p in self.early.items() if k[0] >= view}
        self.waiting_app = False
        prepared = tuple(self.prepared[h] for h in sorted(self.prepared))
        if "forget_prepared" in self.bugs:
            prepared = ()
        vc = self._sign(
            ViewChange,
            view=view,
            stable_height=self.stable_height,
            stable_hash=self.stable_hash,
            checkpoint_proof=self.stable_proof,
            prepared=prepared,
        )
        self.my_vc = vc
        self.view_changes[self.address] = vc
        self._persist(ViewChangeRecord(vc))
        self._out.append(ev.Broadcast(vc))
        self._set_view_timer()
        self._maybe_new_view()

    def _on_view_change(self, vc: ViewChange) -> None:
        if vc.view < self.view or (vc.view == self.view and self.active):
            # The sender is behind: hand it the NEW-VIEW that installed our view.
            # (One answer per request: the sender retries only on its own backed-off timer.)
            if self.active and self.new_view is not None:
                self._out.append(ev.Send(vc.sender, self.new_view))
            return
        old = self.view_changes.get(vc.sender)
        if old is not None and old.view >= vc.view:
            return
        if check_view_change(self.cfg, self.verifier, vc) is not None:
            return
        self.view_changes[vc.sender] = vc
        # Join a view change that f + 1 others started: at least one of them is honest.
        ahead = sorted(
            v.view for s, v in self.view_changes.items() if s != self.address and v.view > self.view
        )
        if len(ahead) >= self.cfg.f + 1:
            self._start_view_change(ahead[0])
        self._maybe_new_view()

    def _maybe_new_view(self) -> None:
        """As primary of the view being changed to, install it once a quorum asked for it."""
        if self.active or self.cfg.primary(self.view) != self.address:
            return
        vcs = sorted(
            (v for v in self.view_changes.values() if v.view == self.view), key=lambda v: v.sender
        )
        if len(vcs) < self.cfg.quorum:
            return
        mine = [v for v in vcs if v.sender == self.address]
        others = [v for v in vcs if v.sender != self.address]
        chosen = tuple(mine + others[: self.cfg.quorum - len(mine)])
        _anchor, chain = select_chain(self.cfg, chosen)
        pre_prepares = []
        for cert in chain:
            if not self._vote("pre-prepare", self.view, cert.height, cert.block_hash):
                self.anomalies.append("refused to re-propose a different block in NEW-VIEW")
                return
            pre_prepares.append(
                self._sign(
                    PrePrepare,
                    view=self.view,
                    height=cert.height,
                    block_hash=cert.block_hash,
                    block=cert.pre_prepare.block,
                )
            )
        nv = self._sign(
            NewView, view=self.view, view_changes=chosen, pre_prepares=tuple(pre_prepares)
        )
        self._persist(NewViewRecord(nv))
        self._out.append(ev.Broadcast(nv))
        self._install(nv)

    def _on_new_view(self, nv: NewView) -> None:
        if nv.view < self.view or (nv.view == self.view and self.active):
            return
        if check_new_view(self.cfg, self.verifier, nv) is not None:
            return
        self._persist(NewViewRecord(nv))
        self._install(nv)

    def _install(self, nv: NewView) -> None:
        """Enter view `nv.view`: adopt its checkpoint, accept its re-proposals, vote PREPARE."""
        if nv.view > self.view:
            self.backoff += 1  # jumped over views we never saw change
        self.view, self.active, self.new_view = nv.view, True, nv
        self.my_vc = None
        self.snapshot = None
        self.accepted = {}
        self._in_flight = None
        self.view_changes = {s: v for s, v in self.view_changes.items() if v.view > nv.view}
        self._drop_old_views()
        self.early = {k: p for k, p in self.early.items() if k[0] >= nv.view}
        self._out.append(ev.CancelTimer(VIEW_TIMER))
        anchor, _chain = select_chain(self.cfg, nv.view_changes)
        if anchor.stable_height > self.stable_height:
            s, s_hash, proof = anchor.stable_height, anchor.stable_hash, anchor.checkpoint_proof
            if s > self.committed_height:
                self._make_stable(s, s_hash, proof, resume=False)
                self._start_fetch(s, tuple(c.sender for c in proof))
            elif self.hashes.get(s) == s_hash:
                self._make_stable(s, s_hash, proof, resume=False)
            else:
                self.anomalies.append("NEW-VIEW checkpoint contradicts a committed block")
        for pp in nv.pre_prepares:
            if pp.height <= self.stable_height:
                continue
            if pp.height <= self.committed_height and self.hashes.get(pp.height) != pp.block_hash:
                self.anomalies.append(f"NEW-VIEW re-proposes another block at {pp.height}")
                continue
            self._accept(pp)
        if self.early:
            self._try_accept(min((h for (v, h) in self.early if v == self.view), default=0))
        for height in sorted(self.accepted):
            self._check_committed(height)
        self._try_propose()
        self._arm_view_timer()

    # -------------------------------------------------------------------- state transfer
    def _start_fetch(self, target: int, peers: tuple[str, ...]) -> None:
        if target <= self.committed_height or target <= self.fetch_target:
            return
        busy = self.fetch_target > self.committed_height
        self.fetch_target = target
        if busy:
            return  # a transfer is running (and retrying on its timer): just go further
        self.fetch_peers = tuple(p for p in peers if p != self.address)
        if not self.fetch_peers:
            self.fetch_peers = tuple(p for p in self.cfg.validators if p != self.address)
        self._request_blocks()

    def _request_blocks(self) -> None:
        self._out.append(ev.FetchBlocks(self.committed_height + 1, self.fetch_peers))
        self._out.append(ev.SetTimer(FETCH_TIMER, self.cfg.fetch_timeout_ms))

    def _retry_fetch(self) -> None:
        if self.fetch_target <= self.committed_height:
            return
        self.fetch_peers = self.fetch_peers[1:] + self.fetch_peers[:1]
        self._request_blocks()

    def _on_blocks_fetched(self, event: ev.BlocksFetched) -> None:
        if self.fetch_target <= self.committed_height:
            return
        progressed = False
        for block, cert in event.blocks:
            height = getattr(block, "height", None)
            if not isinstance(height, int) or height <= self.committed_height:
                continue
            if height != self.committed_height + 1 or not isinstance(cert, CommitCertificate):
                break
            if block.prev_hash != self.hashes.get(self.committed_height):
                break
            try:
                verify_certificate(
                    cert,
                    self.cfg.chain_id,
                    self.cfg.validators,
                    height=height,
                    block_hash=block.hash,
                )
            except InvalidBlock:
                break
            self._apply_commit(block, cert)
            progressed = True
        if not progressed:
            return
        self._after_progress()
        if self.fetch_target > self.committed_height:
            self._request_blocks()
        else:
            self._out.append(ev.CancelTimer(FETCH_TIMER))
            for height in sorted({h for t in self.checkpoints.values() for h in t}):
                if height <= self.committed_height:
                    self._check_stable(height)
