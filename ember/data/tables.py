"""Tables (CSV files, pandas DataFrames) -> numeric arrays plus the preprocessing to put in the model.

The arrays keep each column's raw value (numbers) or its index in the column's vocabulary
(categories); `TableEncoder` (built by `TabularData.encoder()`) standardises and one-hot encodes
them inside the model, so a saved package and every export target apply the same preprocessing.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["TabularData", "from_csv", "from_dataframe"]

_TASKS = ("classification", "regression")
_MAX_INTEGER_CLASSES = 20  # an integer target with at most this many values is a class label


@dataclass
class TabularData:
    """A table ready for `fit`: `x` (float32, one column per feature), `y` and how to encode rows.

    Attributes:
        x: `(N, F)` float32: numeric columns raw, categorical columns as vocabulary indices.
        y: `(N,)` int64 class indices (classification) or float32 values (regression), or None.
        columns: one dict per feature column (what `TableEncoder` takes).
        target: the target column's name.
        task: "classification" or "regression".
        labels: the class names (classification), index i is class i.

    Example:
        >>> table = from_csv("houses.csv", target="price")
        >>> model = ember.Sequential([layers.Input((table.num_features,)), table.encoder(),
        ...                           layers.Dense(32, activation="relu"), layers.Dense(1)])
    """

    x: np.ndarray
    y: np.ndarray | None
    columns: list[dict]
    target: str | None
    task: str
    labels: list[str] | None = None

    @property
    def num_features(self) -> int:
        """The number of input columns (the model's input width)."""
        return len(self.columns)

    @property
    def num_outputs(self) -> int:
        """The output width a model needs: one per class, or 1 for regression."""
        return len(self.labels) if self.task == "classification" and self.labels else 1

    def encoder(self):
        """A `TableEncoder` layer holding these columns' statistics and vocabularies."""
        from ember.layers.preprocessing import TableEncoder

        return TableEncoder(self.columns)

    def encode(self, frame: Any) -> np.ndarray:
        """New rows (a DataFrame or a dict of columns) -> the model's input, with these vocabularies.

        Unknown categories become -1 (the encoder's "unknown" slot); the target column is ignored.

        Example:
            >>> model.predict(table.encode(pd.DataFrame({"area": [70.0], "city": ["Lyon"]})))
        """
        return encode_rows(self.columns, frame)

    @property
    def preprocessing(self) -> dict:
        """What a client must send, for `model.save(..., preprocessing=table.preprocessing)`."""
        return {
            "kind": "table",
            "input": "float32 (N, F), one value per column in `columns` order: the number for a "
            "numeric column, the category's index in its `vocabulary` for a categorical one "
            "(-1: unknown). The model standardises and one-hot encodes them itself.",
            "columns": self.columns,
            "target": self.target,
        }


def from_dataframe(
    frame: Any,
    target: str | None = None,
    *,
    features: list[str] | None = None,
    categorical: list[str] | None = None,
    task: str | None = None,
) -> TabularData:
    """Turn a pandas DataFrame into `TabularData`: statistics, vocabularies, `x` and `y`.

    Args:
        frame: the table.
        target: the column to predict; None for inputs only.
        features: the input columns; default every column but the target.
        categorical: numeric columns to one-hot encode too (codes, small integers); the
            non-numeric ones (text, bool, category dtype) always are.
        task: "classification" or "regression"; default classification for a text, bool or
            integer target with at most 20 distinct values, else regression.

    Returns:
        A `TabularData`.

    Example:
        >>> table = from_dataframe(df, target="species")
        >>> model.fit(table.x, table.y, epochs=10)
    """
    pd = _pandas()
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"`frame` must be a pandas DataFrame. Received: {type(frame).__name__}")
    if target is not None and target not in frame.columns:
        raise ValueError(
            f"Unknown target column {target!r}. Columns: {', '.join(map(str, frame.columns))}"
        )
    if task is not None and task not in _TASKS:
        raise ValueError(f"Unknown task {task!r}. Choose one of: {', '.join(_TASKS)}")
    names = features if features is not None else [c for c in frame.columns if c != target]
    unknown = [c for c in [*names, *(categorical or [])] if c not in frame.columns]
    if unknown or not names:
        raise ValueError(
            f"Unknown or no feature columns {unknown}. Columns: {', '.join(map(str, frame.columns))}"
        )
    # Text columns are always categorical; `categorical` adds numeric ones (codes, small ints).
    categorical = [c for c in names if c in (categorical or []) or not _is_numeric(frame[c])]
    columns = [_column_spec(frame[c], str(c), c in categorical) for c in names]
    x = _encode(frame, columns)
    if target is None:
        return TabularData(x, None, columns, None, task or "regression")
    y, task, labels = _target(frame[target], task)
    return TabularData(x, y, columns, str(target), task, labels)


