"""`api.core.heartbeat`: which jobs keep heartbeats going, and when one is due or acceptable."""

from __future__ import annotations

from types import SimpleNamespace

from api.core.heartbeat import Heartbeat


def test_live_jobs_follow_the_blocks_and_time_decides_due_and_acceptable() -> None:
    jobs = [SimpleNamespace(id="a", status="open"), SimpleNamespace(id="b", status="settled")]
    beat = Heartbeat(1.0, jobs, now=100.0)  # type: ignore[arg-type]
    assert beat.live == {"a"}
    assert not beat.acceptable(100.4) and beat.acceptable(100.5)
    assert not beat.due(100.9) and beat.due(101.0)
    beat.after_block({"a": {"status": "revealing"}, "c": {"status": "waiting"}}, now=101.0)
    assert beat.live == {"a"} and not beat.due(101.5) and beat.due(102.0)
    beat.after_block({"a": {"status": "expired"}}, now=102.0)
    assert not beat.live and not beat.due(1e9) and not beat.acceptable(1e9)


def test_an_interval_of_zero_never_proposes_nor_accepts_an_empty_block() -> None:
    beat = Heartbeat(0.0, [SimpleNamespace(id="a", status="open")], now=0.0)  # type: ignore[list-item]
    assert not beat.due(1e9) and not beat.acceptable(1e9)
