"""Subprocess helper for test_store.py: append blocks to a ledger forever, until killed."""

from __future__ import annotations

import sys

from ledger.harness import ChainHarness

if __name__ == "__main__":
    names = [f"acct-{i}" for i in range(100)]
    chain = ChainHarness(balances={n: 10**9 for n in names}, db_url=sys.argv[1])
    i = 0
    while True:
        txs = []
        for _ in range(300):
            txs.append(chain.transfer(names[i % 100], names[(i * 3 + 1) % 100], 1))
            i += 1
        chain.commit_block(txs)
