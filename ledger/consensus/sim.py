"""Deterministic simulation of a whole PBFT cluster on a virtual clock (TigerBeetle VOPR style).

Every choice — message delays, loss, duplication, reordering, partitions and their healing,
crashes and restarts (a restarted replica keeps only what it persisted, plus its block store),
clock skew, which replicas are Byzantine and how they lie — comes from one seed, so a failing run
replays exactly:

    python -m ledger.consensus.sim --seed 123 --n 4 --faults all
    python -m ledger.consensus.sim --seeds 10000 --faults all --jobs 2

Faults last `fault_ms` of virtual time; then the network becomes reliable, crashed replicas
restart and partitions heal (Byzantine replicas stay Byzantine). Checked on every run:

* agreement   no two honest replicas commit different blocks at one height
* validity    every committed tx was submitted by the client, and none is committed twice
* certificate every commit carries a quorum of valid COMMIT signatures, and chains to its parent
* durability  no honest replica signs two digests for one (phase, view, height), across crashes
* liveness    after faults stop, every honest replica reaches the target height and commits every
              tx submitted during the faults, within `bound_ms`
"""

from __future__ import annotations

import argparse
import hashlib
import heapq
import random
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ledger.certificate import COMMIT_KIND, CommitCertificate, commit_vote_payload, quorum_size
from ledger.consensus import events as ev
from ledger.consensus.byzantine import BYZANTINE_KINDS, Byzantine, CensoringApp
from ledger.consensus.config import ConsensusConfig
from ledger.consensus.messages import Commit as CommitMsg
from ledger.consensus.messages import NewView, Prepare, PrePrepare, Verifier
from ledger.consensus.replica import KNOWN_BUGS, Replica
from ledger.consensus.simapp import SimApp, SimBlock, make_tx
from ledger.consensus.wire import message_from_wire, message_to_wire
from ledger.encoding import digest, signing_bytes
from ledger.errors import EncodingError
from ledger.identity import Keypair

FAULT_KINDS = ("loss", "dup", "reorder", "partition", "crash", "skew", "byzantine")
CHAIN_ID = "layerchain-sim"
#: How often an idle host tells its replica the time (heartbeat runs; the node ticks every 100 ms).
TICK_MS = 50
_KEYS: dict[int, Keypair] = {}


def sim_key(i: int) -> Keypair:
    """Validator i's key: the same in every run, so runs differ only by their seed."""
    if i not in _KEYS:
        _KEYS[i] = Keypair.from_seed(hashlib.sha256(f"layerchain-sim-{i}".encode()).digest())
    return _KEYS[i]


def parse_faults(text: str) -> frozenset[str]:
    """'all', 'none' or a comma-separated subset of FAULT_KINDS."""
    if text in ("all", ""):
        return frozenset(FAULT_KINDS) if text == "all" else frozenset()
    if text == "none":
        return frozenset()
    kinds = frozenset(k.strip() for k in text.split(",") if k.strip())
    unknown = kinds - set(FAULT_KINDS)
    if unknown:
        raise ValueError(f"unknown faults {sorted(unknown)}; choose from {', '.join(FAULT_KINDS)}")
    return kinds


@dataclass(frozen=True)
class SimSpec:
    """Everything a run depends on. `command()` replays it."""

    seed: int
    n: int = 4
    faults: frozenset[str] = frozenset(FAULT_KINDS)
    bugs: frozenset[str] = frozenset()
    fault_ms: int = 1500
    bound_ms: int = 30_000
    extra_height: int = 3
    check_certificates: bool = True
    app_lag: bool = False
    """The app can only build/check height h once the host executed h - 1 (as the ledger's)."""
    heartbeat_ms: int = 0
    """> 0: the client stops at the heal and the app always owes a heartbeat block this long
    after its last commit (`SimApp`), so liveness after the heal rests on heartbeat blocks:
    proposed by the primary, expected by idle backups (a silent primary must be replaced)."""

    def command(self) -> str:
        faults = ",".join(sorted(self.faults)) or "none"
        cmd = f"python -m ledger.consensus.sim --seed {self.seed} --n {self.n} --faults {faults}"
        if self.bugs:
            cmd += f" --bugs {','.join(sorted(self.bugs))}"
        if self.fault_ms != SimSpec.fault_ms:
            cmd += f" --fault-ms {self.fault_ms}"
        if not self.check_certificates:
            cmd += " --no-cert-check"
        if self.app_lag:
            cmd += " --app-lag"
        if self.heartbeat_ms:
            cmd += f" --heartbeat-ms {self.heartbeat_ms}"
        return cmd


