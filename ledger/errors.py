"""The exceptions the ledger raises, one tree so callers can catch at the right level.

    LedgerError
    ├── EncodingError          a value cannot be canonically encoded (float, bad key, ...)
    ├── IdentityError          a key file or signature is malformed
    ├── TensorError            a tensor is malformed, too large, or its hash does not match
    ├── KernelError            a kernel call is invalid
    │   └── ExactRangeError    inputs outside the range the kernel can compute exactly
    ├── InvalidTransaction     a tx fails a stateless check (form, size, signature)
    ├── InvalidBlock           a block or certificate fails validation
    ├── GenesisError           a genesis file is malformed
    └── StoreError             the database is unusable or inconsistent

Every error carries a human-readable message saying what was wrong; the API turns these into 4xx
answers with that message, so the text is written for the person who sent the bad input.
"""

from __future__ import annotations


class LedgerError(Exception):
    """Base of every error raised by `ledger`."""


class EncodingError(LedgerError):
    """A value cannot be canonically encoded."""


class IdentityError(LedgerError):
    """A key, key file, address or signature is malformed."""


class TensorError(LedgerError):
    """A tensor is malformed, too large, or does not match its hash."""


class KernelError(LedgerError):
    """A kernel was called with an unknown op, wrong arity, bad params or mismatched shapes."""


class ExactRangeError(KernelError):
    """The inputs lie outside the range the kernel can compute exactly; nothing was computed."""


class InvalidTransaction(LedgerError):
    """A transaction fails a stateless check: form, size or signature."""


class InvalidBlock(LedgerError):
    """A block, header or commit certificate fails validation."""


class GenesisError(LedgerError):
    """A genesis file is malformed."""


class StoreError(LedgerError):
    """The ledger database is unusable or inconsistent."""
