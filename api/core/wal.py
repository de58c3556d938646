"""The consensus write-ahead log: what the consensus core asked to persist, fsync'd before sending.

PBFT's safety across crashes rests on one promise: a validator never signs two different blocks for
one (view, height, phase). The core keeps that promise by emitting "persist" actions before the
messages that depend on them; this log makes them durable. Records are appended as

    <u32 length, little endian> <u32 CRC-32 of the payload> <payload: JSON>

and `flush()` fsyncs once for everything appended since the last flush (group commit), so a busy
node pays one fsync per batch of messages rather than one per message. On open, a torn or corrupt
tail (a crash in the middle of an append) is cut off: those records were never flushed, so nothing
that depends on them was ever sent.

`flush()` may run in another thread while the event loop goes on appending (the node's consensus
driver fsyncs off the loop): it makes durable at least every record appended before it started,
and a record appended during it is left for the next flush, never counted as durable.
"""

from __future__ import annotations

import json
import os
import struct
import threading
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
        self._appended = 0
        """Records appended so far (written by the appending thread only)."""
        self._durable = 0
        """Of those, how many a finished fsync covers (written under `_lock`)."""
        self._lock = threading.Lock()
        """Held while fsyncing or replacing the file: a flush never fsyncs a closed file."""

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
        self._appended += 1

    @property
    def unflushed(self) -> int:
        """Records appended but not yet covered by a finished fsync."""
        return self._appended - self._durable

    def flush(self) -> None:
        """Make every record appended before this call durable (one fsync; thread-safe)."""
        with self._lock:
            target = self._appended
            if target > self._durable:
                if self.fsync:
                    os.fsync(self._file.fileno())
                self._durable = target

    def rewrite(self, records: list[Any]) -> None:
        """Replace the log by `records` atomically (compaction after a stable checkpoint)."""
        tmp = self.path.with_suffix(".tmp")
        with open(tmp, "wb") as handle:
            for record in records:
                payload = json.dumps(record, separators=(",", ":")).encode()
                handle.write(_HEADER.pack(len(payload), zlib.crc32(payload)) + payload)
            handle.flush()
            os.fsync(handle.fileno())
        with self._lock:
            self._file.close()
            os.replace(tmp, self.path)
            dir_fd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
            self._file = open(self.path, "ab", buffering=0)  # noqa: SIM115
            self._durable = self._appended

    def close(self) -> None:
        self.flush()
        self._file.close()
