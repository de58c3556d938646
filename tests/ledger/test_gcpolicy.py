"""`ledger.gcpolicy`: the young threshold raised, the older ones kept, what lives frozen."""

from __future__ import annotations

import gc

from ledger.gcpolicy import YOUNG_THRESHOLD, tune_gc


def test_tune_gc_raises_only_the_young_threshold() -> None:
    before = gc.get_threshold()
    try:
        gc.set_threshold(700, 7, 9)
        tune_gc()
        tune_gc()  # idempotent
        assert gc.get_threshold() == (YOUNG_THRESHOLD, 7, 9)
        assert gc.get_freeze_count() > 0 and not any(gc.get_count()[1:])
    finally:
        gc.set_threshold(*before)
        gc.unfreeze()
