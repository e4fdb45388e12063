"""Turn arrays, tensors and Datasets into DataLoaders, and the bundled demo datasets."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset

__all__ = ["as_tensor", "as_dataset", "make_loader", "split_dataset", "load_digits"]


def as_tensor(a: Any, name: str) -> torch.Tensor:
    """A tensor from a tensor, a numpy array or a list (float64 becomes float32, as torch layers expect).

    Args:
        a: the data.
        name: the argument's name, for the error message.

    Example:
        >>> as_tensor(np.zeros((2, 3)), "x").dtype
        torch.float32
    """
    if isinstance(a, torch.Tensor):
        return a
    if isinstance(a, np.ndarray):
        t = torch.from_numpy(np.ascontiguousarray(a))
        # Keras users pass float64 numpy arrays; torch layers expect float32.
        return t.float() if t.dtype == torch.float64 else t
    if isinstance(a, (list, tuple)):
        return as_tensor(np.asarray(a), name)
    raise TypeError(
        f"Received an invalid value for `{name}`: expected a numpy array, a torch.Tensor, a Dataset or "
        f"a DataLoader. Received: {type(a).__name__}"
    )


def as_dataset(x: Any, y: Any = None) -> Dataset:
    """Return a Dataset for `x` (and `y`).

    Args:
        x: a numpy array or tensor (samples along dim 0), or a Dataset.
        y: targets of the same length as `x`, or None (x alone, e.g. for predict).

    Example:
        >>> ds = as_dataset(np.zeros((4, 3)), np.zeros(4))
    """
    if isinstance(x, Dataset):
        if y is not None:
            raise ValueError(
                "`y` must be None when `x` is a Dataset (the Dataset yields the targets)."
            )
        return x
    xt = as_tensor(x, "x")
    if y is None:
        return TensorDataset(xt)
    yt = as_tensor(y, "y")
    if len(xt) != len(yt):
        raise ValueError(
            f"`x` and `y` must have the same number of samples. Received: len(x)={len(xt)}, len(y)={len(yt)}"
        )
    return TensorDataset(xt, yt)


def make_loader(
    x: Any, y: Any = None, *, batch_size: int = 32, shuffle: bool = False
) -> DataLoader | Any:
    """Return a DataLoader over `x`/`y`; a DataLoader (or any iterable of batches) passes through.

    Example:
        >>> loader = make_loader(np.zeros((10, 3)), np.zeros(10), batch_size=4)
    """
    if isinstance(x, DataLoader) or (not isinstance(x, Dataset) and _is_batch_iterable(x)):
        if y is not None:
            raise ValueError("`y` must be None when `x` is a DataLoader.")
        return x
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(
            f"Received an invalid value for `batch_size`, expected a positive integer. "
            f"Received: batch_size={batch_size!r}"
        )
    return DataLoader(as_dataset(x, y), batch_size=batch_size, shuffle=shuffle)


def _is_batch_iterable(x: Any) -> bool:
    return hasattr(x, "__iter__") and not isinstance(x, (np.ndarray, torch.Tensor, list, tuple))


def split_dataset(dataset: Dataset, fraction: float) -> tuple[Dataset, Dataset]:
    """Split off the last `fraction` of `dataset` for validation, like Keras's `validation_split`."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(
            f"Received an invalid value for `validation_split`, expected a float in (0, 1). "
            f"Received: validation_split={fraction!r}"
        )
    n = len(dataset)
    n_val = max(1, int(round(n * fraction)))
    return Subset(dataset, range(n - n_val)), Subset(dataset, range(n - n_val, n))


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
