"""The miner: find runnable jobs, compute them exactly, commit, then reveal.

    miner = Miner(client, key, MinerConfig(workers=2))
    await miner.run(stop)          # until `stop` is set; then finishes or abandons its work

One loop long-polls `GET /work` (the open jobs the node assigns to this miner, oldest first, then
jobs it may steal; and jobs awaiting this miner's reveal), passing the height of the previous answer
so a job still being computed is listed again at most once per block. It asks for as many open jobs
as it has free workers plus a prefetch (`_prefetch`: deeper when jobs are quick), plus the jobs it
took and has not committed yet (the node still lists them), and for reveals only (`limit=0`) while
its workers and backlog are full, so a busy miner is woken by its reveals, not by every block; when
a worker frees up and the backlog runs low, the poll is restarted to ask for jobs. Up to `workers`
jobs are computed at once: inputs come with the poll's answer (`inline_bytes`: the node sends those
of the first jobs, up to `INLINE_BYTES`) or are downloaded (one `GET /work/tensors` brings the still
missing inputs of all the jobs started or prefetched after a poll), and are checked against their
hashes and cached; the kernel runs in a thread (`ledger.kernels.execute` releases the GIL inside
BLAS), and the worker slot is free again. Publishing never holds a slot: the commitment hides the
outputs, so the `commit_result` (replication ≥ 2, with a fresh 32-byte salt) goes out through the
`TxSender` while the outputs upload through the `Uploader` (outputs queued while an upload is in
flight share the next request); only the `reveal_result`, sent when the job's reveal phase starts,
waits for the upload. Replication 1 uploads, then sends a `submit_result` (it names the outputs).
Pruning lost commitments and refreshing the earnings run beside the poll loop, never in it; so does
announcing the miner to every node (at start and every `ANNOUNCE_EVERY_S`), so that all nodes assign
jobs among the same miners.

On `stop` the miner takes no new job, finishes the jobs it started and reveals what it committed
(so it is not slashed for a missing reveal), for at most `grace_s`; `abandon()` gives up at once.

`byzantine` is for tests only: `lie` reveals a wrong output (+1 in its first element); `copy`
computes nothing and tries to commit the commitment another miner already committed.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ledger import kernels
from ledger.errors import LedgerError
from ledger.identity import Keypair
from ledger.tensor import Tensor
from ledger.transactions import (
    COMMIT_RESULT,
    REVEAL_RESULT,
    SUBMIT_RESULT,
    commit_body,
    reveal_body,
    submit_body,
)
from miner.client import NodeClient
from miner.txsender import TxSender
from miner.uploader import Uploader

log = logging.getLogger("layerchain.miner")

BYZANTINE_MODES = ("lie", "copy")
TENSOR_CACHE = 512
#: Earnings are re-read this often (one request), and a commitment not in its reveal phase this
#: long after it was sent is checked (one request each): lost races are rare with assignment.
STATS_EVERY_S = 5.0
PRUNE_AFTER_S = 10.0
#: Every node is told this often that the miner works (nodes forget a miner after 10 s).
ANNOUNCE_EVERY_S = 5.0
#: Jobs of at most this many multiply-accumulates run on the event loop, not in a thread.
INLINE_MACS = 50_000
#: Open jobs asked for beyond the free workers, so a freed worker starts at once from the backlog:
#: enough for the workers to compute `PREFETCH_COVER_S` (about a poll's round trip) at the
#: measured time per job, at least `PREFETCH_MIN` (also the start, before any job was timed) and
#: at most `PREFETCH_MAX`. The node never lets another miner steal a job this deep in this
#: miner's queue, so slow jobs keep the prefetch short; tiny ones (microseconds each) would
#: otherwise cost a poll, an upload and a commitment tx per handful of jobs.
PREFETCH_MIN = 2
PREFETCH_MAX = 64
PREFETCH_COVER_S = 0.02
#: Weight of the newest job in the running mean of compute time per job.
JOB_TIME_WEIGHT = 0.2
#: Most tensors in one `GET /work/tensors` (the node's limit, api/routes/work.py MAX_TENSORS).
FETCH_MAX = 64
#: Input bytes a poll asks the node to send along with the jobs (`GET /work?inline_bytes=`):
#: the inputs of the first jobs then need no `GET /work/tensors`, one request less per poll.
INLINE_BYTES = 256 * 1024


@dataclass
class MinerConfig:
    """How a miner works."""

    workers: int = 2
    """Jobs computed at the same time."""
    poll_wait_s: float = 10.0
    """Long-poll duration of one `GET /work`."""
    grace_s: float = 30.0
    """After stop: how long to finish started jobs and pending reveals before abandoning them."""
    stats_file: Path | None = None
    """Where to write the miner's counters and on-chain earnings as JSON (updated as they move)."""
    byzantine: str | None = None
    """Test-only misbehaviour: `lie` or `copy`."""
    simulate_ms: int = 0
    """Benchmarks only: also sleep this long per job (stands in for heavy compute)."""


