"""A content-addressed tensor store on disk, keyed by tensor hash.

The node serves uploads and downloads from it, the state machine reads job inputs from it when it
re-executes a job, and `layerchain verify --reexecute` reads it. Every write is verified against
the hash it is stored under and every read is verified again (a flipped bit on disk is an error,
never a silent wrong input). Writes are atomic: a crash never leaves a half-written tensor under
a valid name.

Two places, one store: tensors up to `PACK_MAX_BYTES` on the wire live in one SQLite file,
`ROOT/pack.sqlite` (table `tensors(hash, blob)`, WAL journal); larger ones in files of their own,
`ROOT/ab/abcdef...` (the first two hex characters fan out the directory; written to a temporary
file, then renamed). Reads look in both, so a store written by an older version (files only)
still reads. Why a pack: a validator stores every job's inputs and outputs, mostly small (a
shard's activations, a bias), and creating a file costs 0.2–0.8 ms of kernel time on a busy
machine against ~0.02 ms for a row — per job, ~16 tensor writes across four validators.

A validator opens its store with `durable=False`: no fsync per tensor (SQLite `synchronous=
NORMAL`: a power loss may lose the last writes, never corrupt the pack; big files are not
fsync'd). Tensors are content-addressed and held by several validators, so one a power loss lost
or damaged is simply fetched again: such a store treats bytes that do not match their hash as
absent (it removes them and raises `MissingTensor`, which a node answers by fetching from its
peers). Offline tools keep the default (`synchronous=FULL`, files fsync'd): corruption is an error.
"""

from __future__ import annotations

import itertools
import os
import sqlite3
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

from ledger.encoding import HEX64
from ledger.errors import TensorError
from ledger.tensor import DEFAULT_MAX_ELEMENTS, Tensor


class MissingTensor(TensorError):
    """A tensor the caller needs is not in this store (fetch it from a peer and retry)."""

    def __init__(self, tensor_hash: str) -> None:
        super().__init__(f"tensor {tensor_hash} is not in the tensor store")
        self.hash = tensor_hash


def _check_hash(tensor_hash: str) -> str:
    if not isinstance(tensor_hash, str) or not HEX64.match(tensor_hash):
        raise TensorError("a tensor hash is 64 lowercase hex characters")
    return tensor_hash


#: Tensors up to this size (wire bytes) go into the pack; larger ones into files of their own.
PACK_MAX_BYTES = 1 << 20
PACK_FILE = "pack.sqlite"
KNOWN_MAX = 1 << 20
"""Most hashes `has` remembers (~100 MiB); past that the memo starts over."""
RECENT_BYTES = 32 << 20
"""Wire bytes of the most recently written or read pack tensors kept in memory: a node hands
the inputs of every listed job to its miners (`GET /work`), and those were mostly stored moments
before; a SELECT each was ~3 % of a validator's CPU at saturation."""
_tmp_names = itertools.count()


