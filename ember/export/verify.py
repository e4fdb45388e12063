"""Parity between a target's outputs and the trained model's outputs on the stored sample."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from ember import package
from ember.export.errors import ExportError

__all__ = ["accept", "check", "parity", "parity_on_samples", "trace_args"]

logger = logging.getLogger(__name__)


def parity(expected: np.ndarray, actual: np.ndarray, *, task: str | None) -> dict:
    """Compare a target's outputs with the trained model's.

    ``max_rel_diff`` is the largest absolute difference divided by the largest ``|expected|``
    (a scale-relative error: element-wise ratios explode on outputs near zero).

    Args:
        expected: the trained model's outputs, shape ``(N, ...)``.
        actual: the target's outputs on the same inputs.
        task: ``"classification"`` adds ``top1_agreement`` (fraction of equal argmax rows).

    Returns:
        ``{"max_abs_diff", "max_rel_diff"}`` plus ``"top1_agreement"`` for classifiers.

    Example:
        >>> parity(np.ones((2, 3)), np.ones((2, 3)), task="classification")["top1_agreement"]
        1.0
    """
    expected = np.asarray(expected, dtype=np.float64)
    actual = np.asarray(actual, dtype=np.float64)
    if expected.shape != actual.shape:
        raise ExportError(f"Output shape {actual.shape} differs from the expected {expected.shape}")
    diff = float(np.max(np.abs(expected - actual))) if expected.size else 0.0
    scale = float(np.max(np.abs(expected))) if expected.size else 0.0
    figures = {"max_abs_diff": diff, "max_rel_diff": diff / max(scale, 1e-12)}
    if task == "classification":
        rows = expected.reshape(expected.shape[0], -1)
        top1 = rows.argmax(axis=1) == actual.reshape(actual.shape[0], -1).argmax(axis=1)
        figures["top1_agreement"] = float(top1.mean())
    return figures


def parity_on_samples(
    package_dir: str | os.PathLike,
    run: Callable[[dict[str, np.ndarray]], list[np.ndarray]],
    *,
    task: str | None,
    static: bool = False,
) -> dict:
    """Run a target on every stored sample and compare each output with the trained model's.

    The stored sample, and where an axis beyond the batch is dynamic the ``varied`` sample (the
    same rows at another length), are both run unless ``static`` (a target exported with fixed
    shapes only takes the stored one). Figures are the worst over samples and outputs.

    Args:
        package_dir: the package directory.
        run: ``{input name: array}`` (dtypes as stored) -> outputs in signature order.
        task: see :func:`parity` (top-1 agreement is taken on the first output).
        static: check the stored sample only.

    Returns:
        :func:`parity` figures plus ``checked_shapes``: ``{sample: {input: shape}}``.

    Example:
        >>> parity_on_samples("bert", lambda x: [session.run(None, x)[0]], task="classification")
    """
    worst: dict = {}
    checked = {}
    for kind, (inputs, expected) in package.load_samples(package_dir).items():
        if static and kind != "stored":
            continue
        feed = {n: t.numpy() for n, t in inputs.items()}
        actual = run(feed)
        if len(actual) != len(expected):
            raise ExportError(
                f"The target returned {len(actual)} outputs, expected {len(expected)}"
            )
        for i, (want, got) in enumerate(zip(expected.values(), actual)):
            figures = parity(want.numpy(), np.asarray(got), task=task if i == 0 else None)
            for key, value in figures.items():
                better = min if key == "top1_agreement" else max
                worst[key] = better(worst[key], value) if key in worst else value
        checked[kind] = {n: list(t.shape) for n, t in inputs.items()}
    return {**worst, "checked_shapes": checked}


def trace_args(inputs: dict[str, torch.Tensor], rows: int = 2) -> tuple[torch.Tensor, ...]:
    """The sample's tensors with at least ``rows`` rows (export specialises a size-1 dim)."""
    out = []
    for t in inputs.values():
        if t.shape[0] < rows:
            t = t.repeat(-(-rows // t.shape[0]), *[1] * (t.dim() - 1))[:rows]
        out.append(t)
    return tuple(out)


def check(figures: dict, *, target: str, rtol: float | None, min_top1: float | None) -> None:
    """Raise when parity figures are beyond tolerance.

    Args:
        figures: output of :func:`parity`.
        target: target name, for the message.
        rtol: largest allowed ``max_rel_diff``; None skips the check.
        min_top1: smallest allowed ``top1_agreement`` (classifiers); None skips the check.

    Raises:
        ExportError: showing the figures and the tolerance.

    Example:
        >>> check({"max_abs_diff": 0.0, "max_rel_diff": 0.0}, target="onnx", rtol=1e-4, min_top1=None)
    """
    problems = []
    if rtol is not None and figures["max_rel_diff"] > rtol:
        problems.append(f"max_rel_diff {figures['max_rel_diff']:.3g} > rtol {rtol:g}")
    top1 = figures.get("top1_agreement")
    if min_top1 is not None and top1 is not None and top1 < min_top1:
        problems.append(f"top1_agreement {top1:.4f} < min_top1 {min_top1:g}")
    if problems:
        shown = ", ".join(f"{k}={v:.6g}" for k, v in figures.items() if isinstance(v, float))
        raise ExportError(
            f"Target {target!r} failed parity on the stored sample: {'; '.join(problems)} "
            f"(figures: {shown}). Its files were removed."
        )


def accept(
    package_dir: str | os.PathLike,
    target: str,
    info: dict,
    files: list[str],
    *,
    rtol: float | None,
    min_top1: float | None,
) -> dict:
    """Keep a target whose figures pass :func:`check`, else delete its files and raise.

    Args:
        package_dir: the package directory.
        target: target name.
        info: figures (from :func:`parity`) plus file names and sizes.
        files: files the target wrote, relative to the package directory.
        rtol: see :func:`check`.
        min_top1: see :func:`check`.

    Returns:
        ``info`` with ``"tolerance"`` added, as recorded in ember.json.

    Example:
        >>> accept("digits", "onnx", {"file": "model.onnx", **figs}, ["model.onnx"], rtol=1e-4, min_top1=None)
    """
    info = {**info, "tolerance": {"rtol": rtol, "min_top1": min_top1}}
    try:
        check(info, target=target, rtol=rtol, min_top1=min_top1)
    except ExportError:
        package.remove_target(Path(package_dir), target, files)
        raise
    package.record_target(package_dir, target, info, files)
    logger.info("Target %s written and verified: %s", target, info)
    return info
