"""Turn arrays, tensors, Datasets and iterables of batches into what the Trainer iterates over."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset, default_collate

from ember.data.batches import BatchStream, is_batch_list

__all__ = [
    "InputsDataset",
    "as_dataset",
    "as_tensor",
    "make_loader",
    "pad_sequences",
    "split_dataset",
]


def as_tensor(a: Any, name: str) -> torch.Tensor:
    """A tensor from a tensor, a numpy array, a list or a pandas object (float64 becomes float32).

    Args:
        a: the data.
        name: the argument's name, for the error message.

    Raises:
        ValueError: ragged rows, or text / mixed values (dtype object).
        TypeError: anything else that is not array data (a file path names the loaders).

    Example:
        >>> as_tensor(np.zeros((2, 3)), "x").dtype
        torch.float32
    """
    if isinstance(a, torch.Tensor):
        return a
    if isinstance(a, (str, os.PathLike)):
        raise TypeError(_path_message(a, name))
    if hasattr(a, "to_numpy") and not isinstance(a, np.ndarray):  # pandas DataFrame / Series
        a = a.to_numpy()
    if isinstance(a, (list, tuple)):
        a = _stack_rows(a, name)
    if isinstance(a, np.ndarray):
        if a.dtype == object:
            a = _from_object_array(a, name)
        if not (a.flags.writeable and a.flags.c_contiguous):  # pandas hands out read-only views
            a = a.copy(order="C")  # (np.ascontiguousarray would turn a 0-d array into 1-d)
        t = torch.from_numpy(a)
        # Keras users pass float64 numpy arrays; torch layers expect float32.
        return t.float() if t.dtype == torch.float64 else t
    raise TypeError(
        f"Received an invalid value for `{name}`: expected a numpy array, a torch.Tensor, a Dataset, "
        f"a DataLoader or an iterable of batches. Received: {type(a).__name__}"
    )


class InputsDataset(Dataset):
    """Samples of a model with several inputs: a dict of named arrays or a tuple of arrays.

    Each item is `(inputs, target)` (or `(inputs,)` without targets), where `inputs` keeps the
    container's kind: the train step calls `model(**inputs)` for a dict, `model(*inputs)` for a
    tuple. Use it with `collate_inputs` (what `make_loader` does).

    Example:
        >>> ds = InputsDataset({"image": np.zeros((4, 1, 8, 8)), "meta": np.zeros((4, 3))}, np.zeros(4))
        >>> inputs, target = ds[0]
    """

    def __init__(self, inputs: dict | tuple | list, y: Any = None) -> None:
        if isinstance(inputs, dict):
            self.inputs: dict | tuple = {k: as_tensor(v, f"x[{k!r}]") for k, v in inputs.items()}
            arrays = self.inputs.values()
        else:
            self.inputs = tuple(as_tensor(v, f"x[{i}]") for i, v in enumerate(inputs))
            arrays = self.inputs
        self.y = None if y is None else as_tensor(y, "y")
        lengths = {name: len(t) for name, t in zip(_input_names(self.inputs), arrays)}
        if self.y is not None:
            lengths["y"] = len(self.y)
        if len(set(lengths.values())) > 1:
            raise ValueError(
                "Every input and `y` must have the same number of samples. Received: "
                + ", ".join(f"len({k})={n}" for k, n in lengths.items())
            )
        self._length = next(iter(lengths.values()), 0)

    def __len__(self) -> int:
        return self._length

    def __getitem__(self, i: int) -> tuple:
        if isinstance(self.inputs, dict):
            x: dict | tuple = {k: v[i] for k, v in self.inputs.items()}
        else:
            x = tuple(v[i] for v in self.inputs)
        return (x,) if self.y is None else (x, self.y[i])


def collate_inputs(samples: list) -> tuple:
    """Collate `InputsDataset` items, keeping tuples of inputs as tuples (torch makes them lists)."""
    batch = default_collate(samples)
    x = batch[0]
    x = tuple(x) if isinstance(x, list) else x
    return (x, *batch[1:])


def as_dataset(x: Any, y: Any = None) -> Dataset:
    """Return a Dataset for `x` (and `y`).

    Args:
        x: a numpy array or tensor (samples along dim 0), a dict or tuple of them (a model with
            several inputs), or a Dataset.
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
    if _is_multi_input(x, y):
        return InputsDataset(x, y)
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
    x: Any,
    y: Any = None,
    *,
    batch_size: int = 32,
    shuffle: bool = False,
    steps: int | None = None,
) -> DataLoader | Any:
    """Return a DataLoader over `x`/`y`; a DataLoader passes through, other iterables of batches
    (generators included) are wrapped in a `BatchStream`.

    Args:
        x: arrays, tensors, a dict / tuple of them (several inputs), a Dataset, a DataLoader, a
            generator or any iterable yielding `(x, y)` batches.
        y: targets for array data.
        batch_size: samples per batch (array data and Datasets).
        shuffle: reshuffle every epoch (array data and Datasets).
        steps: batches per epoch drawn from a generator or iterable (Keras' `steps_per_epoch`).

    Example:
        >>> loader = make_loader(np.zeros((10, 3)), np.zeros(10), batch_size=4)
    """
    if isinstance(x, (str, os.PathLike)):
        raise TypeError(_path_message(x, "x"))
    if isinstance(x, DataLoader):
        if y is not None:
            raise ValueError("`y` must be None when `x` is a DataLoader.")
        return x
    if isinstance(x, BatchStream) or is_batch_iterable(x):
        if y is not None:
            raise ValueError(
                "`y` must be None when `x` is a generator or an iterable of batches: "
                "yield (x, y) pairs instead."
            )
        return x if isinstance(x, BatchStream) else BatchStream(x, steps=steps)
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(
            f"Received an invalid value for `batch_size`, expected a positive integer. "
            f"Received: batch_size={batch_size!r}"
        )
    dataset = as_dataset(x, y)
    collate = collate_inputs if isinstance(_root(dataset), InputsDataset) else None
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, collate_fn=collate)


