"""Export a model package to deployment targets, each verified against the stored sample.

Targets live in one module each and are imported only when asked for, so ``import ember`` never
pulls in onnx, onnxruntime or executorch.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
import types
from collections.abc import Sequence
from typing import Any

from ember.export.errors import ExportError, MissingDependencyError

__all__ = ["TARGETS", "ExportError", "MissingDependencyError", "export"]

logger = logging.getLogger(__name__)

# target name -> module inside ember.export; each module defines export_<target>(package_dir, **options).
TARGETS = {
    "onnx": "onnx",
    "int8": "quantize",
    "mobile": "mobile",
    "web": "web",
    "cpp": "cpp",
    "tfjs": "tfjs",
}


def export(
    package_dir: str | os.PathLike,
    targets: str | Sequence[str] = ("onnx",),
    *,
    rtol: float = 1e-4,
    min_top1: float = 0.99,
    calibration_data: Any = None,
    eval_data: tuple[Any, Any] | None = None,
    static: bool = False,
) -> dict[str, dict]:
    """Write export targets into a package and record their parity figures in ember.json.

    Each target runs on the package's stored sample and is compared with the trained model's
    outputs; one that is off beyond tolerance is deleted and raises :class:`ExportError`.

    Args:
        package_dir: a directory written by ``ember.save``.
        targets: names from ``onnx, int8, mobile, web, cpp, tfjs`` (a list or a
            comma-separated string), or ``"all"`` (every target that takes the package: tfjs
            only for an ``ember.Sequential``).
        rtol: fp32 tolerance on ``max_rel_diff`` (max abs diff / max |expected|).
        min_top1: int8 tolerance: smallest top-1 agreement with the trained model (classifiers).
        calibration_data: inputs ``(N, ...)`` for static int8 calibration; default the stored sample.
        eval_data: ``(x, y)`` held-out data; int8 then records its accuracy against fp32.
        static: mobile: export the ExecuTorch program with the stored sample's fixed shapes,
            for models whose dynamic batch or sequence axis cannot lower.

    Returns:
        ``{target: figures}`` as recorded in ember.json.

    Raises:
        ValueError: an unknown target, ``rtol < 0`` or ``min_top1`` outside [0, 1].
        ExportError: a target that cannot be exported or fails parity.
        MissingDependencyError: an optional dependency is missing (names the extra to install).

    Example:
        >>> figures = ember.export.export("digits", ["onnx", "int8"])
        >>> figures["onnx"]["max_abs_diff"] < 1e-5
        True
    """
    names = _parse_targets(targets)
    # Checked before any target runs: a bad tolerance used to fail (and delete) a good target.
    if not isinstance(rtol, (int, float)) or not rtol >= 0:  # 0: outputs must match exactly
        raise ValueError(f"Received an invalid value for `rtol`, expected a number >= 0 (e.g. 1e-4). "
                         f"Received: rtol={rtol!r}")  # fmt: skip
    if not isinstance(min_top1, (int, float)) or not 0 <= min_top1 <= 1:
        raise ValueError(f"Received an invalid value for `min_top1`, expected a fraction in "
                         f"[0, 1] (e.g. 0.99). Received: min_top1={min_top1!r}")  # fmt: skip
    everything = [targets] if isinstance(targets, str) else list(targets)
    if [t.strip() for t in everything] == ["all"] and not _sequential(package_dir):
        # "all" means every target that can take this package: tfjs needs an ember.Sequential
        logger.info("Skipping tfjs: %s is not an ember.Sequential of ember layers", package_dir)
        names.remove("tfjs")
    options = {
        "rtol": rtol,
        "min_top1": min_top1,
        "calibration_data": calibration_data,
        "eval_data": eval_data,
        "static": static,
    }
    from ember.export.quiet import quiet_toolchains

    results = {}
    # The toolchains' harmless chatter is hidden unless ember logs at INFO (`ember -v`).
    with quiet_toolchains(verbose=logger.isEnabledFor(logging.INFO)):
        for name in names:
            module = importlib.import_module(f"ember.export.{TARGETS[name]}")
            logger.info("Exporting %s to %s", package_dir, name)
            results[name] = getattr(module, f"export_{name}")(package_dir, **options)
    return results


def _sequential(package_dir: str | os.PathLike) -> bool:
    from ember import package

    architecture = package.read_manifest(package_dir).get("architecture")
    return isinstance(architecture, dict) and architecture.get("kind") == "sequential"


def _parse_targets(targets: str | Sequence[str]) -> list[str]:
    names = targets.split(",") if isinstance(targets, str) else list(targets)
    names = [n.strip() for n in names if n.strip()]
    if names == ["all"]:
        return list(TARGETS)
    unknown = [n for n in names if n not in TARGETS]
    if unknown or not names:
        raise ValueError(
            f"Unknown export target(s) {unknown or names!r}. Choose from: {', '.join(TARGETS)}, all"
        )
    return names


class _CallableModule(types.ModuleType):
    """Lets `ember.export(...)` call `export` although `ember.export` is also this package."""

    def __call__(self, *args: Any, **kwargs: Any) -> dict[str, dict]:
        return export(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