@dataclass
class _Committed:
    outputs: list[str]
    salt: str
    tensors: list[Tensor]
    uploaded: asyncio.Task[str] | None = None
    """The upload of the outputs, running beside the commitment (its result: the node that
    stored them); the reveal awaits it."""
    revealed: bool = False
    at: float = field(default_factory=time.monotonic)
    url: str = ""
    """The node holding the uploaded outputs (a reveal must go where its tensors are)."""


@dataclass
class MinerStats:
    """Local counters (what this process did); the chain's verdicts come from /accounts."""

    computed: int = 0
    committed: int = 0
    """Commitments sent (some lose the race: the job already had `replication` commitments)."""
    lost: int = 0
    """Commitments the chain did not count because the commit phase had closed."""
    submitted: int = 0
    revealed: int = 0
    refused: int = 0
    failed: int = 0
    abandoned: int = 0
    seconds_computing: float = 0.0
    chain: dict[str, Any] = field(default_factory=dict)
    """The chain's record of this miner: balance, accepted, rejected, earned, slashed, ..."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "computed": self.computed,
            "committed": self.committed,
            "lost": self.lost,
            "submitted": self.submitted,
            "revealed": self.revealed,
            "refused": self.refused,
            "failed": self.failed,
            "abandoned": self.abandoned,
            "seconds_computing": round(self.seconds_computing, 3),
            "chain": self.chain,
        }


class Miner:
    """One miner identity working against one or more nodes (see the module docstring)."""

    def __init__(self, client: NodeClient, key: Keypair, config: MinerConfig | None = None) -> None:
        self.client = client
        self.key = key
        self.address = key.address
        self.config = config or MinerConfig()
        if self.config.byzantine not in (None, *BYZANTINE_MODES):
            raise LedgerError(f"byzantine mode must be one of {BYZANTINE_MODES}")
        if self.config.workers < 1:
            raise LedgerError("a miner needs at least one worker")
        self.stats = MinerStats()
        self.sender: TxSender | None = None
        self.uploader = Uploader(client)
        self._taken: set[str] = set()
        self._unsent: set[str] = set()
        """Jobs taken whose commitment (or submission) is not sent: the node still lists them."""
        self._committed: dict[str, _Committed] = {}
        self._active: set[asyncio.Task[None]] = set()
        self._backlog: list[dict[str, Any]] = []
        self._cache: OrderedDict[str, Tensor] = OrderedDict()
        self._fetching: dict[str, asyncio.Task[list[Tensor]]] = {}
        """tensor hash -> the download bringing it (one request for the missing inputs of all
        the jobs a poll handed out)."""
        self._stopping = False
        self._abandon = asyncio.Event()
        self._last_stats = 0.0
        self._last_prune = 0.0
        self._last_announce = 0.0
        self._job_s: float | None = None
        """Running mean of the compute time per job (seconds; None before the first job)."""
        self._want_work = asyncio.Event()
        """Set when a worker freed up and the backlog ran low: restart a reveals-only poll."""

    # ------------------------------------------------------------------------------ lifecycle

    async def run(self, stop: asyncio.Event) -> MinerStats:
        """Work until `stop` is set, then wind down (finish or, after `grace_s`, abandon)."""
        status = await self.client.status()
        self.sender = TxSender(self.client, self.key, status["chain_id"])
        self.sender.start()
        self.uploader.start()
        log.info(
            "miner %s… working for %s (chain %s)",
            self.address[:16],
            self.client.url,
            status["chain_id"],
        )
        await self._announce()
        since = -1
        housekeeping = asyncio.create_task(self._housekeeping(stop), name="housekeeping")
        try:
            while not stop.is_set():
                limit = len(self._unsent) + self._free() + self._prefetch() if self._wanted() else 0
                self._want_work.clear()
                poll = asyncio.create_task(
                    self.client.work(
                        self.address,
                        self.config.poll_wait_s,
                        since,
                        limit=limit,
                        inline_bytes=INLINE_BYTES if limit else 0,
                        known=self._cache,
                    )
                )
                waits: set[asyncio.Task[Any]] = {poll, asyncio.create_task(stop.wait())}
                if limit == 0:
                    waits.add(asyncio.create_task(self._want_work.wait()))
                done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                for task in waits - {poll}:
                    task.cancel()
                if poll not in done:
                    poll.cancel()
                    if stop.is_set():
                        break
                    since = -1  # the backlog ran low: ask for jobs now, not at the next block
                    continue
                try:
                    work = poll.result()
                except LedgerError as exc:
                    log.warning("polling for work failed: %s; retrying", exc)
                    await asyncio.sleep(1.0)
                    since = -1
                    continue
                since = int(work["height"])
                for tensor in work["tensors"].values():  # verified by the client
                    self._remember(tensor)
                self._dispatch(work, replace_backlog=limit > 0)
            housekeeping.cancel()
            await self._wind_down()
        finally:
            housekeeping.cancel()
            await self._cancel_all()
            if self.sender is not None:
                await self.sender.stop()
            await self.uploader.stop()
            await self._refresh_stats(force=True)
        return self.stats

    async def _housekeeping(self, stop: asyncio.Event) -> None:
        """Refresh earnings and prune lost commitments beside the poll loop (they are requests
        that would otherwise delay the next poll, and with it every reveal)."""
        while not stop.is_set():
            try:
                await self._announce()
                await self._refresh_stats()
                await self._prune()
            except LedgerError as exc:
                log.debug("housekeeping: %s", exc)
            await asyncio.sleep(0.5)

    async def _announce(self) -> None:
        """Be known to every node, not only the one polled: each node assigns jobs among the
        miners it saw, and nodes that rank different miners hand the same job to too many."""
        now = time.monotonic()
        if now - self._last_announce >= ANNOUNCE_EVERY_S:
            self._last_announce = now
            await self.client.announce(self.address)

    def _free(self) -> int:
        return max(0, self.config.workers - self._busy())

    def _wanted(self) -> bool:
        """Does the backlog lack jobs for the free workers plus the prefetch?"""
        return not self._stopping and len(self._backlog) < self._free() + self._prefetch()

    def _prefetch(self) -> int:
        """Jobs to hold beyond the free workers: enough for `PREFETCH_COVER_S` of computing."""
        if self._job_s is None:
            return PREFETCH_MIN
        wanted = self.config.workers * PREFETCH_COVER_S / max(self._job_s, 1e-6)
        return max(PREFETCH_MIN, min(PREFETCH_MAX, int(wanted)))

    def abandon(self) -> None:
        """Give up started jobs and pending reveals now (a second Ctrl-C)."""
        self._abandon.set()

    async def _wind_down(self) -> None:
        """Finish the jobs in flight and reveal what was committed, within the grace period."""
        self._stopping = True
        deadline = time.monotonic() + self.config.grace_s
        since = -1
        while (self._active or self._unrevealed()) and not self._abandon.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            await self._prune(min_age_s=0.0)
            if self._unrevealed():
                try:
                    work = await self.client.work(self.address, min(1.0, remaining), since, limit=0)
                except LedgerError:
                    await asyncio.sleep(0.2)
                    continue
                since = int(work["height"])
                self._dispatch({"commit": [], "reveal": work["reveal"]})
            elif self._active:
                await asyncio.wait(set(self._active), timeout=min(0.5, remaining))
        left = len(self._active) + len(self._unrevealed())
        if left:
            self.stats.abandoned += left
            log.warning("abandoning %d unfinished job(s)", left)

    async def _cancel_all(self) -> None:
        for fetch in set(self._fetching.values()):
            fetch.cancel()
        for task in list(self._active):
            task.cancel()
        if self._active:
            await asyncio.gather(*self._active, return_exceptions=True)

    def _unrevealed(self) -> list[str]:
        return [j for j, c in self._committed.items() if not c.revealed]

    # ------------------------------------------------------------------------------ dispatch

    def _dispatch(self, work: dict[str, Any], replace_backlog: bool = True) -> None:
        for job_id in work["reveal"]:
            record = self._committed.get(job_id)
            if record is not None and not record.revealed:
                record.revealed = True
                self._spawn(self._reveal(job_id, record))
        if self._stopping:
            return
        stolen = set(work.get("stolen", ()))
        if replace_backlog:
            # The node's order: our assigned jobs oldest first, then jobs we may steal. A stolen
            # job is started now or dropped: waiting in the backlog, its owners would reach it.
            fresh = [j for j in work["commit"] if j["id"] not in self._taken]
            own = [j for j in fresh if j["id"] not in stolen]
            steal = [j for j in fresh if j["id"] in stolen]
            self._backlog = own + steal[: max(0, self._free() - len(own))]
        self._fill_workers()
        self._backlog = [j for j in self._backlog if j["id"] not in stolen]

    def _fill_workers(self) -> None:
        started: list[dict[str, Any]] = []
        while self._backlog and self._busy() < self.config.workers and not self._stopping:
            job = self._backlog.pop(0)
            if job["id"] in self._taken:
                continue
            self._taken.add(job["id"])
            self._unsent.add(job["id"])
            started.append(job)
            if self.config.byzantine == "copy" and job["replication"] > 1:
                self._spawn(self._copy(job), counts=True)
            else:
                self._spawn(self._work(job), counts=True)
        # One download for the inputs of the jobs just started and of the next ones (those are
        # prefetched while the workers compute); the workers find their inputs on the way.
        self._fetch(
            h
            for job in started + self._backlog[: self._prefetch()]
            if all(h is not None for h in job["input_hashes"])
            for h in job["input_hashes"]
        )
        if self._wanted():
            self._want_work.set()

    def _busy(self) -> int:
        return sum(1 for t in self._active if t.get_name() == "job")

    def _spawn(self, coro: Any, counts: bool = False) -> None:
        task = asyncio.create_task(coro, name="job" if counts else "tx")
        self._active.add(task)

        def done(t: asyncio.Task[None]) -> None:
            self._active.discard(t)
            if not t.cancelled() and t.exception() is not None:
                self.stats.failed += 1
                log.warning("job task failed: %s", t.exception())
            if counts:
                self._fill_workers()

        task.add_done_callback(done)

    # ------------------------------------------------------------------------------ jobs

    def _fetch(self, hashes: Iterable[str]) -> None:
        """Start downloading those of `hashes` neither cached nor already on their way, in as
        few requests as the node allows (each tensor checked against its hash)."""
        fresh = list(
            dict.fromkeys(h for h in hashes if h not in self._cache and not self._on_the_way(h))
        )
        for start in range(0, len(fresh), FETCH_MAX):
            names = fresh[start : start + FETCH_MAX]
            fetch = asyncio.create_task(self.client.get_tensors(names), name="fetch")
            for tensor_hash in names:
                self._fetching[tensor_hash] = fetch
            fetch.add_done_callback(functools.partial(self._fetched, names))

    def _on_the_way(self, tensor_hash: str) -> bool:
        """Is a download bringing this tensor? (A failed one may still be listed: its done
        callback runs after whoever saw it fail first.)"""
        fetch = self._fetching.get(tensor_hash)
        if fetch is None:
            return False
        return not fetch.done() or (not fetch.cancelled() and fetch.exception() is None)

    def _fetched(self, names: list[str], fetch: asyncio.Task[list[Tensor]]) -> None:
        for name in names:
            if self._fetching.get(name) is fetch:
                del self._fetching[name]
        if fetch.cancelled():
            return
        exc = fetch.exception()
        if exc is not None:  # the jobs waiting for it see the error and try on their own
            log.debug("downloading %d tensor(s) failed: %s", len(names), exc)
            return
        for tensor in fetch.result():
            self._remember(tensor)

    def _remember(self, tensor: Tensor) -> None:
        """Cache a tensor already checked against its hash (least recently used goes first)."""
        self._cache[tensor.hash] = tensor
        self._cache.move_to_end(tensor.hash)
        if len(self._cache) > TENSOR_CACHE:
            self._cache.popitem(last=False)

    async def _inputs(self, job: dict[str, Any]) -> list[Tensor]:
        """The job's input tensors: cached ones, and the rest from the download bringing them
        (started here if none is); if a shared download fails, the job's own missing inputs
        are downloaded once more on their own before the job gives up."""
        hashes: list[str | None] = job["input_hashes"]
        if any(h is None for h in hashes):
            raise LedgerError(f"job {job['id'][:16]}… lists an input that has not settled")
        wanted = [str(h) for h in hashes]
        got: dict[str, Tensor] = {}
        for attempt in range(2):
            for tensor_hash in wanted:
                if tensor_hash not in got and tensor_hash in self._cache:
                    got[tensor_hash] = self._cache[tensor_hash]
                    self._cache.move_to_end(tensor_hash)
            missing = [h for h in wanted if h not in got]
            if not missing:
                break
            self._fetch(missing)
            fetches = {id(self._fetching[h]): self._fetching[h] for h in missing}
            try:
                for fetch in fetches.values():
                    for tensor in await asyncio.shield(fetch):
                        got[tensor.hash] = tensor
            except LedgerError:
                if attempt:
                    raise
        return [got[h] for h in wanted]

    async def _work(self, job: dict[str, Any]) -> None:
        job_id = job["id"]
        published = False
        try:
            if job["kernel_version"] != kernels.KERNEL_VERSION:
                log.info("skipping job %s…: kernel %s", job_id[:16], job["kernel_version"])
                return
            published = await self._compute(job)
        finally:
            if not published:
                self._unsent.discard(job_id)

    async def _compute(self, job: dict[str, Any]) -> bool:
        """Compute a job in this worker slot; hand its publishing to a task of its own."""
        inputs = await self._inputs(job)
        started = time.monotonic()
        if int(job.get("macs", INLINE_MACS + 1)) <= INLINE_MACS:
            # A tiny job computes in microseconds: handing it to a thread and back cost ~2 ms.
            outputs = kernels.execute(job["op"], job["params"], inputs)
        else:
            outputs = await asyncio.to_thread(kernels.execute, job["op"], job["params"], inputs)
        if self.config.simulate_ms:
            await asyncio.sleep(self.config.simulate_ms / 1000)
        took = time.monotonic() - started
        self.stats.seconds_computing += took
        self._job_s = (
            took if self._job_s is None else self._job_s + JOB_TIME_WEIGHT * (took - self._job_s)
        )
        self.stats.computed += 1
        if self.config.byzantine == "lie":
            outputs = [_corrupt(outputs[0]), *outputs[1:]]
        # Uploading and committing are I/O: free the worker slot for the next computation.
        self._spawn(self._publish(job, outputs))
        return True

    async def _upload(self, outputs: list[Tensor]) -> str:
        """Store the outputs (batched with other jobs' by the uploader); the node that did."""
        return await self.uploader.upload(outputs)

    async def _publish(self, job: dict[str, Any], outputs: list[Tensor]) -> None:
        """Submit (r = 1: after the upload) or commit to a computed job's outputs (r ≥ 2: while
        they upload; the commitment names only their hashes, the reveal needs them stored)."""
        try:
            await self._publish_now(job, outputs)
        finally:
            self._unsent.discard(job["id"])

    async def _publish_now(self, job: dict[str, Any], outputs: list[Tensor]) -> None:
        job_id = job["id"]
        assert self.sender is not None
        if job["replication"] == 1:
            await self._upload(outputs)
            hashes = [t.hash for t in outputs]
            if await self._send(SUBMIT_RESULT, submit_body(job_id, hashes)):
                self.stats.submitted += 1
            return
        hashes = [t.hash for t in outputs]
        salt = secrets.token_hex(32)
        record = _Committed(hashes, salt, outputs)
        record.uploaded = asyncio.create_task(self._upload(outputs))
        self._committed[job_id] = record
        if not await self._send(COMMIT_RESULT, commit_body(job_id, self.address, hashes, salt)):
            del self._committed[job_id]
            self._taken.discard(job_id)  # refused: if it is offered again, it may be retried
            await asyncio.gather(record.uploaded, return_exceptions=True)
            return
        self.stats.committed += 1

    async def _reveal(self, job_id: str, record: _Committed) -> None:
        body = reveal_body(job_id, record.outputs, record.salt)
        if record.uploaded is not None:
            try:
                record.url = await record.uploaded
            except LedgerError as exc:  # the node died mid-upload: upload again below
                log.info("output upload for job %s… failed: %s", job_id[:16], exc)
                record.url = ""
        if record.url != self.client.url:  # failed over since: the new node needs the outputs
            record.url = await self._upload(record.tensors)
        if not await self._send(REVEAL_RESULT, body):
            # Typically a fail-over: the new node lacks our outputs. Upload them and try again.
            record.url = await self._upload(record.tensors)
            if not await self._send(REVEAL_RESULT, body):
                return
        self.stats.revealed += 1
        self._committed.pop(job_id, None)

    async def _send(self, tx_type: str, body: dict[str, Any]) -> bool:
        assert self.sender is not None
        try:
            await self.sender.send(tx_type, body)
        except LedgerError as exc:
            self.stats.refused += 1
            log.warning("%s for job %s… refused: %s", tx_type, body["job_id"][:16], exc)
            return False
        return True

    async def _copy(self, job: dict[str, Any]) -> None:
        """Byzantine `copy`: wait for someone else's commitment and commit the same value."""
        try:
            await self._copy_now(job)
        finally:
            self._unsent.discard(job["id"])

    async def _copy_now(self, job: dict[str, Any]) -> None:
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline:
            detail = await self.client.job(job["id"])
            if detail["status"] != "open":
                return
            for result in detail["results"]:
                if result["miner"] != self.address and result["commitment"]:
                    body = {"job_id": job["id"], "commitment": result["commitment"]}
                    if await self._send(COMMIT_RESULT, body):
                        self.stats.committed += 1
                    return
            await asyncio.sleep(0.02)

    async def _prune(self, min_age_s: float = PRUNE_AFTER_S) -> None:
        """Forget commitments the chain did not count (lost races) or jobs already final."""
        now = time.monotonic()
        if min_age_s > 0 and now - self._last_prune < min_age_s:
            return
        self._last_prune = now
        stale = [
            job_id
            for job_id, record in self._committed.items()
            if not record.revealed and now - record.at >= min_age_s
        ]
        for job_id in stale[:64]:
            try:
                job = await self.client.job(job_id)
            except LedgerError:
                return
            if job["status"] == "open":
                record = self._committed.get(job_id)
                if (
                    self.address in job["committed_miners"]
                    or record is None
                    or now - record.at < PRUNE_AFTER_S
                ):
                    continue  # waiting for the other replicas' (or for its own block)
                # Our commitment never reached the chain (its tx was lost with a node, or a twin
                # of it took its nonce): forget it, so the job is taken again when offered.
                self._committed.pop(job_id, None)
                self._taken.discard(job_id)
                self.stats.lost += 1
                continue
            if job["status"] != "revealing" or self.address not in job["committed_miners"]:
                record = self._committed.pop(job_id, None)
                if record is not None and not record.revealed:
                    self.stats.lost += 1

    # ------------------------------------------------------------------------------ earnings

    async def _refresh_stats(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_stats < STATS_EVERY_S:
            return
        self._last_stats = now
        try:
            account = await self.client.account(self.address)
        except LedgerError:
            return
        chain = {"balance": account["balance"], **(account.get("miner") or {})}
        if chain != self.stats.chain:
            self.stats.chain = chain
            log.info(
                "earned %s credits so far (accepted %s, rejected %s, slashed %s); balance %s",
                chain.get("earned", 0),
                chain.get("accepted", 0),
                chain.get("rejected", 0),
                chain.get("slashed", 0),
                chain["balance"],
            )
        if self.config.stats_file is not None:
            data = {"address": self.address, "node": self.client.url, **self.stats.to_dict()}
            tmp = self.config.stats_file.with_suffix(".tmp")
            tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
            tmp.replace(self.config.stats_file)


def _corrupt(tensor: Tensor) -> Tensor:
    """A plausible wrong output: same shape and scale, first element off by one."""
    data = np.array(tensor.data, copy=True)
    data.flat[0] += 1
    return Tensor(data, tensor.frac_bits)