def from_csv(path: str | os.PathLike, target: str | None = None, **kwargs: Any) -> TabularData:
    """Read a CSV file (with a header row) into `TabularData`; see `from_dataframe` for `kwargs`.

    Example:
        >>> table = from_csv("iris.csv", target="species")
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No CSV file at {path}")
    return from_dataframe(_pandas().read_csv(path), target, **kwargs)


# -- helpers --------------------------------------------------------------------------------------
def _pandas():
    try:
        import pandas
    except ImportError as exc:  # an optional dependency
        raise ImportError(
            "Tables need pandas: pip install 'ember[data]' (or pip install pandas)"
        ) from exc
    return pandas


def _is_numeric(series: Any) -> bool:
    pd = _pandas()
    return pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series)


def _column_spec(series: Any, name: str, categorical: bool) -> dict:
    if categorical:
        values = sorted({str(v) for v in series.dropna()})
        return {"name": name, "kind": "categorical", "vocabulary": values}
    values = series.to_numpy(dtype=np.float64, na_value=np.nan)
    mean = float(np.nanmean(values)) if np.isfinite(values).any() else 0.0
    std = float(np.nanstd(values)) if np.isfinite(values).any() else 1.0
    return {"name": name, "kind": "numeric", "mean": mean, "std": std}


def encode_rows(columns: list[dict], frame: Any) -> np.ndarray:
    """Rows (a DataFrame or a dict of columns) -> float32 `(N, F)` in `columns` order.

    Numbers as they are, each category as its index in the column's vocabulary (-1: unknown or
    missing): the input of a `layers.TableEncoder` built from the same `columns`. Columns not
    listed (the target, an id) are ignored.

    Raises:
        ValueError: a listed column is missing, or a numeric column holds text.
    """
    pd = _pandas()
    frame = frame if isinstance(frame, pd.DataFrame) else pd.DataFrame(frame)
    missing = [c["name"] for c in columns if c["name"] not in frame.columns]
    if missing:
        raise ValueError(
            f"The rows lack the feature columns {missing}. Expected columns: "
            f"{[c['name'] for c in columns]}"
        )
    return _encode(frame, columns)


def is_table(x: Any) -> bool:
    """Whether `x` is a pandas DataFrame (checked without importing pandas)."""
    return type(x).__name__ == "DataFrame" and hasattr(x, "columns") and hasattr(x, "to_numpy")


def _encode(frame: Any, columns: list[dict]) -> np.ndarray:
    out = np.empty((len(frame), len(columns)), dtype=np.float32)
    for j, col in enumerate(columns):
        series = frame[col["name"]]
        if col["kind"] == "numeric":
            try:
                out[:, j] = series.to_numpy(dtype=np.float64, na_value=np.nan)
            except (TypeError, ValueError) as exc:
                raise ValueError(
                    f"Column {col['name']!r} holds values that are not numbers (e.g. "
                    f"{series.iloc[0]!r}); list it in `categorical=[...]`."
                ) from exc
        else:
            index = {v: i for i, v in enumerate(col["vocabulary"])}
            out[:, j] = [-1 if _missing(v) else index.get(str(v), -1) for v in series]
    return out


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value))


def _target(series: Any, task: str | None) -> tuple[np.ndarray, str, list[str] | None]:
    pd = _pandas()
    if series.isna().any():
        raise ValueError(
            f"The target column {series.name!r} has {int(series.isna().sum())} missing values; "
            "drop those rows first: df = df.dropna(subset=[target])."
        )
    if task is None:
        integer = pd.api.types.is_integer_dtype(series)
        few = series.nunique() <= _MAX_INTEGER_CLASSES
        task = "classification" if not _is_numeric(series) or (integer and few) else "regression"
    if task == "regression":
        if not _is_numeric(series):
            raise ValueError(f"A regression target needs numbers; {series.name!r} holds text.")
        return series.to_numpy(dtype=np.float32), task, None
    keys = sorted(series.unique(), key=lambda v: (str(type(v)), v))
    labels = [str(v) for v in keys]
    index = {v: i for i, v in enumerate(keys)}
    return np.array([index[v] for v in series], dtype=np.int64), task, labels
