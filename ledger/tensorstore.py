"""A content-addressed tensor store on disk: one file per tensor, named by its hash.

The node serves uploads and downloads from it, the state machine reads job inputs from it when it
re-executes a job, and `layerchain verify --reexecute` reads it. Every write is verified against
the hash it is stored under and every read is verified again (a flipped bit on disk is an error,
never a silent wrong input). Writes are atomic: a temporary file in the same directory, fsync,
then rename, so a crash never leaves a half-written tensor under a valid name.

A validator opens its store with `durable=False`: no fsync per tensor (4 ms each on the event
loop of a loaded machine, one per upload). Tensors are content-addressed and held by several
validators, so one a power loss damaged is simply fetched again: such a store treats a file whose
bytes do not match its name as absent (it removes it and raises `MissingTensor`, which a node
answers by fetching from its peers). Offline tools keep the default: corruption is an error.

Layout: `ROOT/ab/abcdef...` (the first two hex characters fan out the directory).
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

from ledger.errors import TensorError
from ledger.tensor import DEFAULT_MAX_ELEMENTS, Tensor

_HEX64 = re.compile(r"^[0-9a-f]{64}\Z")


class MissingTensor(TensorError):
    """A tensor the caller needs is not in this store (fetch it from a peer and retry)."""

    def __init__(self, tensor_hash: str) -> None:
        super().__init__(f"tensor {tensor_hash} is not in the tensor store")
        self.hash = tensor_hash


def _check_hash(tensor_hash: str) -> str:
    if not isinstance(tensor_hash, str) or not _HEX64.match(tensor_hash):
        raise TensorError("a tensor hash is 64 lowercase hex characters")
    return tensor_hash


class TensorStore:
    """Content-addressed directory of tensors in the wire format (ledger.tensor)."""

    def __init__(
        self, root: str | Path, max_elements: int = DEFAULT_MAX_ELEMENTS, *, durable: bool = True
    ) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.max_elements = max_elements
        self.durable = durable
        """fsync every write; when False, a corrupt file reads as missing (module docstring)."""
        self._dirs: set[str] = set()
        """Fan-out directories known to exist (a mkdir per write cost ~0.1 ms)."""

    def path(self, tensor_hash: str) -> Path:
        """Where the tensor with this hash lives (whether or not it is there)."""
        _check_hash(tensor_hash)
        return self.root / tensor_hash[:2] / tensor_hash

    def has(self, tensor_hash: str) -> bool:
        return self.path(tensor_hash).is_file()

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
        if not self.has(tensor.hash):
            self._write(tensor.hash, blob)
        return tensor.hash

    def get_bytes(self, tensor_hash: str) -> bytes:
        """The wire-format bytes, verified against the hash (raises MissingTensor if absent)."""
        return self._read(tensor_hash)[0]

    def get_unverified_bytes(self, tensor_hash: str) -> bytes | None:
        """The stored bytes as they are, or None: for forwarding to a peer, which parses and
        hash-checks whatever it receives (checking here too would do that work twice)."""
        try:
            return self.path(tensor_hash).read_bytes()
        except FileNotFoundError:
            return None

    def get(self, tensor_hash: str) -> Tensor:
        """The tensor, verified against its hash (raises MissingTensor if absent)."""
        return self._read(tensor_hash)[1]

    def _read(self, tensor_hash: str) -> tuple[bytes, Tensor]:
        path = self.path(tensor_hash)
        try:
            blob = path.read_bytes()
        except FileNotFoundError:
            raise MissingTensor(tensor_hash) from None
        except OSError as exc:
            raise TensorError(f"cannot read tensor {tensor_hash}: {exc.strerror}") from exc
        try:
            tensor = Tensor.from_bytes(
                blob, expected_hash=tensor_hash, max_elements=self.max_elements
            )
        except TensorError as exc:
            if not self.durable:  # a write a power loss cut short: fetch the tensor again
                path.unlink(missing_ok=True)
                raise MissingTensor(tensor_hash) from exc
            raise TensorError(f"stored tensor {tensor_hash} is corrupt: {exc}") from exc
        return blob, tensor

    def _write(self, tensor_hash: str, blob: bytes) -> None:
        final = self.path(tensor_hash)
        if tensor_hash[:2] not in self._dirs:
            final.parent.mkdir(parents=True, exist_ok=True)
            self._dirs.add(tensor_hash[:2])
        fd, tmp = tempfile.mkstemp(dir=final.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(blob)
                if self.durable:
                    handle.flush()
                    os.fsync(handle.fileno())
            os.replace(tmp, final)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
