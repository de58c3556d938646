"""The consensus write-ahead log survives restarts and cuts a torn tail."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from api.core.wal import ConsensusWal


def test_records_survive_reopen(tmp_path: Path) -> None:
    wal = ConsensusWal(tmp_path / "c.wal")
    wal.append({"kind": "prepare", "view": 0, "height": 1})
    wal.append({"kind": "commit", "view": 0, "height": 1})
    wal.flush()
    wal.close()
    again = ConsensusWal(tmp_path / "c.wal")
    assert again.records == [
        {"kind": "prepare", "view": 0, "height": 1},
        {"kind": "commit", "view": 0, "height": 1},
    ]


def test_torn_tail_is_cut_and_log_stays_appendable(tmp_path: Path) -> None:
    path = tmp_path / "c.wal"
    wal = ConsensusWal(path)
    wal.append({"n": 1})
    wal.append({"n": 2})
    wal.close()
    data = path.read_bytes()
    path.write_bytes(data[:-3])  # a crash in the middle of the second append
    again = ConsensusWal(path)
    assert again.records == [{"n": 1}]
    again.append({"n": 3})
    again.close()
    assert ConsensusWal(path).records == [{"n": 1}, {"n": 3}]


def test_corrupt_record_ends_the_log(tmp_path: Path) -> None:
    path = tmp_path / "c.wal"
    wal = ConsensusWal(path)
    wal.append({"n": 1})
    wal.append({"n": 2})
    wal.close()
    data = bytearray(path.read_bytes())
    data[-2] ^= 0xFF
    path.write_bytes(bytes(data))
    assert ConsensusWal(path).records == [{"n": 1}]


def test_rewrite_compacts(tmp_path: Path) -> None:
    wal = ConsensusWal(tmp_path / "c.wal")
    for n in range(10):
        wal.append({"n": n})
    wal.flush()
    wal.rewrite([{"n": 9}])
    wal.append({"n": 10})
    wal.close()
    assert ConsensusWal(tmp_path / "c.wal").records == [{"n": 9}, {"n": 10}]


def test_flush_counts_only_what_was_appended_before_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The driver fsyncs in a thread while the loop appends: a record appended while an fsync
    is in progress is not covered by it and must not be taken as durable."""
    wal = ConsensusWal(tmp_path / "wal")
    wal.append({"a": 1})
    wal.append({"a": 2})
    assert wal.unflushed == 2
    real_fsync = os.fsync

    def fsync_while_the_loop_appends(fd: int) -> None:
        wal.append({"a": 3})  # lands mid-fsync
        real_fsync(fd)

    monkeypatch.setattr("api.core.wal.os.fsync", fsync_while_the_loop_appends)
    wal.flush()
    assert wal.unflushed == 1
    monkeypatch.setattr("api.core.wal.os.fsync", real_fsync)
    wal.flush()
    assert wal.unflushed == 0
    wal.close()
    assert [r["a"] for r in ConsensusWal(tmp_path / "wal").records] == [1, 2, 3]
