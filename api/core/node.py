"""One validator: the ledger, the tensor store, the consensus driver and the peer links, wired up.

The node is the PBFT core's host (`api.core.driver.Host`) and its `Application`: it builds and
checks blocks with the ledger's rules, stores and executes committed blocks in height order,
persists what the core signs before anything is sent, moves messages between the core and the
peers, replicates tensors, and answers the REST routes' questions.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import httpx

from api.core.chain import Chain, referenced_tensors
from api.core.config import Settings
from api.core.driver import ConsensusDriver
from api.core.errors import NodeBusy, NonceUsed
from api.core.events import EventHub
from api.core.heartbeat import Heartbeat
from api.core.mempool import Mempool, NonceQueue
from api.core.metrics import NodeMetrics
from api.core.partners import partner_wait
from api.core.peers import Peers
from api.core.trace import trace
from api.core.wal import ConsensusWal
from api.p2p.codec import ConsensusBlock, MessageCodec
from api.p2p.tensorpush import TensorPusher
from api.p2p.transport import nodelay_transport
from ledger.certificate import CommitCertificate
from ledger.consensus.app import OK, WAIT, Verdict, invalid
from ledger.consensus.config import ConsensusConfig
from ledger.consensus.events import AppReady, BlocksFetched, ClientTx, PeersAhead, Received
from ledger.consensus.records import StableRecord, compact
from ledger.consensus.replica import Replica
from ledger.errors import (
    EncodingError,
    GenesisError,
    InvalidTransaction,
    LedgerError,
    TensorError,
)
from ledger.execution import BlockResult
from ledger.genesis import Genesis
from ledger.identity import Keypair
from ledger.tensor import Tensor
from ledger.tensorstore import MissingTensor, TensorStore
from ledger.transactions import Tx, check_tx

log = logging.getLogger(__name__)

#: A tx whose nonce gap has not filled after this long is dropped (its sender resubmits).
GAP_TTL_S = 60.0
#: Gossiped txs admitted per turn of the event loop.
INBOX_CHUNK = 100
#: Rewrite the consensus WAL at a stable checkpoint once it holds more records than this.
WAL_COMPACT_AFTER = 64
#: A tx whose nonce is this far ahead of the sender's next nonce is refused at admission.
MAX_NONCE_AHEAD = 10_000


class NodeReplica(Replica):
    """The core, with client txs cheaper to absorb while a proposal waits for the application,
    and a log line saying why this validator asked for a view change."""

    def _stalled(self, snap: Any) -> bool:
        """The core's rule, with a log line saying why this validator asks for a view change."""
        waiting = [t for t in snap.txs if t in self.pending]
        stalled = super()._stalled(snap)
        if stalled:
            log.warning(
                "asking for a view change in view %d: committed %d (was %d), block in flight %s, "
                "%d txs waited a whole timeout (%d of them not in a proposed block; then %d txs "
                "in the core and a backlog of %d here; %d in the core now)",
                self.view,
                self.committed_height,
                snap.committed_height,
                snap.in_flight,
                len(waiting),
                sum(1 for t in waiting if t not in self._in_flight_txs()),
                len(snap.txs),
                snap.backlog,
                len(self.pending),
            )
        return stalled

    def drop_pending(self, tx_hashes: Iterable[str]) -> None:
        """Forget pending txs that can never be ordered: their sender's nonce has moved past
        theirs (another tx with the same nonce committed). Left in place, such a tx is counted
        as waiting by the view timer and by the work route for ever."""
        for tx_hash in tx_hashes:
            self.pending.pop(tx_hash, None)

    def _on_client_tx(self, tx_hash: str, tx: Any) -> None:
        # While a block is in flight and the next proposal waits for the application, the
        # commit of that block retries the proposal anyway; trying again for every arriving tx
        # would only rescan the pending set (quadratic under load).
        in_flight = any(h > self.committed_height for h in self.accepted)
        if self.waiting_app and in_flight and tx_hash not in self.pending:
            if len(self.pending) < self.cfg.max_pending_txs and not self.app.tx_committed(tx_hash):
                self.pending[tx_hash] = tx
                self._arm_view_timer()
            return
        super()._on_client_tx(tx_hash, tx)


