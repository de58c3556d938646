"""Latency trace: one line per hop of a tx's path, with a machine-wide monotonic timestamp.

Enabled by `LAYERCHAIN_TRACE=FILE` (a path; each node appends to its own file). Every line is

    <CLOCK_MONOTONIC ns> <event> <key=value ...>

`CLOCK_MONOTONIC` is one clock for every process of the machine, so the lines of four nodes
and of the load generator (`time.monotonic_ns()` too) can be merged into one timeline of a tx:
REST admission, the gossip POST to the primary, the proposal, each WAL fsync, each phase's
POSTs, the commit and its execution (see `bench/consensus.py --trace`). Off by default: a
disabled `trace()` is one attribute test.
"""

from __future__ import annotations

import os
import time
from typing import IO, Any

ENV = "LAYERCHAIN_TRACE"


class Trace:
    """Appends trace lines to a file (line-buffered), or does nothing when disabled."""

    def __init__(self, path: str | None) -> None:
        self._file: IO[str] | None = open(path, "a", buffering=1) if path else None  # noqa: SIM115

    @property
    def on(self) -> bool:
        return self._file is not None

    def __call__(self, event: str, **fields: Any) -> None:
        if self._file is None:
            return
        detail = " ".join(f"{k}={v}" for k, v in fields.items())
        self._file.write(f"{time.monotonic_ns()} {event} {detail}\n")

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def from_env() -> Trace:
    return Trace(os.environ.get(ENV) or None)


#: The process-wide trace (a node process traces into one file).
trace = from_env()


def describe(msg: Any) -> str:
    """A consensus message as `Kind@height` for trace lines."""
    height = getattr(msg, "height", None)
    return f"{type(msg).__name__}@{height}" if height is not None else type(msg).__name__
