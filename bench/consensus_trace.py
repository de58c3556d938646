"""Where a light-load tx's commit latency goes: merges the nodes' `LAYERCHAIN_TRACE` files.

Used by `python -m bench.consensus --trace`. Every node appends `<monotonic ns> <event> k=v ...`
lines (api/core/trace.py); the load generator records, per sample, the node it submitted to,
the tx hash, and the monotonic time of the submit and of the block event. This module puts the
lines of all four nodes on one timeline per sample, finds the milestones of the tx's path and
prints the median gap between consecutive milestones.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Line:
    t: int
    node: int
    event: str
    fields: dict[str, str]


def load(paths: list[Path]) -> list[Line]:
    lines: list[Line] = []
    for node, path in enumerate(paths):
        if not path.exists():
            continue
        for raw in path.read_text().splitlines():
            parts = raw.split(" ")
            if len(parts) < 2 or not parts[0].isdigit():
                continue
            fields = dict(p.split("=", 1) for p in parts[2:] if "=" in p)
            lines.append(Line(int(parts[0]), node, parts[1], fields))
    lines.sort(key=lambda line: line.t)
    return lines


def _first(lines: list[Line], after: int, node: int | None, event: str, **want: str) -> Line | None:
    for line in lines:
        if line.t < after or (node is not None and line.node != node) or line.event != event:
            continue
        if all(line.fields.get(k) == v for k, v in want.items()):
            return line
    return None


def milestones(lines: list[Line], node: int, tx: str, t0: int, t1: int) -> list[tuple[str, int]]:
    """The path of one tx, as (milestone, time) pairs; empty when a milestone is missing."""
    window = [line for line in lines if t0 <= line.t <= t1 + 5_000_000]
    rest = _first(window, t0, node, "rest_tx", tx=tx[:12])
    if rest is None:
        return []
    pp = next(
        (
            line
            for line in window
            if line.event == "act" and line.fields.get("msg", "").startswith("PrePrepare@")
        ),
        None,
    )
    if pp is None:
        return []
    primary, height = pp.node, pp.fields["msg"].split("@")[1]
    marks = [("submit", t0), ("rest admitted", rest.t)]
    if primary != node:
        admit = _first(window, rest.t, primary, "admit", tx=tx[:12])
        if admit is None:
            return []
        marks.append(("admitted at primary", admit.t))
    marks.append(("PRE-PREPARE sent", pp.t))
    if primary != node:
        tag = f"PrePrepare@{height}/"
        got = next(
            (x for x in window if x.node == node and x.fields.get("ev", "").startswith(tag)),
            None,
        )
        prep = _first(window, pp.t, node, "act", act="Broadcast", msg=f"Prepare@{height}")
        if got is None or prep is None:
            return []
        marks += [("PRE-PREPARE stepped", got.t), ("PREPARE sent", prep.t)]
    vote = _first(window, pp.t, node, "act", act="Broadcast", msg=f"Commit@{height}")
    done = _first(window, pp.t, node, "act", act="Commit", msg=f"ConsensusBlock@{height}")
    stored = _first(window, pp.t, node, "commit_done", h=height)
    if vote is None or done is None or stored is None:
        return []
    marks += [
        ("prepared, COMMIT sent", vote.t),
        ("committed", done.t),
        ("executed + stored", stored.t),
        ("block event at client", t1),
    ]
    return marks


_ORDER = [
    "submit",
    "rest admitted",
    "admitted at primary",
    "PRE-PREPARE sent",
    "PRE-PREPARE stepped",
    "PREPARE sent",
    "prepared, COMMIT sent",
    "committed",
    "executed + stored",
    "block event at client",
]


def report(paths: list[Path], samples: list[tuple[int, str, int, int]], show: int = 2) -> None:
    """Print a few sample timelines and the median gap per hop over all samples."""
    lines = load(paths)
    gaps: dict[tuple[str, str], list[float]] = {}
    shown = 0
    for node, tx, t0, t1 in samples:
        marks = milestones(lines, node, tx, t0, t1)
        if not marks:
            continue
        if shown < show:
            shown += 1
            print(f"sample: tx {tx[:12]} to node{node}")
            for line in lines:
                if t0 <= line.t <= t1:
                    detail = " ".join(f"{k}={v}" for k, v in line.fields.items())
                    print(f"  {(line.t - t0) / 1e6:7.2f} ms node{line.node} {line.event} {detail}")
        for (a, ta), (b, tb) in zip(marks, marks[1:], strict=False):
            gaps.setdefault((a, b), []).append((tb - ta) / 1e6)
    print("median gap per hop (ms), over the samples that took that hop:")
    for key in sorted(gaps, key=lambda k: (_ORDER.index(k[0]), _ORDER.index(k[1]))):
        values = gaps[key]
        print(
            f"  {key[0]:>22} -> {key[1]:<24} {statistics.median(values):6.2f}"
            f"  (p90 {sorted(values)[int(0.9 * (len(values) - 1))]:6.2f}, n={len(values)})"
        )