class TensorStore:
    """Content-addressed store of tensors in the wire format (ledger.tensor); see the module doc."""

    def __init__(
        self, root: str | Path, max_elements: int = DEFAULT_MAX_ELEMENTS, *, durable: bool = True
    ) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._root = str(self.root)
        self.max_elements = max_elements
        self.durable = durable
        """fsync every write; when False, a corrupt tensor reads as missing (module docstring)."""
        self._dirs: set[str] = set()
        """Fan-out directories known to exist (a mkdir per write cost ~0.1 ms)."""
        self._known: set[str] = set()
        """Hashes this store holds for certain (written or found here; a removal forgets one):
        `has` is asked several times per tensor (admission, proposal, block check)."""
        self._lock = threading.Lock()
        self._recent: OrderedDict[str, bytes] = OrderedDict()
        """hash -> wire bytes, least recently used first, at most `RECENT_BYTES` in all."""
        self._recent_bytes = 0
        self._db = sqlite3.connect(
            self.root / PACK_FILE, isolation_level=None, check_same_thread=False
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS tensors (hash TEXT PRIMARY KEY, blob BLOB NOT NULL)"
            " WITHOUT ROWID"
        )

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @property
    def pack_path(self) -> Path:
        """The SQLite file holding the small tensors."""
        return self.root / PACK_FILE

    def path(self, tensor_hash: str) -> Path:
        """Where the tensor with this hash lives as a file of its own (tensors larger than
        `PACK_MAX_BYTES`, or written by an older version), whether or not it is there."""
        _check_hash(tensor_hash)
        return self.root / tensor_hash[:2] / tensor_hash

    def _file(self, tensor_hash: str) -> str:
        return os.path.join(self._root, tensor_hash[:2], tensor_hash)

    def _packed(self, tensor_hash: str, recent: bool = False) -> bytes | None:
        """A pack tensor's bytes; with `recent`, from memory when they were lately written or
        read this way (verified reads always go to the disk, so damage there is seen)."""
        with self._lock:
            if recent:
                blob = self._recent.get(tensor_hash)
                if blob is not None:
                    self._recent.move_to_end(tensor_hash)
                    return blob
            row = self._db.execute(
                "SELECT blob FROM tensors WHERE hash = ?", (tensor_hash,)
            ).fetchone()
            if row is None:
                return None
            blob = bytes(row[0])
            if recent:
                self._keep(tensor_hash, blob)
        return blob

    def _keep(self, tensor_hash: str, blob: bytes) -> None:
        """Remember a pack tensor's bytes as most recently used (holding `_lock`)."""
        if tensor_hash in self._recent:
            return
        self._recent[tensor_hash] = blob
        self._recent_bytes += len(blob)
        while self._recent_bytes > RECENT_BYTES:
            _, dropped = self._recent.popitem(last=False)
            self._recent_bytes -= len(dropped)

    def has(self, tensor_hash: str) -> bool:
        if tensor_hash in self._known:
            return True
        _check_hash(tensor_hash)
        with self._lock:
            row = self._db.execute(
                "SELECT 1 FROM tensors WHERE hash = ?", (tensor_hash,)
            ).fetchone()
        found = row is not None or os.path.isfile(self._file(tensor_hash))
        if found:
            self._remember(tensor_hash)
        return found

    def _remember(self, tensor_hash: str) -> None:
        if len(self._known) >= KNOWN_MAX:
            self._known.clear()  # a cache: start over rather than grow without bound
        self._known.add(tensor_hash)

    def put(self, tensor: Tensor) -> str:
        """Store a tensor; return its hash. Storing one that is already there is a no-op."""
        tensor_hash = tensor.hash
        if not self.has(tensor_hash):
            self._write(tensor_hash, tensor.to_bytes())
        return tensor_hash

    def put_bytes(self, blob: bytes, expected_hash: str | None = None) -> str:
        """Store a wire-format tensor after parsing it and checking its hash; return the hash."""
        tensor = Tensor.from_bytes(
            blob, expected_hash=expected_hash, max_elements=self.max_elements
        )
        self.put_verified(tensor.hash, blob)
        return tensor.hash

    def put_verified(self, tensor_hash: str, blob: bytes) -> bool:
        """Store `blob`, which the caller parsed and found to hash to `tensor_hash` (its wire
        bytes, so they need not be serialised again); True when it was not stored before.
        One tensor of `put_verified_many`."""
        return self.put_verified_many([(tensor_hash, blob)])[0]

    def put_verified_many(self, items: Sequence[tuple[str, bytes]]) -> list[bool]:
        """`put_verified` for several tensors; a new-or-not answer per item, in order (a hash
        twice in `items`: new the first time only).

        Pack-sized tensors go straight to `INSERT OR IGNORE`, whose row count says whether each
        was new: one statement instead of `has`'s lookup, file check and then the insert (a
        validator stores every output once per miner upload and per push), all of a batch in
        one transaction (one commit instead of one per tensor: ~7 of the ~24 µs an insert
        cost). A copy already held as a file by an older version then also lands in the pack,
        same bytes: harmless."""
        created: list[bool] = [False] * len(items)
        packed: list[int] = []
        for i, (tensor_hash, blob) in enumerate(items):
            if tensor_hash in self._known:
                continue
            if len(blob) > PACK_MAX_BYTES:
                if not self.has(tensor_hash):
                    created[i] = self._write(_check_hash(tensor_hash), blob)
            else:
                _check_hash(tensor_hash)
                packed.append(i)
        if packed:
            new = self._insert_packed([items[i] for i in packed])
            for i, was_new in zip(packed, new, strict=True):
                created[i] = was_new
        return created

    def _insert_packed(self, items: Sequence[tuple[str, bytes]]) -> list[bool]:
        """INSERT OR IGNORE each (hash, wire bytes) into the pack in one transaction; whether
        each was new. New ones are also kept in memory (`_recent`) and remembered (`_known`)."""
        with self._lock:
            self._db.execute("BEGIN")
            try:
                created = [
                    self._db.execute(
                        "INSERT OR IGNORE INTO tensors (hash, blob) VALUES (?, ?)", item
                    ).rowcount
                    == 1
                    for item in items
                ]
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            for item, new in zip(items, created, strict=True):
                if new:
                    self._keep(*item)
        for tensor_hash, _ in items:
            self._remember(tensor_hash)
        return created

    def get_bytes(self, tensor_hash: str) -> bytes:
        """The wire-format bytes, verified against the hash (raises MissingTensor if absent)."""
        return self._read(tensor_hash)[0]

    def get_unverified_bytes(self, tensor_hash: str) -> bytes | None:
        """The stored bytes as they are, or None: for forwarding to a peer or a miner, which
        parses and hash-checks whatever it receives (checking here too would do that work
        twice). Pack tensors written or served lately come from memory (`RECENT_BYTES`)."""
        _check_hash(tensor_hash)
        blob = self._packed(tensor_hash, recent=True)
        if blob is not None:
            return blob
        try:
            with open(self._file(tensor_hash), "rb") as handle:
                return handle.read()
        except FileNotFoundError:
            return None

    def get(self, tensor_hash: str) -> Tensor:
        """The tensor, verified against its hash (raises MissingTensor if absent)."""
        return self._read(tensor_hash)[1]

    def _read(self, tensor_hash: str) -> tuple[bytes, Tensor]:
        _check_hash(tensor_hash)
        blob = self._packed(tensor_hash)
        packed = blob is not None
        if blob is None:
            try:
                with open(self._file(tensor_hash), "rb") as handle:
                    blob = handle.read()
            except FileNotFoundError:
                raise MissingTensor(tensor_hash) from None
            except OSError as exc:
                raise TensorError(f"cannot read tensor {tensor_hash}: {exc.strerror}") from exc
        try:
            tensor = Tensor.from_bytes(
                blob, expected_hash=tensor_hash, max_elements=self.max_elements
            )
        except TensorError as exc:
            if not self.durable:  # damage a power loss left: fetch the tensor again
                self._remove(tensor_hash, packed)
                raise MissingTensor(tensor_hash) from exc
            raise TensorError(f"stored tensor {tensor_hash} is corrupt: {exc}") from exc
        return blob, tensor

    def _remove(self, tensor_hash: str, packed: bool) -> None:
        self._known.discard(tensor_hash)
        if packed:
            with self._lock:
                dropped = self._recent.pop(tensor_hash, None)
                self._recent_bytes -= len(dropped) if dropped is not None else 0
                self._db.execute("DELETE FROM tensors WHERE hash = ?", (tensor_hash,))
        else:
            Path(self._file(tensor_hash)).unlink(missing_ok=True)

    def _write(self, tensor_hash: str, blob: bytes) -> bool:
        """Store `blob`; False when the pack already held it (a file is always written)."""
        if len(blob) <= PACK_MAX_BYTES:
            return self._insert_packed([(tensor_hash, blob)])[0]
        final = self._file(tensor_hash)
        if tensor_hash[:2] not in self._dirs:
            os.makedirs(os.path.dirname(final), exist_ok=True)
            self._dirs.add(tensor_hash[:2])
        tmp = f"{final}.tmp-{os.getpid()}-{next(_tmp_names)}"
        try:
            with open(tmp, "xb") as handle:
                handle.write(blob)
                if self.durable:
                    handle.flush()
                    os.fsync(handle.fileno())
            os.replace(tmp, final)
            self._remember(tensor_hash)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return True
