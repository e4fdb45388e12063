"""The ``onnx`` target: ``torch.onnx.export(dynamo=True)`` with a dynamic batch, run by onnxruntime."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ember import package
from ember.export import verify
from ember.export.errors import ExportError, require, way_out

__all__ = ["DEFAULT_OPSET", "export_onnx", "run_onnx"]

logger = logging.getLogger(__name__)

DEFAULT_OPSET = 18
FILE = "model.onnx"


def export_onnx(
    package_dir: str | os.PathLike,
    *,
    rtol: float | None = 1e-4,
    min_top1: float | None = None,
    opset: int = DEFAULT_OPSET,
    **_options: Any,
) -> dict:
    """Write ``model.onnx`` into a package, check it with onnxruntime and record its figures.

    Args:
        package_dir: the package directory.
        rtol: tolerance on ``max_rel_diff`` against the stored outputs.
        min_top1: accepted for a uniform target interface; fp32 parity is checked with ``rtol``.
        opset: ONNX opset version.
        **_options: options of other targets (ignored).

    Returns:
        The figures recorded under ``targets.onnx`` in ember.json.

    Raises:
        ExportError: the model can't be exported, or parity is beyond ``rtol``.

    Example:
        >>> export_onnx("digits")["max_abs_diff"]
    """
    require("onnx", "export")
    require("onnxscript", "export")
    ort = require("onnxruntime", "export")
    package_dir = Path(package_dir)
    manifest = package.read_manifest(package_dir)
    inputs, expected = package.load_sample(package_dir)
    _write_onnx(package_dir, manifest, inputs, opset)
    actual = run_onnx(package_dir / FILE, inputs.numpy())
    info = {
        "file": FILE,
        "opset": opset,
        **verify.parity(expected.numpy(), actual, task=manifest.get("task")),
        "size_bytes": (package_dir / FILE).stat().st_size,
        "runtime": f"onnxruntime {ort.__version__}",
    }
    return verify.accept(package_dir, "onnx", info, [FILE], rtol=rtol, min_top1=None)


def run_onnx(model_path: str | os.PathLike, inputs: np.ndarray) -> np.ndarray:
    """Run an ONNX (or ORT-format) model on one input with onnxruntime's CPU provider.

    Args:
        model_path: a ``.onnx`` or ``.ort`` file with one input and one output.
        inputs: a float32 array ``(N, ...)``.

    Returns:
        The first output as a numpy array.

    Example:
        >>> run_onnx("digits/model.onnx", np.zeros((1, 1, 8, 8), np.float32)).shape
        (1, 10)
    """
    ort = require("onnxruntime", "export")
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return session.run(None, {name: np.ascontiguousarray(inputs, dtype=np.float32)})[0]


def _write_onnx(package_dir: Path, manifest: dict, inputs: torch.Tensor, opset: int) -> None:
    if package.PROGRAM not in manifest["files"] and not manifest.get("architecture"):
        cause = manifest.get("export_error") or "the package has no model.pt2"
        raise ExportError(
            "Cannot export to ONNX: torch.export failed when the package was saved. "
            + way_out(cause)
        )
    model = package.load(package_dir)
    # A size-1 dim would be specialised to a constant: trace with at least two rows.
    trace = inputs if inputs.shape[0] >= 2 else inputs.repeat(2, *[1] * (inputs.dim() - 1))
    signature = manifest["signature"]
    try:
        torch.onnx.export(
            model,
            (trace,),
            str(package_dir / FILE),
            dynamo=True,
            opset_version=opset,
            input_names=[spec["name"] for spec in signature["inputs"]],
            output_names=[spec["name"] for spec in signature["outputs"]],
            dynamic_shapes=({0: torch.export.Dim("batch", min=1)},),
            external_data=False,
            verbose=False,
        )
    except Exception as exc:  # the exporter raises many types; all mean "not exportable"
        (package_dir / FILE).unlink(missing_ok=True)
        raise ExportError("Cannot export to ONNX: " + way_out(exc)) from exc
