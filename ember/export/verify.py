"""Parity between a target's outputs and the trained model's outputs on the stored sample."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from ember import package
from ember.export.errors import ExportError

__all__ = ["accept", "check", "parity"]

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
