"""Throughput of the pure PBFT core: blocks/s and messages per block, signatures included.

The whole cluster runs in this one process with a loss-free FIFO network and no faults, so the
figure is the cost of the state machine itself (signing, verifying, bookkeeping), not of any
transport. Each replica has its own signature verifier, as separate nodes would; a second run
shares one verifier (as the simulator does) to show how much of the cost is verification.

    python bench/consensus_core.py [--blocks 300] [--txs-per-block 10]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import deque
from pathlib import Path
from typing import Any

# bench/ledger.py is named like the package: keep this directory off the import path.
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path.pop(0)

from ledger.consensus import events as ev  # noqa: E402
from ledger.consensus.config import ConsensusConfig  # noqa: E402
from ledger.consensus.messages import Verifier  # noqa: E402
from ledger.consensus.replica import Replica  # noqa: E402
from ledger.consensus.sim import sim_key  # noqa: E402
from ledger.consensus.simapp import SimApp, make_tx  # noqa: E402
from ledger.encoding import digest  # noqa: E402
from ledger.identity import verify_raw  # noqa: E402


def run(n: int, blocks: int, per_block: int, shared_verifier: bool) -> dict[str, float]:
    keys = [sim_key(i) for i in range(n)]
    cfg = ConsensusConfig(
        chain_id="bench",
        validators=tuple(k.address for k in keys),
        genesis_hash=digest({"bench": n}),
        checkpoint_interval=16,
        watermark_window=32,
        max_block_txs=per_block,
    )
    index = {k.address: i for i, k in enumerate(keys)}
    committed: list[set[str]] = [set() for _ in range(n)]
    heights = [0] * n
    shared = Verifier()
    replicas = [
        Replica(
            cfg,
            keys[i],
            SimApp(committed[i].__contains__),
            verifier=shared if shared_verifier else Verifier(),
        )
        for i in range(n)
    ]
    txs = [make_tx(k) for k in range(blocks * per_block)]
    queue: deque[tuple[int, Any]] = deque()
    messages = 0

    def perform(i: int, actions: list[Any]) -> None:
        nonlocal messages
        for a in actions:
            if isinstance(a, ev.Broadcast):
                messages += n - 1
                queue.extend((j, a.msg) for j in range(n) if j != i)
            elif isinstance(a, ev.Send):
                messages += 1
                queue.append((index[a.to], a.msg))
            elif isinstance(a, ev.Commit):
                heights[i] = a.block.height
                committed[i].update(a.block.tx_hashes)

    started = time.perf_counter()
    # Clients hand every tx to every replica (backups first, so the primary's batches fill up
    # while its first block is in flight), then the network drains.
    for i in reversed(range(n)):
        for tx_hash, body in txs:
            perform(i, replicas[i].step(ev.ClientTx(tx_hash, body)))
    while queue:
        dst, msg = queue.popleft()
        perform(dst, replicas[dst].step(ev.Received(msg)))
    elapsed = time.perf_counter() - started
    top = min(heights)
    assert top > 0 and len({r.hashes.get(top) for r in replicas}) == 1
    verifiers = {id(r.verifier): r.verifier for r in replicas}.values()
    return {
        "verifies_per_block_per_replica": sum(v.misses for v in verifiers) / top / n,
        "blocks": top,
        "blocks_per_s": top / elapsed,
        "messages_per_block": messages / top,
        "ms_per_block_per_replica": 1000 * elapsed / top / n,
        "txs_per_s": len(committed[0]) / elapsed,
    }


def crypto_costs() -> tuple[float, float]:
    """Microseconds per Ed25519 sign and verify on this machine right now (for calibration)."""
    key = sim_key(0)
    rounds = 500
    started = time.perf_counter()
    signature = ""
    for i in range(rounds):
        signature = key.sign_raw(b"calibration %d" % i)
    signed = time.perf_counter()
    for _ in range(rounds):
        verify_raw(key.address, b"calibration %d" % (rounds - 1), signature)
    verified = time.perf_counter()
    return 1e6 * (signed - started) / rounds, 1e6 * (verified - signed) / rounds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--blocks", type=int, default=300)
    parser.add_argument("--txs-per-block", type=int, default=10)
    args = parser.parse_args()
    print(
        f"pure PBFT core, {args.blocks} blocks of {args.txs_per_block} txs, "
        "whole cluster on one core"
    )
    sign_us, verify_us = crypto_costs()
    print(f"Ed25519 on this machine now: sign {sign_us:.0f} us, verify {verify_us:.0f} us")
    header = (
        f"{'n':>3} {'verifier':>10} {'blocks/s':>9} {'txs/s':>8} {'msgs/block':>11} "
        f"{'verifies/block/replica':>23} {'ms/block/replica':>17}"
    )
    print(header)
    for n in (4, 7, 10):
        for shared in (False, True):
            r = run(n, args.blocks, args.txs_per_block, shared)
            print(
                f"{n:>3} {'shared' if shared else 'per-node':>10} {r['blocks_per_s']:>9.1f} "
                f"{r['txs_per_s']:>8.0f} {r['messages_per_block']:>11.1f} "
                f"{r['verifies_per_block_per_replica']:>23.1f} "
                f"{r['ms_per_block_per_replica']:>17.2f}"
            )


if __name__ == "__main__":
    main()
