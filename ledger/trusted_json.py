"""Canonical JSON for values whose types the ledger has already checked, without re-checking.

`ledger.encoding.canonical_json` walks every value to refuse floats, bytes and out-of-range
integers; on the hot path (1,000-tx blocks) that walk costs more than the signature checks. The
records passed here are built only from fields that passed the stateless tx checks (strings,
integers within bounds, lists, objects) or from state arithmetic that cannot leave the signed
64-bit range (total supply is bounded at genesis), so `json.dumps` with the same settings gives
byte-identical output. The tests assert that equality on every tx type and on real block diffs.
"""

from __future__ import annotations

import json
from typing import Any

#: One encoder for every call: `json.dumps` with options builds a new one each time, and the
#: circular-reference check is skipped (these values are trees built by the ledger itself).
#: Together ~15 % of encoding a 2 KB job record.
_ENCODER = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, check_circular=False
)


def trusted_canonical_json(value: Any) -> bytes:
    """Same bytes as canonical_json(value) for already-checked values (see module docstring)."""
    return _ENCODER.encode(value).encode("utf-8")
