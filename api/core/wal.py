"""The consensus write-ahead log: what the consensus core asked to persist, fsync'd before sending.

PBFT's safety across crashes rests on one promise: a validator never signs two different blocks for
one (view, height, phase). The core keeps that promise by emitting "persist" actions before the
messages that depend on them; this log makes them durable. Records are appended as

    <u32 length, little endian> <u32 CRC-32 of the payload> <payload: JSON>

and `flush()` fsyncs once for everything appended since the last flush (group commit), so a busy
node pays one fsync per batch of messages rather than one per message. On open, a torn or corrupt
tail (a crash in the middle of an append) is cut off: those records were never flushed, so nothing
that depends on them was ever sent.
"""

from __future__ import annotations

import json
import os
import struct
import zlib
from pathlib import Path
from typing import Any

from ledger.errors import StoreError

_HEADER = struct.Struct("<II")
MAX_RECORD = 64 << 20


class ConsensusWal:
    """An append-only, checksummed, fsync'd record log."""

    def __init__(self, path: Path, fsync: bool = True) -> None:
        self.path = path
        self.fsync = fsync
        path.parent.mkdir(parents=True, exist_ok=True)
        self.records: list[Any] = []
        self._load()
        self._file = open(path, "ab", buffering=0)  # noqa: SIM115 - lives as long as the node
        self._pending = 0

    def _load(self) -> None:
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        offset = 0
        while offset + _HEADER.size <= len(data):
            length, crc = _HEADER.unpack_from(data, offset)
            start, end = offset + _HEADER.size, offset + _HEADER.size + length
            if length > MAX_RECORD or end > len(data) or zlib.crc32(data[start:end]) != crc:
                break
            try:
                self.records.append(json.loads(data[start:end]))
            except ValueError:
                break
            offset = end
        if offset != len(data):
            # A torn tail from a crash mid-append: never flushed, so never acted upon.
            with open(self.path, "r+b") as handle:
                handle.truncate(offset)
                handle.flush()
                os.fsync(handle.fileno())

    def append(self, record: Any) -> None:
        """Queue `record`; it is durable only after the next `flush()`."""
        payload = json.dumps(record, separators=(",", ":")).encode()
        if len(payload) > MAX_RECORD:
            raise StoreError(f"consensus record of {len(payload)} bytes is too large to persist")
        self._file.write(_HEADER.pack(len(payload), zlib.crc32(payload)) + payload)
        self._pending += 1

    def flush(self) -> None:
        """Make every appended record durable (one fsync)."""
        if self._pending:
            if self.fsync:
                os.fsync(self._file.fileno())
            self._pending = 0

    def rewrite(self, records: list[Any]) -> None:
        """Replace the log by `records` atomically (compaction after a stable checkpoint)."""
        tmp = self.path.with_suffix(".tmp")
        with open(tmp, "wb") as handle:
            for record in records:
                payload = json.dumps(record, separators=(",", ":")).encode()
                handle.write(_HEADER.pack(len(payload), zlib.crc32(payload)) + payload)
            handle.flush()
            os.fsync(handle.fileno())
        self._file.close()
        os.replace(tmp, self.path)
        dir_fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        self._file = open(self.path, "ab", buffering=0)  # noqa: SIM115
        self._pending = 0

    def close(self) -> None:
        self.flush()
        self._file.close()
