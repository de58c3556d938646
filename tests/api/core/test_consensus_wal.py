"""The consensus write-ahead log survives restarts and cuts a torn tail."""

from __future__ import annotations

from pathlib import Path

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
