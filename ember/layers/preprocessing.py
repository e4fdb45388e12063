"""Preprocessing inside the model: TableEncoder (standardise numbers, one-hot categories), Rescaling."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ember.layers.base import Layer, _invalid

__all__ = ["Rescaling", "TableEncoder"]

_KINDS = ("numeric", "categorical")


class TableEncoder(Layer):
    """Standardise numeric columns and one-hot encode categorical ones, as the first model layer.

    Because the statistics and vocabularies live in the model (as its config and as buffers), the
    package, every export target and the server apply exactly the preprocessing used in training.
    `ember.data.from_csv` / `from_dataframe` compute the columns for you.

    Args:
        columns: one dict per input column, in input order: `{"name", "kind": "numeric", "mean",
            "std"}` or `{"name", "kind": "categorical", "vocabulary": [...]}`.

    Shape:
        Input: `(N, F)` float, one value per column: the raw number for a numeric column, the
        category's index in its `vocabulary` for a categorical one (-1 or any other index:
        unknown). Missing numbers (NaN) become the column's mean.
        Output: `(N, numeric + sum(len(vocabulary) + 1))`: a category's one-hot has one more slot
        for unknown values.

    Example:
        >>> enc = TableEncoder([{"name": "age", "kind": "numeric", "mean": 40.0, "std": 10.0},
        ...                     {"name": "city", "kind": "categorical", "vocabulary": ["a", "b"]}])
        >>> enc(torch.tensor([[50.0, 1.0]]))
        tensor([[1., 0., 1., 0.]])
    """

    def __init__(self, columns: Sequence[dict]) -> None:
        super().__init__()
        if isinstance(columns, (str, bytes)) or not isinstance(columns, Sequence) or not columns:
            raise _invalid("columns", "a non-empty list of column dicts", columns)
        for i, col in enumerate(columns):
            _check_column(i, col)
        self.columns = [dict(c) for c in columns]
        numeric = [i for i, c in enumerate(columns) if c["kind"] == "numeric"]
        self.register_buffer("numeric_index", torch.tensor(numeric, dtype=torch.long))
        self.register_buffer(
            "mean", torch.tensor([float(columns[i]["mean"]) for i in numeric], dtype=torch.float32)
        )
        std = [float(columns[i]["std"]) or 1.0 for i in numeric]  # a constant column: std 0
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32))
        self._categorical = [
            (i, len(c["vocabulary"])) for i, c in enumerate(columns) if c["kind"] == "categorical"
        ]

    @property
    def output_size(self) -> int:
        """The encoded width: one per numeric column, `len(vocabulary) + 1` per categorical one."""
        return len(self.mean) + sum(k + 1 for _, k in self._categorical)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 2 or x.shape[1] != len(self.columns):
            names = [c["name"] for c in self.columns]
            raise ValueError(
                f"TableEncoder expected inputs of shape (None, {len(self.columns)}), one value per "
                f"column {names}, but received input of shape {tuple(x.shape)}."
            )
        x = x.float()
        parts = []
        if len(self.mean):
            num = (x.index_select(1, self.numeric_index) - self.mean) / self.std  # (N, numeric)
            parts.append(torch.nan_to_num(num, nan=0.0))  # a missing value is the mean
        for i, k in self._categorical:
            code = x[:, i]
            known = (code >= 0) & (code < k) & (code == torch.round(code))  # NaN fails both
            code = torch.where(known, code, torch.full_like(code, k))  # slot k: unknown
            slots = torch.arange(k + 1, device=x.device, dtype=x.dtype)
            parts.append((code.unsqueeze(1) == slots).to(x.dtype))  # (N, k + 1)
        return torch.cat(parts, dim=1)

    def extra_repr(self) -> str:
        return f"numeric={len(self.mean)}, categorical={len(self._categorical)}"


class Rescaling(Layer):
    """`x * scale + offset`, as Keras' `Rescaling`: e.g. pixels / 255, or a regression output
    brought back to the target's scale (`scale=std, offset=mean`).

    Args:
        scale: the factor.
        offset: added after scaling.

    Example:
        >>> Rescaling(1 / 255)(torch.tensor([255.0]))
        tensor([1.])
    """

    def __init__(self, scale: float, offset: float = 0.0) -> None:
        super().__init__()
        for name, value in (("scale", scale), ("offset", offset)):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise _invalid(name, "a number", value)
        self.scale = float(scale)
        self.offset = float(offset)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale + self.offset

    def extra_repr(self) -> str:
        return f"scale={self.scale:g}, offset={self.offset:g}"


def _check_column(i: int, col: dict) -> None:
    if not isinstance(col, dict) or col.get("kind") not in _KINDS or "name" not in col:
        raise ValueError(
            f"Received an invalid value for `columns[{i}]`, expected a dict with a 'name' and a "
            f"'kind' of {', '.join(_KINDS)}. Received: {col!r}"
        )
    if col["kind"] == "numeric" and not all(
        isinstance(col.get(k), (int, float)) for k in ("mean", "std")
    ):
        raise ValueError(
            f"Numeric column {col['name']!r} needs a 'mean' and a 'std' number. Received: {col!r}"
        )
    if col["kind"] == "categorical" and not isinstance(col.get("vocabulary"), list):
        raise ValueError(
            f"Categorical column {col['name']!r} needs a 'vocabulary' list. Received: {col!r}"
        )
