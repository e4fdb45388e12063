"""The bundled demo dataset: scikit-learn's 8x8 digits (no download)."""

from __future__ import annotations

import numpy as np

__all__ = ["load_digits"]


def load_digits(*, images: bool = True, test_fraction: float = 0.2, seed: int = 0):
    """scikit-learn's bundled 8x8 digits (no download), scaled to [0, 1] and split.

    Args:
        images: shape (N, 1, 8, 8) (NCHW) when True, else (N, 64).
        test_fraction: share of samples held out for testing.
        seed: the split's seed.

    Returns:
        ((x_train, y_train), (x_test, y_test)) as float32 / int64 numpy arrays.

    Example:
        >>> (x, y), (xt, yt) = load_digits()
    """
    from sklearn.datasets import load_digits as _sk_digits

    data = _sk_digits()
    x = (data.data / 16.0).astype(np.float32)
    y = data.target.astype(np.int64)
    if images:
        x = x.reshape(-1, 1, 8, 8)
    order = np.random.default_rng(seed).permutation(len(x))
    n_test = int(len(x) * test_fraction)
    test, train = order[:n_test], order[n_test:]
    return (x[train], y[train]), (x[test], y[test])
