"""Fixed-point tensors: an integer array, its shape, and a binary scale, addressed by content hash.

A tensor with `frac_bits = F` represents the real values `data * 2**-F`. Only int32 and int64
little-endian C-order arrays exist on the chain, so the same tensor has the same bytes, and so the
same hash, on every machine.

Wire format (the body of a tensor upload or download, and the files in a tensor store)::

    b"LCT1\\n" + canonical_json({"frac_bits": F}) + b"\\n" + <.npy bytes, format 1.0>

The `.npy` part is read with `allow_pickle=False`; its header is checked (dtype, order, shape,
element limit) before the payload is allocated, and trailing bytes are refused.
"""

from __future__ import annotations

import ast
import functools
import io
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ledger.encoding import parse_json, sha256_hex
from ledger.errors import EncodingError, TensorError

WIRE_MAGIC = b"LCT1\n"
HASH_DOMAIN = b"layerchain/tensor/v1\n"
ALLOWED_DTYPES = {"<i4": "int32", "<i8": "int64"}
MAX_FRAC_BITS = 30
#: Default limits; the genesis parameters may set lower ones for jobs.
DEFAULT_MAX_ELEMENTS = 1 << 24
MAX_NDIM = 4
_NPY_MAGIC = b"\x93NUMPY"
#: The meta line as `canonical_json` writes it (other JSON forms go through the parser).
_CANONICAL_META = re.compile(rb'\{"frac_bits":(0|[1-9][0-9]{0,2})\}')


def _check_array(data: np.ndarray, max_elements: int) -> np.ndarray:
    if not isinstance(data, np.ndarray):
        raise TensorError("tensor data must be a numpy array")
    if data.dtype.kind != "i" or data.dtype.itemsize not in (4, 8):
        raise TensorError(f"tensor dtype must be int32 or int64, not {data.dtype}")
    if data.ndim > MAX_NDIM:
        raise TensorError(f"tensor has {data.ndim} dimensions; at most {MAX_NDIM} are allowed")
    if data.size > max_elements:
        raise TensorError(f"tensor has {data.size} elements; the limit is {max_elements}")
    fixed = np.ascontiguousarray(data, dtype=data.dtype.newbyteorder("<"))
    fixed.flags.writeable = False
    return fixed


@dataclass(frozen=True, eq=False)
class Tensor:
    """An immutable fixed-point tensor: `data * 2**-frac_bits`."""

    data: np.ndarray
    """int32 or int64, little-endian, C-contiguous, read-only."""
    frac_bits: int
    """Binary scale: the tensor means `data / 2**frac_bits`."""
    _hash: list[str] = field(default_factory=list, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.frac_bits, int) or isinstance(self.frac_bits, bool):
            raise TensorError("frac_bits must be an integer")
        if not 0 <= self.frac_bits <= MAX_FRAC_BITS:
            raise TensorError(f"frac_bits must be between 0 and {MAX_FRAC_BITS}")
        object.__setattr__(self, "data", _check_array(self.data, DEFAULT_MAX_ELEMENTS))

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.data.shape)

    @property
    def dtype_code(self) -> str:
        """`<i4` or `<i8`: the numpy dtype string that goes into the hash."""
        return self.data.dtype.str

    def meta(self) -> dict[str, Any]:
        """The header that the content hash covers besides the raw bytes."""
        return {"dtype": self.dtype_code, "frac_bits": self.frac_bits, "shape": list(self.shape)}

    @property
    def hash(self) -> str:
        """SHA-256 over domain, canonical meta and little-endian C-order bytes (see PROTOCOL.md)."""
        if not self._hash:
            self._hash.append(
                sha256_hex(HASH_DOMAIN + self._meta_json() + b"\n" + self.data.tobytes())
            )
        return self._hash[0]

    def _meta_json(self) -> bytes:
        """`canonical_json(self.meta())`, written out: the dtype is `<i4`/`<i8`, frac_bits and
        the dimensions are small non-negative ints, so the canonical form is fixed text (tests
        assert the equality). The generic encoder's type walk was a tenth of a miner's CPU,
        which hashes every tensor it downloads."""
        shape = ",".join(str(d) for d in self.data.shape)
        dtype = self.data.dtype.str
        return f'{{"dtype":"{dtype}","frac_bits":{self.frac_bits},"shape":[{shape}]}}'.encode()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Tensor) and self.hash == other.hash

    def __hash__(self) -> int:
        return hash(self.hash)

    def to_bytes(self) -> bytes:
        """The wire format: magic, canonical meta line, then a version 1.0 `.npy` file (its
        header depends only on dtype and shape, so it is written once per pair and reused)."""
        return (
            WIRE_MAGIC
            + b'{"frac_bits":%d}\n' % self.frac_bits
            + _npy_header_bytes(self.data.dtype.str, self.data.shape)
            + self.data.tobytes()
        )

    @classmethod
    def from_bytes(
        cls, blob: bytes, expected_hash: str | None = None, max_elements: int = DEFAULT_MAX_ELEMENTS
    ) -> Tensor:
        """Parse the wire format; refuse anything malformed, oversized or not matching its hash."""
        if not blob.startswith(WIRE_MAGIC):
            raise TensorError("not a layerchain tensor: missing the LCT1 magic line")
        end = blob.find(b"\n", len(WIRE_MAGIC), len(WIRE_MAGIC) + 256)
        if end < 0:
            raise TensorError("tensor meta line missing or longer than 256 bytes")
        line = blob[len(WIRE_MAGIC) : end]
        canonical = _CANONICAL_META.fullmatch(line)
        if canonical is not None:  # what every writer sends: no JSON parser needed
            frac_bits: Any = int(canonical[1])
        else:
            try:
                meta = parse_json(line)
            except EncodingError as exc:
                raise TensorError(f"tensor meta line: {exc}") from exc
            if not isinstance(meta, dict) or set(meta) != {"frac_bits"}:
                raise TensorError('tensor meta line must be exactly {"frac_bits": <int>}')
            frac_bits = meta["frac_bits"]
        data = _read_npy(blob[end + 1 :], max_elements)
        tensor = cls(data, frac_bits)
        if expected_hash is not None and tensor.hash != expected_hash:
            raise TensorError(f"tensor hash {tensor.hash} does not match expected {expected_hash}")
        return tensor