def is_batch_iterable(x: Any) -> bool:
    """True for generators, iterators and iterables of batches (not arrays, Datasets, tables)."""
    if isinstance(x, list):
        return is_batch_list(x)
    return (
        hasattr(x, "__iter__")
        and not isinstance(x, (np.ndarray, torch.Tensor, tuple, dict, str, bytes, Dataset))
        and not hasattr(x, "to_numpy")
    )


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


def pad_sequences(
    sequences: Sequence[Sequence[Any]], maxlen: int | None = None, *, value: float = 0
) -> np.ndarray:
    """Pad (or cut, at the end) ragged rows to one length, like Keras' `pad_sequences`.

    Args:
        sequences: rows of different lengths (lists or 1-D arrays).
        maxlen: the length of every row; default the longest row.
        value: the padding value.

    Returns:
        A numpy array `(len(sequences), maxlen)` of the rows' dtype.

    Example:
        >>> pad_sequences([[1, 2, 3], [4]])
        array([[1, 2, 3],
               [4, 0, 0]])
    """
    rows = [np.asarray(s) for s in sequences]
    length = maxlen if maxlen is not None else max((len(r) for r in rows), default=0)
    dtype = np.result_type(*[r.dtype for r in rows]) if rows else np.float32
    out = np.full((len(rows), length), value, dtype=dtype)
    for i, row in enumerate(rows):
        out[i, : min(len(row), length)] = row[:length]
    return out


# -- helpers --------------------------------------------------------------------------------------
def _is_multi_input(x: Any, y: Any) -> bool:
    """A dict of arrays, or a tuple/list of arrays as Keras' multi-input `fit([a, b], y)`."""
    if isinstance(x, dict):
        return True
    if not isinstance(x, (tuple, list)) or not x:
        return False
    if not all(isinstance(v, (np.ndarray, torch.Tensor)) and v.ndim >= 1 for v in x):
        return False
    # A list of per-sample arrays (one per row of y) is array data, not several inputs.
    return y is None or all(len(v) == len(y) for v in x) and len(x) != len(y)


def _root(dataset: Dataset) -> Dataset:
    while isinstance(dataset, Subset):
        dataset = dataset.dataset
    return dataset


def _input_names(inputs: dict | tuple) -> list[str]:
    return (
        [f"x[{k!r}]" for k in inputs]
        if isinstance(inputs, dict)
        else [f"x[{i}]" for i in range(len(inputs))]
    )


def _stack_rows(rows: list | tuple, name: str) -> np.ndarray:
    try:
        return np.asarray(rows)
    except ValueError as exc:  # numpy: "setting an array element with a sequence ... inhomogeneous"
        raise ValueError(_ragged_message(rows, name)) from exc


def _from_object_array(a: np.ndarray, name: str) -> np.ndarray:
    """An object array holds ragged rows, text or mixed values: convert, or say what to do."""
    if a.ndim == 1 and len(a) and all(isinstance(v, (list, tuple, np.ndarray)) for v in a):
        return _stack_rows(list(a), name)
    try:
        return a.astype(np.float32)
    except (TypeError, ValueError):
        sample = next((v for v in a.ravel() if isinstance(v, str)), a.ravel()[:1])
        raise ValueError(
            f"`{name}` holds text or mixed values (numpy dtype object, e.g. {sample!r}); a model "
            f"needs numbers. For a table with categorical columns use "
            f"ember.data.from_dataframe(df, target=...) (it encodes them); for class names in `y` "
            f"map them to integers first."
        ) from None


def _ragged_message(rows: Any, name: str) -> str:
    lengths = []
    for r in list(rows)[:5]:
        try:
            lengths.append(len(r))
        except TypeError:
            lengths.append("scalar")
    return (
        f"`{name}` is ragged: its rows have different lengths (first rows: {lengths}), so it is not "
        f"one array. Pad them to one length, e.g. ember.data.pad_sequences({name}, maxlen=...), or "
        f"pass a DataLoader whose collate_fn pads each batch."
    )


def _path_message(path: Any, name: str) -> str:
    text = str(path)
    csv = f"ember.data.from_csv({text!r}, target='label') for a CSV file"
    images = f"ember.data.image_dataset_from_directory({text!r}) for a folder of class sub-folders"
    if text.lower().endswith(".csv"):
        loaders = csv
    elif os.path.isdir(text) or text.endswith(("/", os.sep)):
        loaders = images
    else:
        loaders = f"{csv}, {images}"
    return (
        f"`{name}` is a file path ({text!r}); fit, evaluate and predict take data, not files. "
        f"Load it first: {loaders}; or run `ember train {text}`."
    )
