"""The simulator: thousands of seeded fault schedules with zero violations, exact replay, and
proof that the checker fails when a bug is planted."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Iterator
from typing import Any

import pytest

from ledger.consensus.replica import KNOWN_BUGS
from ledger.consensus.sim import FAULT_KINDS, SimSpec, main, parse_faults, run_seed

CHUNKS = 10
PER_CHUNK = 210  # 2,100 schedules in all


def mixed_specs(start: int, count: int) -> Iterator[SimSpec]:
    """Mostly n = 4 with every fault kind at once; some n = 7, fault subsets, a lagging app."""
    for seed in range(start, start + count):
        r = random.Random(seed * 7919 + 1)
        n = 7 if r.random() < 0.1 else 4
        if r.random() < 0.6:
            faults = frozenset(FAULT_KINDS)
        else:
            faults = frozenset(r.sample(FAULT_KINDS, r.randint(1, len(FAULT_KINDS) - 1)))
        yield SimSpec(seed, n, faults, app_lag=r.random() < 0.15)


@pytest.mark.parametrize("chunk", range(CHUNKS))
def test_seeded_fault_schedules_keep_agreement_validity_and_liveness(chunk: int) -> None:
    failures = []
    for spec in mixed_specs(chunk * PER_CHUNK, PER_CHUNK):
        result = run_seed(spec)
        if not result.ok:
            failures.append(f"{'; '.join(result.violations)}\n  replay: {spec.command()}")
    assert not failures, "\n".join(failures)


HEARTBEAT_CHUNKS = 3
HEARTBEAT_PER_CHUNK = 150


@pytest.mark.parametrize("chunk", range(HEARTBEAT_CHUNKS))
def test_idle_chains_move_on_heartbeats_even_when_the_primary_dies(chunk: int) -> None:
    """Heartbeat runs: after the heal no client tx comes, so every height past the target is a
    heartbeat block; without Byzantine validators the primary also crashes for good once the
    chain idles, and the others must replace it on the heartbeat they are owed."""
    failures = []
    for spec in mixed_specs(chunk * HEARTBEAT_PER_CHUNK, HEARTBEAT_PER_CHUNK):
        spec = dataclasses.replace(spec, heartbeat_ms=200)
        result = run_seed(spec)
        if not result.ok:
            failures.append(f"{'; '.join(result.violations)}\n  replay: {spec.command()}")
    assert not failures, "\n".join(failures)


#: Seeds that failed while the core was being written (the bugs they exposed have their own
#: unit tests in test_pbft_replica.py); kept as extra schedules.
REGRESSION_SEEDS = (37, 115, 154, 452)


@pytest.mark.parametrize("seed", REGRESSION_SEEDS)
def test_regression_seeds(seed: int) -> None:
    result = run_seed(SimSpec(seed))
    assert result.ok, result.violations


def test_a_seed_replays_exactly() -> None:
    a, b = run_seed(SimSpec(2024)), run_seed(SimSpec(2024))
    assert (a.committed, a.views, a.messages, a.virtual_ms, a.byzantine) == (
        b.committed,
        b.views,
        b.messages,
        b.virtual_ms,
        b.byzantine,
    )
    c = run_seed(SimSpec(2025))
    assert (a.messages, a.virtual_ms) != (c.messages, c.virtual_ms)


def test_runs_commit_real_work_and_change_views() -> None:
    results = [run_seed(SimSpec(s)) for s in range(30)]
    assert all(r.committed >= 3 for r in results)
    assert sum(r.views > 0 for r in results) >= 10
    assert sum(bool(r.byzantine) for r in results) >= 20


#: Every planted bug must be caught within this many seeds of the default fault mix.
BUG_BOUND = 25


#: Runs in which a planted bug can show at all (default: the default fault mix).
BUG_RUNS: dict[str, dict[str, Any]] = {
    # Only an idle chain with a dead primary needs the heartbeat watch.
    "no_heartbeat_watch": {
        "heartbeat_ms": 200,
        "faults": frozenset(FAULT_KINDS) - {"byzantine"},
    },
}


def _first_failure(bugs: frozenset[str], *, check_certificates: bool = True) -> SimSpec | None:
    runs: dict[str, Any] = {}
    for bug in bugs:
        runs.update(BUG_RUNS.get(bug, {}))
    for seed in range(BUG_BOUND * 4 if not check_certificates else BUG_BOUND):
        spec = SimSpec(seed, bugs=bugs, check_certificates=check_certificates, **runs)
        if not run_seed(spec).ok:
            return spec
    return None


@pytest.mark.parametrize("bug", sorted(KNOWN_BUGS))
def test_the_simulator_catches_each_planted_bug(bug: str) -> None:
    spec = _first_failure(frozenset({bug}))
    assert spec is not None, f"planted bug {bug} went unnoticed for {BUG_BOUND} seeds"


def test_a_short_commit_quorum_is_caught_even_without_certificate_checks() -> None:
    """Lagging replicas then cannot verify the short certificates in state transfer: liveness."""
    spec = _first_failure(frozenset({"commit_quorum_2f"}), check_certificates=False)
    assert spec is not None


def test_forgetting_prepared_certificates_forks_the_chain() -> None:
    found = []
    for seed in range(60):
        result = run_seed(SimSpec(seed, bugs=frozenset({"forget_prepared"})))
        found += [v for v in result.violations if v.startswith("agreement")]
        if found:
            break
    assert found


def test_a_failing_seed_prints_the_command_that_replays_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    spec = _first_failure(frozenset({"no_persist"}))
    assert spec is not None
    status = main(["--seed", str(spec.seed), "--faults", "all", "--bugs", "no_persist"])
    out = capsys.readouterr().out
    assert status == 1
    assert f"FAIL seed {spec.seed}: durability" in out
    assert spec.command() in out
    assert main(["--seeds", "3", "--faults", "none"]) == 0


def test_fault_names_are_checked() -> None:
    assert parse_faults("all") == frozenset(FAULT_KINDS)
    assert parse_faults("none") == frozenset()
    assert parse_faults("loss,crash") == {"loss", "crash"}
    with pytest.raises(ValueError, match="unknown faults"):
        parse_faults("loss,meteor")


def test_a_failing_heartbeat_seed_replays_from_its_command(
    capsys: pytest.CaptureFixture[str],
) -> None:
    spec = _first_failure(frozenset({"no_heartbeat_watch"}))
    assert spec is not None and "--heartbeat-ms 200" in spec.command()
    argv = spec.command().split()[3:]  # after "python -m ledger.consensus.sim"
    assert main(argv) == 1
    out = capsys.readouterr().out
    assert f"FAIL seed {spec.seed}: liveness" in out and spec.command() in out