class Node:
    """Everything one validator process runs."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.genesis = Genesis.load(settings.genesis_file)
        self.key = Keypair.load(settings.key_file)
        if self.key.address not in self.genesis.validator_addresses:
            raise GenesisError(f"key {settings.key_file} is not a validator of this genesis")
        self.name = settings.name or self.key.address[:12]
        self.metrics = NodeMetrics()
        self.events = EventHub()
        self.mempool = Mempool(settings.mempool_limit)
        self.peers = Peers(
            self.genesis,
            self.key,
            self.metrics,
            settings.p2p_batch_max,
            settings.p2p_timeout_s,
            stream=settings.p2p_stream,
        )
        self.urls = {v.address: v.url for v in self.genesis.validators}
        self.tensor_pusher = TensorPusher(self)
        """Sends tensors uploaded here on to the peers (off the critical path of a block)."""
        self.tensors = TensorStore(
            settings.tensor_dir,
            max_elements=self.genesis.params.max_tensor_elements,
            durable=False,  # content-addressed and replicated: refetched if damaged
        )
        self.chain = Chain(self.genesis, settings.database_url, self.tensors)
        self.codec = MessageCodec(self.genesis.chain_id, known=self.mempool.lookup)
        self.wal = ConsensusWal(settings.consensus_wal, fsync=settings.fsync)
        self.config = ConsensusConfig.from_genesis(
            self.genesis, view_timeout_ms=settings.view_timeout_ms
        )
        self.replica: NodeReplica | None = None
        self.driver: ConsensusDriver | None = None
        self.started = time.monotonic()
        self.halted: str | None = None
        """Set when a committed block cannot be executed: the node stops committing."""
        self.censored: set[str] = set()
        """Test-only (`/p2p/admin/censor`): senders whose txs this node leaves out as primary."""
        self.heartbeat = Heartbeat(
            settings.heartbeat_s, self.chain.state.jobs.values(), time.monotonic()
        )
        self._tasks: set[asyncio.Task[Any]] = set()
        self._loops: list[asyncio.Task[Any]] = []
        self._commit_queue: deque[tuple[ConsensusBlock, CommitCertificate]] = deque()
        self._blocked_on: set[str] = set()
        self._fetching: set[str] = set()
        self._admitted: dict[str, float] = {}
        self._client: httpx.AsyncClient | None = None
        self._inbox: asyncio.Queue[list[Any]] = asyncio.Queue()
        self._nudge: asyncio.TimerHandle | None = None
        self._queued = NonceQueue()
        self._records: list[Any] = []
        self._last_view = 0
        self._inbox_txs = 0
        self._inbox_quiet_since = 0.0

    # ------------------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Rebuild the core from the WAL and the store, then start timers, peers and loops."""
        records = [self.codec.decode_record(r) for r in self.wal.records]
        self._records = list(records)
        height = self.chain.height
        window = 2 * self.genesis.params.watermark_window + self.genesis.params.checkpoint_interval
        hashes = {
            r.header.height: r.hash
            for r in self.chain.store.list_blocks(before=height + 1, limit=window)
        }
        self.replica = NodeReplica(
            self.config,
            self.key,
            self,
            records=records,
            committed_height=height,
            committed_hashes=hashes,
        )
        self.driver = ConsensusDriver(self.replica, self, flush_in_thread=self.settings.fsync)
        self._client = httpx.AsyncClient(
            timeout=self.settings.p2p_timeout_s, transport=nodelay_transport()
        )
        self.peers.start()
        self.tensor_pusher.start()
        self._loops.append(asyncio.create_task(self._tick_loop(), name="consensus-tick"))
        self._loops.append(asyncio.create_task(self._sync_loop(), name="state-sync"))
        self._loops.append(asyncio.create_task(self._inbox_loop(), name="gossip-inbox"))
        self.metrics.height.set(height)
        self.driver.perform(self.replica.start())

    async def stop(self) -> None:
        for task in [*self._loops, *self._tasks]:
            task.cancel()
        for task in [*self._loops, *self._tasks]:
            try:
                await task
            except (asyncio.CancelledError, Exception):  # shutting down: errors are moot
                pass
        if self.driver is not None:
            self.driver.cancel_all()
        await self.tensor_pusher.close()
        await self.peers.close()
        if self._client is not None:
            await self._client.aclose()
        self.wal.close()
        self.chain.close()
        self.tensors.close()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _tick_loop(self) -> None:
        """Keeps the core's clock moving even when no message arrives."""
        period = self.settings.tick_ms / 1000
        while True:
            await asyncio.sleep(period)
            assert self.driver is not None and self.replica is not None
            self.driver.feed([])
            self._note_view(self.replica.view)

    def _note_view(self, view: int) -> None:
        if view > self._last_view:
            self.metrics.view_changes.inc(view - self._last_view)
            log.warning("node %s entered view %d", self.name, view)
            self._last_view = view
        self.metrics.view.set(view)

    async def _sync_loop(self) -> None:
        """Catch up when peers are ahead (in height or in view) and this node is not.

        The core starts state transfer by itself when it sees a stable checkpoint above its
        head; this loop covers an idle chain (no new checkpoint coming) and a node that was
        partitioned or restarted between checkpoints. A node left behind in an old view (it
        crashed or was cut off during a view change) fetches the NEW-VIEW that installed its
        peers' view and hands it to its core, which verifies it like any other.
        """
        last_height = -1
        while True:
            await asyncio.sleep(self.settings.sync_interval_s)
            if self.peers.isolated or self.replica is None or self.driver is None:
                continue
            self._expire_queued()
            try:
                last_height = await self._sync_once(last_height)
            except Exception:  # the loop must survive anything a peer sends
                log.exception("sync round failed")

    async def _peer_statuses(self) -> list[tuple[int, int, str]]:
        """(height, view, address) of every peer that answers."""
        assert self._client is not None
        client = self._client

        async def one(address: str, url: str) -> tuple[int, int, str] | None:
            try:
                response = await client.get(f"{url}/p2p/status")
                if response.status_code == 200:
                    body = response.json()
                    return int(body["height"]), int(body["view"]), address
            except (httpx.HTTPError, ValueError, KeyError, TypeError):
                pass
            return None

        answers = await asyncio.gather(*(one(a, link.url) for a, link in self.peers.links.items()))
        return [a for a in answers if a is not None]

    async def _sync_once(self, last_height: int) -> int:
        assert self.replica is not None and self.driver is not None and self._client is not None
        height = self.chain.height
        stuck = height == last_height
        peers = await self._peer_statuses()
        ahead_in_view = [p for p in peers if p[1] > self.replica.view]
        if len(ahead_in_view) >= self.genesis.f + 1:
            for _, _, address in sorted(ahead_in_view, reverse=True):
                try:
                    response = await self._client.get(f"{self.urls[address]}/p2p/new-view")
                    raw = response.json().get("new_view") if response.status_code == 200 else None
                    if raw is not None:
                        self.driver.feed([Received(self.codec.decode_message(raw))])
                        break
                except (httpx.HTTPError, ValueError, LedgerError):
                    continue
        if stuck:
            ahead = sorted(((h, a) for h, _, a in peers if h > height), reverse=True)
            if ahead:
                self.driver.feed([PeersAhead(ahead[0][0], tuple(a for _, a in ahead))])
        return height

    # ------------------------------------------------------------------------ host (driver)

    def persist(self, record: Any) -> None:
        self._records.append(record)
        if isinstance(record, StableRecord) and len(self._records) > WAL_COMPACT_AFTER:
            # A stable checkpoint made older votes obsolete: rewrite the log without them
            # (atomically, fsync'd; the new record is in it, so it is durable too).
            self._records = compact(self._records)
            self.wal.rewrite([self.codec.encode_record(r) for r in self._records])
            return
        self.wal.append(self.codec.encode_record(record))

    def flush(self) -> None:
        if trace.on:
            trace("fsync")
            self.wal.flush()
            trace("fsync_done")
            return
        if log.isEnabledFor(logging.DEBUG):
            started = time.perf_counter()
            self.wal.flush()
            log.debug("wal fsync %.1f ms", 1000 * (time.perf_counter() - started))
            return
        self.wal.flush()

    def send(self, to: str, msg: Any) -> None:
        self.peers.send_consensus(to, self.codec.encode_message(msg))

    def broadcast(self, msg: Any) -> None:
        self.peers.broadcast_consensus(self.codec.encode_message(msg))

    def commit(self, block: ConsensusBlock, certificate: CommitCertificate) -> None:
        """Queue a committed block; blocks are executed strictly in height order."""
        self._commit_queue.append((block, certificate))
        self._drain_commits()

    def _drain_commits(self) -> None:
        assert self.driver is not None
        while self._commit_queue and self.halted is None:
            block, certificate = self._commit_queue[0]
            if block.height <= self.chain.height:
                self._commit_queue.popleft()
                continue
            started = time.perf_counter()
            trace("commit", h=block.height)
            try:
                result = self.chain.commit(block.block, certificate, certificate_checked=True)
            except MissingTensor as exc:
                # A job of this block must be re-executed and an input is missing: fetch it,
                # then execute the block again (the state is untouched by the failed attempt).
                self._fetch_tensors([exc.hash], then_commit=True)
                return
            except LedgerError as exc:
                self.halted = f"cannot execute committed block {block.height}: {exc}"
                log.critical(self.halted)
                return
            self._commit_queue.popleft()
            elapsed = time.perf_counter() - started
            trace("commit_done", h=block.height)
            log.debug(
                "committed %d (%d txs) in %.1f ms",
                block.height,
                block.block.header.n_txs,
                1000 * elapsed,
            )
            self._after_commit(block, result, elapsed)
            self.driver.feed([AppReady(block.height)])

    def _after_commit(self, block: ConsensusBlock, result: BlockResult, elapsed: float) -> None:
        now = time.monotonic()
        hashes = block.tx_hashes
        for tx_hash in hashes:
            admitted = self._admitted.pop(tx_hash, None)
            if admitted is not None:
                self.metrics.commit_latency.observe(now - admitted)
        self.mempool.remove_committed(hashes)
        senders = {tx.sender for tx in block.block.txs}
        if len(self._queued):
            self._to_core([], senders=senders)
        self._drop_stale(senders)
        self.heartbeat.after_block(result.diff.get("jobs", {}), now)
        self.metrics.block_apply.observe(elapsed)
        self.metrics.blocks.inc()
        self.metrics.txs_committed.inc(len(hashes))
        self.metrics.height.set(block.height)
        header = block.block.header
        self.events.publish(
            {
                "height": header.height,
                "hash": header.hash,
                "time_ms": header.time_ms,
                "n_txs": header.n_txs,
                "view": header.view,
                "proposer": header.proposer,
                "state_root": result.state_root,
            }
        )

    def _drop_stale(self, senders: set[str]) -> None:
        """Drop pending txs of `senders` whose nonce the chain has used by now (see
        `NodeReplica.drop_pending`). A client re-signing after a failed submission can leave
        such a twin at a validator that admitted the first one; the primary refuses it."""
        replica = self.replica
        if replica is None or not replica.pending or not senders:
            return
        next_nonce = self.chain.next_nonce
        stale = [
            tx_hash
            for tx_hash, tx in replica.pending.items()
            if tx.sender in senders and tx.nonce < next_nonce(tx.sender)
        ]
        if stale:
            log.info("dropping %d pending txs whose nonces were used by other txs", len(stale))
            replica.drop_pending(stale)
            self.mempool.remove_committed(stale)
            for tx_hash in stale:
                self._admitted.pop(tx_hash, None)

    def fetch_blocks(self, from_height: int, peers: tuple[str, ...]) -> None:
        self._spawn(self._fetch_blocks(from_height, peers))

    async def _fetch_blocks(self, from_height: int, peers: tuple[str, ...]) -> None:
        """State transfer: ask peers in turn for committed blocks; feed the first good answer."""
        assert self._client is not None and self.driver is not None
        for peer in peers:
            url = self.urls.get(peer)
            if not url or self.peers.isolated:
                continue
            try:
                response = await self._client.get(f"{url}/p2p/blocks", params={"from": from_height})
                if response.status_code != 200:
                    continue
                items = response.json()["blocks"]
                pairs = tuple(
                    (
                        ConsensusBlock.from_dict(item["block"]),
                        CommitCertificate.from_dict(item["certificate"]),
                    )
                    for item in items
                )
            except (httpx.HTTPError, ValueError, KeyError, TypeError, LedgerError) as exc:
                log.info("state transfer from %s failed: %s", url, exc)
                continue
            if pairs:
                self.metrics.state_transfers.inc(len(pairs))
                self.driver.feed([BlocksFetched(pairs, peer)])
                return

    # ---------------------------------------------------------------- tensor replication

    def _fetch_tensors(self, hashes: list[str], then_commit: bool = False) -> None:
        todo = [h for h in hashes if h not in self._fetching]
        if then_commit:
            self._blocked_on.update(hashes)
        if todo:
            self._fetching.update(todo)
            self._spawn(self._fetch_tensors_task(todo))

    async def _fetch_tensors_task(self, hashes: list[str]) -> None:
        """Fetch tensors by hash from peers (each checked against its hash), then retry."""
        assert self._client is not None and self.driver is not None
        try:
            for tensor_hash in hashes:
                for attempt in range(20):
                    if self.tensors.has(tensor_hash) or await self._fetch_one(tensor_hash):
                        break
                    await asyncio.sleep(min(0.05 * 2**attempt, 1.0))
        finally:
            self._fetching.difference_update(hashes)
        if self._blocked_on and all(self.tensors.has(h) for h in self._blocked_on):
            self._blocked_on.clear()
            self._drain_commits()
        # Blocks that got WAIT for missing tensors are checked again on AppReady.
        self.driver.feed([AppReady(self.chain.height)])

    async def _fetch_one(self, tensor_hash: str) -> bool:
        assert self._client is not None
        for link in self.peers.reachable():
            try:
                response = await self._client.get(f"{link.url}/p2p/tensors/{tensor_hash}")
            except httpx.HTTPError:
                continue
            if response.status_code != 200:
                continue
            try:
                self.tensors.put_bytes(response.content, expected_hash=tensor_hash)
            except TensorError as exc:
                log.warning("peer %s served a bad tensor %s: %s", link.url, tensor_hash, exc)
                continue
            self.metrics.tensors_fetched.inc()
            return True
        return False

    # ---------------------------------------------------------------------- application

    def propose(
        self,
        height: int,
        view: int,
        prev_hash: str,
        txs: Sequence[tuple[str, Any]],
        proposer: str,
        time_ms: int,
    ) -> ConsensusBlock | None:
        candidates = [tx for _, tx in txs if tx.sender not in self.censored]
        wait = partner_wait(
            candidates,
            self.chain.state.jobs,
            lambda tx: self._admitted.get(tx.hash, 0.0),
            time.monotonic(),
            self.settings.partner_wait_s,
        )
        if wait > 0:
            self._nudge_later(wait)  # or sooner: a partner's arrival proposes again
            return None
        block = self.chain.propose(
            height,
            view,
            prev_hash,
            candidates,
            proposer,
            time_ms,
            self._held_since,
            self._tensor_ready,
        )
        log.debug(
            "propose h=%d v=%d: %d candidates -> %s (head %d)",
            height,
            view,
            len(txs),
            "WAIT" if block is None else f"{len(block.tx_hashes)} txs",
            self.chain.height,
        )
        if block is None and height == self.chain.height + 1:
            # The parent is executed but every pending tx is held back (a nonce gap, a tensor
            # being fetched): the core waits for AppReady, so ask again shortly.
            self._nudge_later()
        return block

    def _held_since(self, tx: Tx) -> float:
        """When the nonce-gap hold of `tx` started counting (see `order_for_block`).

        Not before the tx was admitted, and not while gossiped txs still wait for admission
        here: the missing nonce may well be among them, and under load that queue can take
        longer than the hold to drain.
        """
        if self._inbox_txs:
            return float("inf")
        return max(self._admitted.get(tx.hash, 0.0), self._inbox_quiet_since)

    def _tensor_ready(self, tensor_hash: str) -> bool:
        """May a proposal name this tensor? Only once this node holds it and, if it was
        uploaded here, a quorum does (`TensorPusher.replicating`): backups then check the block
        at once instead of fetching the tensor after the PRE-PREPARE."""
        return self.tensors.has(tensor_hash) and not self.tensor_pusher.replicating(tensor_hash)

    def tensors_replicated(self) -> None:
        """A tensor pushed from here reached a quorum: txs naming it may now be proposed."""
        if self.replica is not None and self.replica.waiting_app:
            self._nudge_later(0)

    def _nudge_later(self, delay_s: float = 0.05) -> None:
        """Feed the core `AppReady` in `delay_s` (or at the earlier nudge already set)."""
        loop = asyncio.get_running_loop()
        if self._nudge is not None:
            if self._nudge.when() <= loop.time() + delay_s:
                return
            self._nudge.cancel()

        def nudge() -> None:
            self._nudge = None
            if self.driver is not None:
                self.driver.feed([AppReady(self.chain.height)])

        self._nudge = loop.call_later(delay_s, nudge)

    def heartbeat_due(self, height: int, now_ms: int) -> bool:
        return height == self.chain.height + 1 and self.heartbeat.due(time.monotonic())

    def check(self, block: Any, view: int, proposer: str) -> Verdict:
        if not isinstance(block, ConsensusBlock):
            return invalid("not a ledger block")
        if block.height != self.chain.height + 1:
            return WAIT  # the header's app_hash can only be checked after executing the parent
        if not block.tx_hashes and not self.heartbeat.acceptable(time.monotonic()):
            return invalid("an empty block, while no heartbeat is due (api/core/heartbeat.py)")
        missing = self.chain.missing_tensors(block)
        if missing:
            self._fetch_tensors(missing)
            return WAIT
        try:
            self.chain.check(block, view, proposer)
        except LedgerError as exc:
            log.warning("rejecting block %s from %s: %s", block.height, proposer[:12], exc)
            return invalid(str(exc))
        return OK

    def tx_committed(self, tx_hash: str) -> bool:
        return self.chain.tx_committed(tx_hash)

    # -------------------------------------------------------------------- txs in

    def _admit(self, raw: Any, *, local: bool) -> tuple[Tx, str]:
        """Stateless checks (form, size, signature) and the nonce pre-check; queue the tx.

        Returns the tx and "accepted" / "pending" / "committed". A tx that arrives by REST must
        name only tensors this node holds (upload them first), so no validator is ever asked to
        vote for a block whose inputs nobody can serve.
        """
        tx = Tx.from_dict(raw)
        if tx.hash in self.chain.committed:
            return tx, "committed"
        if tx.hash in self.mempool:
            return tx, "pending"
        check_tx(tx, self.genesis.chain_id, self.genesis.params)
        self.chain.mark_verified(tx)
        committed_next = self.chain.next_nonce(tx.sender)
        if tx.nonce < committed_next:
            raise NonceUsed(
                f"nonce {tx.nonce} of {tx.sender[:16]}… is already used; its next nonce is "
                f"{committed_next} (checked at admission against the committed state)"
            )
        expected = self._queued.next_nonce(tx.sender, committed_next)
        if tx.nonce < expected or self._queued.holds(tx.sender, tx.nonce):
            raise NonceUsed(
                f"another tx of {tx.sender[:16]}… with nonce {tx.nonce} is already pending"
            )
        if tx.nonce > expected + MAX_NONCE_AHEAD:
            raise InvalidTransaction(
                f"nonce {tx.nonce} is more than {MAX_NONCE_AHEAD} ahead of the sender's next "
                f"nonce {expected}"
            )
        missing = [h for h in referenced_tensors(tx) if not self.tensors.has(h)]
        if missing:
            if local:
                raise TensorError(
                    f"tensor {missing[0]} named by the tx is not stored on this node; "
                    "upload it (PUT /api/v1/tensors) before submitting the tx"
                )
            self._fetch_tensors(missing)
        if not self.mempool.add(tx):
            raise InvalidTransaction("the mempool is full; retry later")
        self._admitted[tx.hash] = time.monotonic()
        return tx, "accepted"

    @property
    def backlog(self) -> int:
        """Admitted txs not yet handed to the core, plus gossiped ones not yet admitted."""
        return len(self._queued) + self._inbox_txs

    def held_txs(self) -> int:
        """For the core's view timer (`ledger.consensus.app.held_txs`): the backlog here."""
        return self.backlog

    def _check_busy(self) -> None:
        if self.backlog >= self.settings.admission_backlog:
            raise NodeBusy(
                f"{self.backlog} txs are waiting to be ordered (limit "
                f"{self.settings.admission_backlog}); retry in a moment"
            )

    def submit_tx(self, raw: Any, source: str = "rest") -> tuple[str, str]:
        """Admit one tx from a client, gossip it, and hand it to the core."""
        self._check_busy()
        try:
            tx, state = self._admit(raw, local=True)
        except LedgerError:
            self.metrics.txs_rejected.labels(source=source).inc()
            raise
        if state == "accepted":
            trace("rest_tx", tx=tx.hash[:12])
            log.debug("tx %s accepted from %s", tx.hash[:8], source)
            self.metrics.txs_accepted.labels(source=source).inc()
            self.peers.gossip_txs([tx.to_dict()])
            self._to_core([tx])
        return tx.hash, state

    def _to_core(self, txs: list[Tx], senders: set[str] | None = None) -> None:
        """Queue admitted txs and hand the core every tx whose turn has come (`NonceQueue`)."""
        for tx in txs:
            self._queued.add(tx)
        events: list[Any] = []
        for sender in {tx.sender for tx in txs} | (senders or set()):
            ready, stale = self._queued.release(sender, self.chain.next_nonce(sender))
            events.extend(ClientTx(tx.hash, tx) for tx in ready)
            for tx in stale:
                self._forget(tx)
        if events:
            assert self.driver is not None
            self.driver.feed(events)

    def _forget(self, tx: Tx) -> None:
        """Drop a tx that will never be ordered (stale nonce, waited too long for its turn)."""
        self.mempool.remove_committed([tx.hash])
        self._admitted.pop(tx.hash, None)

    def _expire_queued(self) -> None:
        now = time.monotonic()
        for tx in self._queued.expire(lambda t: now - self._admitted.get(t.hash, now) > GAP_TTL_S):
            self._forget(tx)

    def submit_txs(self, raws: list[Any], source: str = "rest") -> list[dict[str, Any]]:
        """Admit many txs; each gets its own verdict. One gossip batch, one core step batch."""
        results: list[dict[str, Any]] = []
        events: list[Any] = []
        gossip: list[Any] = []
        rejected = 0
        for raw in raws:
            try:
                tx, state = self._admit(raw, local=source != "gossip")
            except LedgerError as exc:
                rejected += 1
                tx_hash = None
                if isinstance(raw, dict):
                    try:
                        tx_hash = Tx.from_dict(raw).hash
                    except LedgerError:
                        pass
                results.append(
                    {"tx_hash": tx_hash, "accepted": False, "status": "rejected", "error": str(exc)}
                )
                continue
            results.append({"tx_hash": tx.hash, "accepted": True, "status": state, "error": None})
            if state == "accepted":
                events.append(tx)
                gossip.append(tx.to_dict())
        self.metrics.txs_accepted.labels(source=source).inc(len(events))
        self.metrics.txs_rejected.labels(source=source).inc(rejected)
        if events and trace.on:
            trace("admit", src=source, n=len(events), tx=events[0].hash[:12])
        if events and log.isEnabledFor(logging.DEBUG):
            log.debug("%d txs accepted from %s (%s…)", len(events), source, events[0].hash[:8])
        if gossip and source != "gossip":
            self.peers.gossip_txs(gossip)
        if events:
            self._to_core(events)
        return results

    async def submit_txs_async(self, raws: list[Any]) -> list[dict[str, Any]]:
        """`submit_txs` for a client batch, in chunks, letting consensus traffic in between."""
        self._check_busy()
        results: list[dict[str, Any]] = []
        for start in range(0, len(raws), INBOX_CHUNK):
            results.extend(self.submit_txs(raws[start : start + INBOX_CHUNK], source="rest"))
            await asyncio.sleep(0)
        return results

    def receive_batch(
        self, sender: str, body: bytes, *, signed: bool = True
    ) -> tuple[int, int, Callable[[], None]]:
        """A peer's batch: checks its form and queues its gossiped txs for admission
        (signature checks are the slow part); returns the counts of consensus messages and
        txs received, and `deliver`, which decodes the consensus messages and steps the core.

        The caller answers the peer first and calls `deliver` right after: the answer is an
        acknowledgement, not a protocol message, and the peer's lane sends nothing else to
        this node until it has it, so stepping (and fsyncing the votes that follow) inside the
        request would hold the peer's next message for that long. Persist-before-send is
        about this node's own outgoing messages, which `deliver` still persists first.

        An unsigned batch (`signed` False: the consensus lane, docs/PROTOCOL.md §8.1) may
        carry only consensus messages, each signed by its author.
        """
        try:
            raw = json.loads(body)
            consensus_raw = raw["consensus"]
            txs_raw = raw["txs"]
            if raw.get("to") != self.key.address or raw.get("from") != sender:
                raise EncodingError("the batch is addressed to another node or from another")
            if not isinstance(consensus_raw, list) or not isinstance(txs_raw, list):
                raise EncodingError("consensus and txs must be lists")
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise EncodingError(f"malformed p2p batch: {exc}") from exc
        if txs_raw and not signed:
            raise EncodingError("a batch carrying txs must be signed by its sender")
        trace("batch_in", frm=sender[:6], msgs=len(consensus_raw), txs=len(txs_raw))
        self.metrics.p2p_batches.inc()
        self.metrics.p2p_received.labels(kind="consensus").inc(len(consensus_raw))
        self.metrics.p2p_received.labels(kind="tx").inc(len(txs_raw))
        if txs_raw:
            self._inbox.put_nowait(txs_raw)
            self._inbox_txs += len(txs_raw)

        def deliver() -> None:
            if consensus_raw:
                self._deliver(sender, consensus_raw, signed)

        return len(consensus_raw), len(txs_raw), deliver

    def _deliver(self, sender: str, consensus_raw: list[Any], signed: bool) -> None:
        """Decode a peer's consensus messages (dropping malformed ones) and step the core.

        The core verifies every message's signature. In an unsigned batch the node checks
        them first, with the core's memoised `Verifier` (so the core's check is then a
        lookup), and drops the rest of the batch at the first bad one: a stranger posting
        forged messages costs this node one verification per request, as a signed batch would.
        """
        events: list[Any] = []
        assert self.replica is not None
        verifier, chain_id = self.replica.verifier, self.genesis.chain_id
        for item in consensus_raw:
            try:
                msg = self.codec.decode_message(item)
            except LedgerError as exc:
                log.info("dropping a malformed consensus message from %s: %s", sender[:12], exc)
                continue
            if not signed and not self._signed_by_a_validator(verifier, msg, chain_id):
                log.info("dropping a batch from %s: a message's signature is invalid", sender[:12])
                break
            events.append(Received(msg))
        if events and log.isEnabledFor(logging.DEBUG):
            log.debug(
                "from %s: %s",
                sender[:6],
                [(type(e.msg).__name__, getattr(e.msg, "height", None)) for e in events],
            )
        if events and self.driver is not None:
            self.driver.feed(events)

    def _signed_by_a_validator(self, verifier: Any, msg: Any, chain_id: str) -> bool:
        try:
            return msg.sender in self.urls and bool(verifier.message(msg, chain_id))
        except (LedgerError, ValueError, TypeError, AttributeError):
            return False

    async def _inbox_loop(self) -> None:
        """Admit gossiped txs, one peer batch at a time, yielding to other work in between."""
        while True:
            txs_raw = await self._inbox.get()
            for start in range(0, len(txs_raw), INBOX_CHUNK):
                chunk = txs_raw[start : start + INBOX_CHUNK]
                try:
                    self.submit_txs(chunk, source="gossip")
                except Exception:  # one bad batch must not stop admission
                    log.exception("admitting a gossiped batch failed")
                finally:
                    self._inbox_txs -= len(chunk)
                if not self._inbox_txs:
                    self._inbox_quiet_since = time.monotonic()
                # Signature checks are the slow part: let consensus messages in between chunks.
                await asyncio.sleep(0)

    # ----------------------------------------------------------------------- tensors

    def put_tensor(self, blob: bytes, expected: str | None) -> tuple[Tensor, bool]:
        tensor = Tensor.from_bytes(
            blob, expected_hash=expected, max_elements=self.genesis.params.max_tensor_elements
        )
        return tensor, self.tensors.put_verified(tensor.hash, blob)

    def put_tensors(
        self, blobs: Sequence[bytes], name: Callable[[int], str]
    ) -> list[tuple[Tensor, bool]]:
        """Parse and store several wire tensors, in one store transaction: (tensor, new) each.

        A blob that does not parse raises TensorError, `name(i)` saying which, once the ones
        before it are stored (content addressing makes a partial batch harmless)."""
        limit = self.genesis.params.max_tensor_elements
        parsed: list[tuple[Tensor, bytes]] = []
        failure: TensorError | None = None
        for i, blob in enumerate(blobs):
            try:
                parsed.append((Tensor.from_bytes(blob, max_elements=limit), blob))
            except TensorError as exc:
                failure = TensorError(f"{name(i)}: {exc}")
                failure.__cause__ = exc
                break
        created = self.tensors.put_verified_many([(t.hash, blob) for t, blob in parsed])
        if failure is not None:
            raise failure
        return [(t, new) for (t, _), new in zip(parsed, created, strict=True)]

    def tensor_bytes(self, tensor_hash: str) -> bytes | None:
        try:
            return self.tensors.get_bytes(tensor_hash)
        except MissingTensor:
            return None

    # ------------------------------------------------------------------------ queries

    def view_and_primary(self) -> tuple[int, str]:
        if self.replica is None:
            return 0, self.config.primary(0)
        return self.replica.view, self.replica.primary

    def status(self) -> dict[str, Any]:
        view, primary = self.view_and_primary()
        head = self.chain.head
        replica = self.replica
        return {
            "chain_id": self.genesis.chain_id,
            "genesis_hash": self.genesis.hash,
            "node_name": self.name,
            "node_address": self.key.address,
            "height": head.height,
            "last_block_hash": head.hash,
            "last_block_time_ms": head.time_ms,
            "view": view,
            "primary": primary,
            "mempool_txs": len(self.mempool),
            "peers_up": sum(1 for link in self.peers.reachable() if link.up),
            "validators": self.genesis.n,
            "syncing": bool(replica is not None and replica.fetch_target > head.height),
            "uptime_s": int(time.monotonic() - self.started),
        }

    def health(self) -> dict[str, Any]:
        database = self.chain.database_ok()
        loops_alive = bool(self._loops) and all(not t.done() for t in self._loops)
        consensus = loops_alive and self.halted is None and self.driver is not None
        problems = []
        if not database:
            problems.append("the ledger database does not answer")
        if not loops_alive:
            problems.append("the consensus loop is not running")
        if self.halted:
            problems.append(self.halted)
        return {
            "ok": database and consensus,
            "database": database,
            "consensus": consensus,
            "height": self.chain.height,
            "detail": "; ".join(problems) or "ok",
        }

    def refresh_gauges(self) -> None:
        view, _ = self.view_and_primary()
        self._note_view(view)
        self.metrics.height.set(self.chain.height)
        self.metrics.mempool.set(len(self.mempool))

    def find_tx(self, tx_hash: str) -> dict[str, Any] | None:
        record = self.chain.store.get_tx(tx_hash)
        if record is not None:
            header = self.chain.store.get_header(record.height)
            return {
                "tx_hash": tx_hash,
                "status": "committed",
                "tx": record.tx.to_dict(),
                "height": record.height,
                "index": record.index,
                "block_hash": header.hash if header else None,
                "receipt": {
                    "ok": record.receipt.ok,
                    "code": record.receipt.code,
                    "message": record.receipt.message,
                },
            }
        pending = self.mempool.get(tx_hash)
        if pending is not None:
            return {"tx_hash": tx_hash, "status": "pending", "tx": pending.to_dict()}
        return None
