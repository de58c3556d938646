"""Job metadata: what a kernel call looks like without its data.

The ledger validates a posted job, and bounds its cost, before any input exists (a job in a DAG
may consume outputs of jobs that have not run yet), so every rule that can be checked from dtypes,
shapes and `frac_bits` alone is checked here, by `infer`, from `TensorMeta`s.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from ledger.errors import KernelError
from ledger.tensor import ALLOWED_DTYPES, DEFAULT_MAX_ELEMENTS, MAX_FRAC_BITS, MAX_NDIM, Tensor

#: Every kernel output is int64: the exact results rarely fit in 32 bits.
OUT_DTYPE = "<i8"
INT64_MAX = (1 << 63) - 1


class TensorMeta(NamedTuple):
    """The part of a tensor a job can be checked against: dtype code, shape and scale."""

    dtype: str
    """`<i4` or `<i8`."""
    shape: tuple[int, ...]
    """Dimensions, C order."""
    frac_bits: int
    """Binary scale: the tensor means `data / 2**frac_bits`."""

    @classmethod
    def of_tensor(cls, tensor: Tensor) -> TensorMeta:
        """The metadata of a concrete tensor."""
        return cls(tensor.dtype_code, tensor.shape, tensor.frac_bits)

    @property
    def size(self) -> int:
        """Number of elements."""
        count = 1
        for dim in self.shape:
            count *= dim
        return count


class JobSpec(NamedTuple):
    """What `infer` promises about a job: its outputs' metadata and a bound on its cost."""

    outputs: tuple[TensorMeta, ...]
    """Exactly the metadata `execute` will produce, in order."""
    macs: int
    """The job's cost: its multiply-accumulates (or element operations) as PROTOCOL.md 4.5
    defines them per op. The ledger bounds job size with it; the reference implementation does
    at most three float64 GEMM passes per defined product, whatever the data."""


def check_meta(meta: object, what: str) -> TensorMeta:
    """Refuse a malformed `TensorMeta` (the ledger builds them from untrusted job inputs)."""
    if not isinstance(meta, TensorMeta):
        raise KernelError(f"{what}: expected TensorMeta, got {type(meta).__name__}")
    if meta.dtype not in ALLOWED_DTYPES:
        raise KernelError(f"{what}: dtype {meta.dtype!r} is not '<i4' or '<i8'")
    if not isinstance(meta.shape, tuple) or len(meta.shape) > MAX_NDIM:
        raise KernelError(f"{what}: shape must be a tuple of at most {MAX_NDIM} dimensions")
    for dim in meta.shape:
        if not isinstance(dim, int) or isinstance(dim, bool) or dim < 1:
            raise KernelError(f"{what}: shape {meta.shape} must consist of positive integers")
    if not isinstance(meta.frac_bits, int) or isinstance(meta.frac_bits, bool):
        raise KernelError(f"{what}: frac_bits must be an integer")
    if not 0 <= meta.frac_bits <= MAX_FRAC_BITS:
        raise KernelError(f"{what}: frac_bits {meta.frac_bits} outside 0..{MAX_FRAC_BITS}")
    if meta.size > DEFAULT_MAX_ELEMENTS:
        raise KernelError(f"{what}: {meta.size} elements exceed the limit {DEFAULT_MAX_ELEMENTS}")
    return meta


def out_meta(shape: tuple[int, ...], frac_bits: int, what: str) -> TensorMeta:
    """Metadata of an output, refusing scales or sizes no tensor may have."""
    if not 0 <= frac_bits <= MAX_FRAC_BITS:
        raise KernelError(f"{what}: output frac_bits {frac_bits} outside 0..{MAX_FRAC_BITS}")
    return check_meta(TensorMeta(OUT_DTYPE, shape, frac_bits), what)


class Params:
    """Typed access to a job's params that refuses missing, extra and mistyped keys.

    Params are a JSON object of ints and strings only, so the job (and its hash) is canonical.
    Every op names its keys exactly: there are no defaults, so two equal jobs have equal params.
    """

    def __init__(self, op: str, params: object) -> None:
        if not isinstance(params, Mapping):
            raise KernelError(f"{op}: params must be an object, not {type(params).__name__}")
        for key, value in params.items():
            if not isinstance(key, str):
                raise KernelError(f"{op}: param names must be strings, got {key!r}")
            if isinstance(value, bool) or not isinstance(value, int | str):
                raise KernelError(f"{op}: param {key!r} must be an int or a string, not {value!r}")
            if isinstance(value, int) and not -INT64_MAX <= value <= INT64_MAX:
                raise KernelError(f"{op}: param {key!r} does not fit in a signed 64-bit integer")
        self.op = op
        self._params: dict[str, Any] = dict(params)
        self._used: set[str] = set()

    def int(self, key: str, lo: int, hi: int) -> int:
        """A required integer param in `[lo, hi]`."""
        value = self._get(key)
        if not isinstance(value, int):
            raise KernelError(f"{self.op}: param {key!r} must be an integer, not {value!r}")
        if not lo <= value <= hi:
            raise KernelError(f"{self.op}: param {key!r} = {value} outside {lo}..{hi}")
        return value

    def choice(self, key: str, allowed: Sequence[str]) -> str:
        """A required string param, one of `allowed`."""
        value = self._get(key)
        if value not in allowed:
            raise KernelError(
                f"{self.op}: param {key!r} must be one of {list(allowed)}, not {value!r}"
            )
        assert isinstance(value, str)
        return value

    def done(self) -> None:
        """Refuse keys no rule asked for (a typo must not silently become a default)."""
        extra = sorted(set(self._params) - self._used)
        if extra:
            raise KernelError(f"{self.op}: unknown params {extra}")

    def _get(self, key: str) -> Any:
        if key not in self._params:
            raise KernelError(f"{self.op}: missing param {key!r}")
        self._used.add(key)
        return self._params[key]


def check_arity(op: str, inputs: Sequence[object], names: Sequence[str]) -> None:
    """Refuse a job with the wrong number of inputs, naming what was expected."""
    if len(inputs) != len(names):
        raise KernelError(
            f"{op}: expects {len(names)} inputs ({', '.join(names)}), got {len(inputs)}"
        )