@functools.lru_cache(maxsize=4096)
def _npy_header_bytes(descr: str, shape: tuple[int, ...]) -> bytes:
    """The version 1.0 `.npy` header numpy writes for a C-order array of `descr` and `shape`."""
    buf = io.BytesIO()
    header = {"descr": descr, "fortran_order": False, "shape": tuple(int(d) for d in shape)}
    np.lib.format.write_array_header_1_0(buf, header)
    return buf.getvalue()


@functools.lru_cache(maxsize=4096)
def _npy_header(raw: bytes) -> tuple[Any, Any, Any]:
    """(descr, fortran_order, shape) of a .npy header, as written: the checks follow.

    Cached: a node parses the same few headers (one per tensor shape) thousands of times a
    second, and `ast.literal_eval` costs ~40 µs each. The result is immutable (str, bool, tuple).
    """
    try:
        header = ast.literal_eval(raw.decode("latin1"))
    except (ValueError, SyntaxError, UnicodeDecodeError, MemoryError, RecursionError) as exc:
        raise TensorError(f"tensor .npy header is malformed: {exc}") from exc
    if not isinstance(header, dict) or set(header) != {"descr", "fortran_order", "shape"}:
        raise TensorError("tensor .npy header must have exactly descr, fortran_order and shape")
    return header["descr"], header["fortran_order"], header["shape"]


def _read_npy(payload: bytes, max_elements: int) -> np.ndarray:
    """Read a version 1.0 `.npy` file, checking its header before allocating anything."""
    if not payload.startswith(_NPY_MAGIC) or len(payload) < 10:
        raise TensorError("tensor payload is not a .npy file")
    if payload[6:8] != b"\x01\x00":
        raise TensorError("tensor payload must be .npy format version 1.0")
    header_len = int.from_bytes(payload[8:10], "little")
    header_end = 10 + header_len
    if header_len > 4096 or len(payload) < header_end:
        raise TensorError("tensor .npy header is truncated or too long")
    descr, fortran, shape = _npy_header(payload[10:header_end])
    if descr not in ALLOWED_DTYPES:
        raise TensorError(f"tensor dtype {descr!r} refused: only '<i4' and '<i8' (no pickles)")
    if fortran is not False:
        raise TensorError("tensor .npy must be C order (fortran_order False)")
    if (
        not isinstance(shape, tuple)
        or len(shape) > MAX_NDIM
        or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
    ):
        raise TensorError(f"tensor shape {shape!r} must be at most {MAX_NDIM} non-negative ints")
    count = 1
    for dim in shape:
        count *= dim
    if count > max_elements:
        raise TensorError(f"tensor has {count} elements; the limit is {max_elements}")
    itemsize = 4 if descr == "<i4" else 8
    body = payload[header_end:]
    if len(body) != count * itemsize:
        raise TensorError(
            f"tensor payload has {len(body)} bytes but shape {shape} of {descr} needs "
            f"{count * itemsize}"
        )
    return np.frombuffer(body, dtype=np.dtype(descr)).reshape(shape)


def quantize(values: np.ndarray, frac_bits: int, dtype: type = np.int64) -> Tensor:
    """Round real values to fixed point (`round-half-to-even(values * 2**frac_bits)`).

    Used only where real data enters the chain (datasets, initial weights); multiplying by a power
    of two is exact in float64 and `rint` is IEEE round-half-to-even, so this is reproducible.
    """
    scaled = np.rint(np.asarray(values, dtype=np.float64) * float(1 << frac_bits))
    info = np.iinfo(dtype)
    if scaled.size and (scaled.max() > info.max or scaled.min() < info.min):
        raise TensorError(f"values do not fit in {np.dtype(dtype).name} at {frac_bits} frac bits")
    return Tensor(scaled.astype(dtype), frac_bits)


def dequantize(tensor: Tensor) -> np.ndarray:
    """The real values a tensor stands for, as float64 (for display and metrics only)."""
    return tensor.data.astype(np.float64) / float(1 << tensor.frac_bits)