@dataclass
class SimResult:
    spec: SimSpec
    violations: list[str]
    committed: int = 0
    views: int = 0
    messages: int = 0
    virtual_ms: int = 0
    byzantine: dict[int, list[str]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.violations


class _Node:
    """The simulated host of one validator: its durable state and its (maybe crashed) replica."""

    def __init__(self, index: int, key: Keypair) -> None:
        self.index = index
        self.key = key
        self.address = key.address
        self.replica: Replica | None = None
        self.byz: Byzantine | None = None
        self.records: list[Any] = []
        self.store: list[tuple[Any, CommitCertificate]] = []
        self.committed_txs: set[str] = set()
        self.timer_gen: dict[str, int] = {}
        self.up = True
        self.timer_skew = 1.0
        self.clock_skew = 1.0
        self.clock_offset = 0
        self.last_clock = -1
        self.last_commit_clock = 0
        """This host's clock when it last committed a block (or booted)."""

    def tx_committed(self, tx_hash: str) -> bool:
        return tx_hash in self.committed_txs


class Simulation:
    """One seeded run. Use `run()`; the result lists every invariant violated."""

    def __init__(self, spec: SimSpec) -> None:
        self.spec = spec
        self.rng = random.Random(spec.seed)
        n = spec.n
        self.keys = [sim_key(i) for i in range(n)]
        self.addresses = tuple(k.address for k in self.keys)
        self.index = {a: i for i, a in enumerate(self.addresses)}
        self.cfg = ConsensusConfig(
            chain_id=CHAIN_ID,
            validators=self.addresses,
            genesis_hash=digest({"sim-genesis": n}),
            checkpoint_interval=4,
            watermark_window=8,
            max_block_txs=3,
            view_timeout_ms=300,
            max_backoff_exponent=4,
            fetch_timeout_ms=300,
        )
        self.f = self.cfg.f
        self.verifier = Verifier()
        self.nodes = [_Node(i, k) for i, k in enumerate(self.keys)]
        self.queue: list[tuple[int, int, str, Any, Any]] = []
        self.seq = 0
        self.now = 0
        self.violations: list[str] = []
        self.messages = 0

        faults = spec.faults
        self.faulty = True
        self.loss = self.rng.uniform(0.02, 0.2) if "loss" in faults else 0.0
        self.dup = self.rng.uniform(0.02, 0.15) if "dup" in faults else 0.0
        self.max_delay = self.rng.randint(40, 200) if "reorder" in faults else 8
        self.groups: list[frozenset[int]] | None = None

        byz: dict[int, frozenset[str]] = {}
        if "byzantine" in faults and self.f > 0:
            count = self.rng.randint(1, self.f)
            for i in self.rng.sample(range(n), count):
                k = self.rng.randint(1, 3)
                byz[i] = frozenset(self.rng.sample(BYZANTINE_KINDS, k))
        self.byzantine = byz
        self.honest = [i for i in range(n) if i not in byz]

        for node in self.nodes:
            if "skew" in faults:
                node.timer_skew = self.rng.uniform(0.6, 1.8)
                node.clock_skew = self.rng.uniform(0.9, 1.1)
                node.clock_offset = self.rng.randint(0, 5000)
            self._boot(node)

        # Client: txs keep coming; the ones submitted during the faults must all commit.
        self.submitted: dict[str, int] = {}
        self.tx_bodies: dict[str, Any] = {}
        self.next_tx = 0
        self.early_txs: set[str] = set()
        self.decided: dict[int, str] = {}
        self.signed: dict[tuple[int, str, int, int], str] = {}
        self.target: int | None = None
        self.stopped: set[int] = set()
        """Honest validators crashed for good (heartbeat runs): left out of the liveness check."""

        self._schedule(0, "client", None, None)
        self._schedule(400, "retransmit", None, None)
        if spec.heartbeat_ms:  # an idle chain: only the hosts' ticks tell the replicas the time
            for i in range(n):
                self._schedule(TICK_MS + i, "tick", i, None)
        self._schedule(spec.fault_ms, "heal", None, None)
        if "partition" in faults:
            t = self.rng.randint(0, spec.fault_ms // 2)
            while t < spec.fault_ms:
                self._schedule(t, "partition", None, None)
                t += self.rng.randint(150, 700)
        if "crash" in faults:
            for _ in range(self.rng.randint(1, max(1, n // 2))):
                victim = self.rng.choice(self.honest)
                at = self.rng.randint(0, spec.fault_ms - 100)
                self._schedule(at, "crash", victim, None)
                self._schedule(
                    min(at + self.rng.randint(30, 700), spec.fault_ms), "restart", victim, None
                )

    # ------------------------------------------------------------------------ scheduling
    def _schedule(self, delay: int, kind: str, a: Any, b: Any) -> None:
        self.seq += 1
        heapq.heappush(self.queue, (self.now + max(0, delay), self.seq, kind, a, b))

    def _blocked(self, src: int | None, dst: int) -> bool:
        if self.groups is None or src is None:
            return False
        return not any(src in g and dst in g for g in self.groups)

    def _transmit(self, src: int | None, dst: int, kind: str, payload: Any) -> None:
        if self._blocked(src, dst):
            return
        if self.faulty and self.rng.random() < self.loss:
            return
        copies = 2 if self.faulty and self.rng.random() < self.dup else 1
        for _ in range(copies):
            delay = self.rng.randint(1, self.max_delay if self.faulty else 8)
            self._schedule(delay, kind, dst, payload)

    # ---------------------------------------------------------------------- replica hosts
    def _clock(self, node: _Node) -> int:
        return int(self.now * node.clock_skew) + node.clock_offset

    def _boot(self, node: _Node) -> None:
        executed = (lambda: len(node.store)) if self.spec.app_lag else None
        node.last_commit_clock = self._clock(node)
        app: Any = SimApp(
            node.tx_committed,
            executed=executed,
            heartbeat_ms=self.spec.heartbeat_ms,
            clock=lambda: self._clock(node),
            last_commit=lambda: node.last_commit_clock,
        )
        kinds = self.byzantine.get(node.index)
        if kinds is not None and "censor" in kinds:
            app = CensoringApp(app)
        replica = Replica(
            self.cfg,
            node.key,
            app,
            records=list(node.records),
            committed_height=len(node.store),
            committed_hashes={
                b.height: b.hash for b, _ in node.store[-self.cfg.watermark_window :]
            },
            verifier=self.verifier,
            bugs=frozenset() if kinds is not None else self.spec.bugs,
        )
        node.replica = replica
        node.up = True
        node.last_clock = -1
        if kinds is not None:
            peers = tuple(a for a in self.addresses if a != node.address)
            node.byz = Byzantine(replica, kinds, random.Random(self.rng.getrandbits(64)), peers)
        self._perform(node, replica.start())

    def _step(self, node: _Node, event: Any | None) -> None:
        """Tell the node's replica the time (its host's clock), then feed `event` (None: a tick,
        as the node's tick loop sends while idle)."""
        replica = node.replica
        if replica is None or not node.up:
            return
        clock = self._clock(node)
        if clock != node.last_clock:
            node.last_clock = clock
            self._perform(node, replica.step(ev.TimeAdvanced(clock)))
        if event is not None:
            self._perform(node, replica.step(event))

    def _perform(self, node: _Node, actions: list[Any], raw: bool = False) -> None:
        if node.byz is not None and not raw:
            actions = node.byz.transform(actions)
        executed = False
        for action in actions:
            if isinstance(action, ev.Persist):
                node.records.append(action.record)
            elif isinstance(action, ev.Broadcast):
                self._watch_signed(node, action.msg)
                for dst in range(self.spec.n):
                    if dst != node.index:
                        self._send(node.index, dst, action.msg)
            elif isinstance(action, ev.Send):
                self._watch_signed(node, action.msg)
                self._send(node.index, self.index[action.to], action.msg)
            elif isinstance(action, ev.SetTimer):
                gen = node.timer_gen.get(action.timer_id, 0) + 1
                node.timer_gen[action.timer_id] = gen
                delay = int(action.delay_ms * node.timer_skew)
                self._schedule(delay, "timer", node.index, (action.timer_id, gen))
            elif isinstance(action, ev.CancelTimer):
                node.timer_gen[action.timer_id] = node.timer_gen.get(action.timer_id, 0) + 1
            elif isinstance(action, ev.Commit):
                self._on_commit(node, action.block, action.certificate)
                executed = True
            elif isinstance(action, ev.FetchBlocks):
                if action.peers:
                    peer = self.index[action.peers[0]]
                    self._transmit(node.index, peer, "fetch", (node.index, action.from_height))
        if executed and self.spec.app_lag:
            self._step(node, ev.AppReady(len(node.store)))

    def _send(self, src: int, dst: int, msg: Any) -> None:
        self.messages += 1
        if isinstance(msg, dict):
            payload: Any = ("wire", msg)
        elif self.rng.random() < 0.02:  # exercise the codec now and then
            payload = ("wire", message_to_wire(msg, SimBlock.to_wire))
        else:
            payload = ("obj", msg)
        self._transmit(src, dst, "msg", payload)

    # ------------------------------------------------------------------------ invariants
    def _watch_signed(self, node: _Node, msg: Any) -> None:
        """Durability: an honest replica never signs two digests for one (phase, view, height)."""
        if node.index in self.byzantine:
            return
        votes: Iterable[Any]
        if isinstance(msg, NewView):
            votes = msg.pre_prepares
        elif isinstance(msg, PrePrepare | Prepare | CommitMsg):
            votes = (msg,)
        else:
            return
        for vote in votes:
            if vote.sender != node.address:
                continue
            key = (node.index, vote.KIND, vote.view, vote.height)
            first = self.signed.setdefault(key, vote.block_hash)
            if first != vote.block_hash:
                self._violate(
                    f"durability: replica {node.index} signed two {vote.KIND}s at "
                    f"view {vote.view} height {vote.height}"
                )

    def _violate(self, what: str) -> None:
        if what not in self.violations:
            self.violations.append(what)

    def _check_certificate(self, block: Any, cert: CommitCertificate) -> str | None:
        if cert.height != block.height or cert.block_hash != block.hash:
            return "certificate is for another block"
        data = signing_bytes(
            COMMIT_KIND, CHAIN_ID, commit_vote_payload(cert.height, cert.view, cert.block_hash)
        )
        signers = set()
        for address, signature in cert.signatures:
            if address not in self.index or address in signers:
                return "certificate has an unknown or repeated signer"
            if not self.verifier.check(address, data, signature):
                return "certificate has a bad signature"
            signers.add(address)
        if len(signers) < quorum_size(self.spec.n):
            return f"certificate has {len(signers)} signatures, below the quorum"
        return None

    def _on_commit(self, node: _Node, block: Any, cert: CommitCertificate) -> None:
        height = len(node.store) + 1
        honest = node.index not in self.byzantine
        if block.height != height:
            self._violate(
                f"chain: replica {node.index} committed height {block.height} after {height - 1}"
            )
        prev = node.store[-1][0].hash if node.store else self.cfg.genesis_hash
        if block.prev_hash != prev:
            self._violate(f"chain: replica {node.index} block {block.height} does not link")
        if honest and self.spec.check_certificates:
            problem = self._check_certificate(block, cert)
            if problem:
                self._violate(f"certificate: replica {node.index} height {block.height}: {problem}")
        node.store.append((block, cert))
        node.last_commit_clock = self._clock(node)
        for tx_hash in block.tx_hashes:
            if honest:
                if tx_hash not in self.submitted:
                    self._violate(f"validity: replica {node.index} committed an unknown tx")
                if tx_hash in node.committed_txs:
                    self._violate(f"validity: replica {node.index} committed a tx twice")
            node.committed_txs.add(tx_hash)
        if honest:
            first = self.decided.setdefault(block.height, block.hash)
            if first != block.hash:
                self._violate(f"agreement: two blocks committed at height {block.height}")
            self._maybe_stop_primary()

    def _maybe_stop_primary(self) -> None:
        """Heartbeat runs without Byzantine validators: once the faults healed and every client
        tx committed (the chain idles, only heartbeats move it), the primary crashes for good.
        No tx waits anywhere, so only the heartbeat the others' hosts say is owed can tell them
        to change view; the liveness target moves past this point."""
        if not self.spec.heartbeat_ms or self.byzantine or self.faulty or self.stopped:
            return
        up = [self.nodes[i] for i in self.honest if self.nodes[i].up]
        if not all(set(self.submitted) <= node.committed_txs for node in up):
            return
        view, primary = max((n.replica.view, n.replica.primary) for n in up if n.replica)
        victim = self.index[primary]
        self.stopped.add(victim)
        self._schedule(1, "stop", victim, None)
        top = max(len(self.nodes[i].store) for i in self.honest)
        self.target = max(self.target or 0, top + self.spec.extra_height)

    def _live(self) -> bool:
        if self.target is None:
            return False
        for i in self._running():
            node = self.nodes[i]
            if len(node.store) < self.target or not self.early_txs <= node.committed_txs:
                return False
        return True

    def _running(self) -> list[int]:
        """The honest validators the liveness check waits for (not those stopped for good)."""
        return [i for i in self.honest if i not in self.stopped]

    # --------------------------------------------------------------------------- events
    def run(self) -> SimResult:
        deadline = self.spec.fault_ms + self.spec.bound_ms
        while self.queue:
            t, _seq, kind, a, b = heapq.heappop(self.queue)
            if t > deadline:
                break
            self.now = t
            self._handle(kind, a, b)
            if self.target is not None and kind in ("msg", "fetched", "timer") and self._live():
                break
        else:
            self._violate("liveness: the simulation ran out of events")
        if not self._live():
            heights = [len(self.nodes[i].store) for i in self._running()]
            self._violate(
                f"liveness: honest heights {heights} (target {self.target}) after "
                f"{self.spec.bound_ms} ms without faults"
            )
        for i in self.honest:
            replica = self.nodes[i].replica
            if replica is not None and replica.anomalies:
                self._violate(f"anomaly at replica {i}: {replica.anomalies[0]}")
        replicas = [self.nodes[i].replica for i in self.honest]
        views = max((r.view for r in replicas if r is not None), default=0)
        return SimResult(
            self.spec,
            self.violations,
            committed=max(len(self.nodes[i].store) for i in self.honest),
            views=views,
            messages=self.messages,
            virtual_ms=self.now,
            byzantine={i: sorted(k) for i, k in self.byzantine.items()},
        )

    def _handle(self, kind: str, a: Any, b: Any) -> None:
        if kind == "msg":
            node = self.nodes[a]
            form, msg = b
            if form == "wire":
                try:
                    msg = message_from_wire(msg, SimBlock.from_wire)
                except EncodingError:
                    return
            lies = node.byz.hear(msg) if node.byz is not None and node.up else []
            self._step(node, ev.Received(msg))
            self._perform(node, lies, raw=True)
        elif kind == "timer":
            node = self.nodes[a]
            timer_id, gen = b
            if node.up and node.timer_gen.get(timer_id) == gen:
                self._step(node, ev.TimerFired(timer_id))
        elif kind == "client":
            if self.faulty or not self.spec.heartbeat_ms:  # heartbeat runs idle after the heal
                self._submit()
        elif kind == "tx":
            tx_hash = b
            self._step(self.nodes[a], ev.ClientTx(tx_hash, self.tx_bodies[tx_hash]))
        elif kind == "retransmit":
            self._retransmit()
        elif kind == "tick":
            self._step(self.nodes[a], None)
            self._schedule(TICK_MS, "tick", a, None)
        elif kind == "fetch":
            self._serve_fetch(a, b)
        elif kind == "fetched":
            self._step(self.nodes[a], b)
        elif kind == "partition":
            if self.faulty:
                order = list(range(self.spec.n))
                self.rng.shuffle(order)
                cut = self.rng.randint(1, self.spec.n - 1)
                self.groups = [frozenset(order[:cut]), frozenset(order[cut:])]
        elif kind == "crash":
            node = self.nodes[a]
            if node.up and self.faulty:
                node.up = False
                node.replica = None
        elif kind == "stop":
            node = self.nodes[a]
            node.up = False
            node.replica = None
        elif kind == "restart":
            node = self.nodes[a]
            if not node.up:
                self._boot(node)
        elif kind == "heal":
            self.faulty = False
            self.groups = None
            for node in self.nodes:
                if not node.up:
                    self._boot(node)
            self.early_txs = set(self.submitted)
            top = max(len(self.nodes[i].store) for i in self.honest)
            self.target = top + self.spec.extra_height

    def _submit(self) -> None:
        """A burst of 1-3 txs to every validator (bursts put several heights in flight)."""
        for _ in range(self.rng.randint(1, 3)):
            tx_hash, body = make_tx(self.next_tx)
            self.submitted[tx_hash] = self.now
            self.tx_bodies[tx_hash] = body
            self.next_tx += 1
            for dst in range(self.spec.n):
                self._transmit(None, dst, "tx", tx_hash)
        self._schedule(self.rng.randint(40, 220), "client", None, None)

    def _retransmit(self) -> None:
        """PBFT clients re-broadcast a request until f + 1 replicas report it committed."""
        for tx_hash in self.submitted:
            done = sum(1 for i in self.honest if tx_hash in self.nodes[i].committed_txs)
            if done < self.f + 1:
                for dst in range(self.spec.n):
                    self._transmit(None, dst, "tx", tx_hash)
        self._schedule(400, "retransmit", None, None)

    def _serve_fetch(self, server: int, request: tuple[int, int]) -> None:
        requester, from_height = request
        node = self.nodes[server]
        if not node.up:
            return
        blocks = tuple(node.store[from_height - 1 : from_height - 1 + 16])
        if node.byz is not None and blocks:
            # A Byzantine peer answers with a certificate stripped of its signatures.
            block, cert = blocks[0]
            blocks = ((block, CommitCertificate(cert.height, cert.view, cert.block_hash, ())),)
        answer = ev.BlocksFetched(blocks, node.address)
        self._transmit(server, requester, "fetched", answer)


def run_seed(spec: SimSpec) -> SimResult:
    return Simulation(spec).run()


def _run_many(specs: list[SimSpec], jobs: int) -> Iterable[SimResult]:
    if jobs <= 1:
        yield from map(run_seed, specs)
        return
    import multiprocessing

    with multiprocessing.get_context("fork").Pool(jobs) as pool:
        yield from pool.imap_unordered(run_seed, specs, chunksize=16)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ledger.consensus.sim", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--seed", type=int, help="run exactly this seed")
    parser.add_argument("--seeds", type=int, default=100, help="run this many seeds")
    parser.add_argument("--start", type=int, default=0, help="first seed of --seeds")
    parser.add_argument("--n", type=int, default=4, help="validators (3f + 1)")
    parser.add_argument("--faults", default="all", help=f"all, none, or some of {FAULT_KINDS}")
    parser.add_argument("--bugs", default="", help=f"plant bugs: {sorted(KNOWN_BUGS)}")
    parser.add_argument("--fault-ms", type=int, default=SimSpec.fault_ms)
    parser.add_argument("--no-cert-check", action="store_true")
    parser.add_argument("--app-lag", action="store_true", help="app WAITs until h-1 executed")
    parser.add_argument(
        "--heartbeat-ms",
        type=int,
        default=0,
        help="idle after the heal; heartbeat blocks owed this long after each commit",
    )
    parser.add_argument("--jobs", type=int, default=1, help="worker processes")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    try:
        faults = parse_faults(args.faults)
    except ValueError as exc:
        parser.error(str(exc))
    bugs = frozenset(b for b in args.bugs.split(",") if b)
    if bugs - KNOWN_BUGS:
        parser.error(f"unknown bugs {sorted(bugs - KNOWN_BUGS)}")
    seeds = [args.seed] if args.seed is not None else range(args.start, args.start + args.seeds)
    specs = [
        SimSpec(
            s,
            args.n,
            faults,
            bugs,
            args.fault_ms,
            check_certificates=not args.no_cert_check,
            app_lag=args.app_lag,
            heartbeat_ms=args.heartbeat_ms,
        )
        for s in seeds
    ]
    started = time.perf_counter()
    failed = 0
    done = 0
    for result in _run_many(specs, args.jobs):
        done += 1
        if args.verbose or args.seed is not None:
            print(
                f"seed {result.spec.seed}: height {result.committed}, view {result.views}, "
                f"{result.messages} messages, {result.virtual_ms} virtual ms, "
                f"byzantine {result.byzantine}"
            )
        if not result.ok:
            failed += 1
            print(f"FAIL seed {result.spec.seed}: " + "; ".join(result.violations))
            print(f"  replay: {result.spec.command()}")
        if done % 1000 == 0 and args.seed is None:
            print(f"... {done} seeds, {failed} failing", file=sys.stderr, flush=True)
    elapsed = time.perf_counter() - started
    print(f"{done} seeds, {failed} failing, {elapsed:.1f} s ({1000 * elapsed / done:.1f} ms/seed)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
