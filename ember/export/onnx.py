"""The ``onnx`` target: ``torch.onnx.export(dynamo=True)`` with every dynamic axis of the package
(batch, and e.g. sequence), run by onnxruntime on the stored and the varied sample."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ember import package
from ember.export import verify
from ember.export.errors import ExportError, require, way_out

__all__ = ["DEFAULT_OPSET", "export_onnx", "onnx_runner", "run_onnx"]

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
    _write_onnx(package_dir, manifest, opset)
    figures = verify.parity_on_samples(
        package_dir, onnx_runner(package_dir / FILE), task=manifest.get("task")
    )
    info = {
        "file": FILE,
        "opset": opset,
        **figures,
        "dynamic_axes": _dynamic_axes(manifest["signature"]),
        "size_bytes": (package_dir / FILE).stat().st_size,
        "runtime": f"onnxruntime {ort.__version__}",
    }
    return verify.accept(package_dir, "onnx", info, [FILE], rtol=rtol, min_top1=None)


def onnx_runner(model_path: str | os.PathLike) -> Callable[[dict], list[np.ndarray]]:
    """A function running an ONNX (or ORT-format) model on ``{input name: array}``.

    Arrays are cast to each input's ONNX type (so int64 ids stay int64); the function returns
    every output in the model's order.

    Example:
        >>> onnx_runner("bert/model.onnx")({"input_ids": ids, "attention_mask": mask})[0].shape
        (4, 3)
    """
    ort = require("onnxruntime", "export")
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
    types = {i.name: _NUMPY_TYPES.get(i.type) for i in session.get_inputs()}

    def run(inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        feed = {n: np.ascontiguousarray(a, dtype=types.get(n)) for n, a in inputs.items()}
        return session.run(None, feed)

    return run


def run_onnx(model_path: str | os.PathLike, inputs: np.ndarray) -> np.ndarray:
    """Run an ONNX (or ORT-format) model on one input with onnxruntime's CPU provider.

    Args:
        model_path: a ``.onnx`` or ``.ort`` file with one input.
        inputs: an array ``(N, ...)``, cast to the input's type (see :func:`onnx_runner` for
            several inputs).

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
    first = session.get_inputs()[0]
    dtype = _NUMPY_TYPES.get(first.type, np.float32)
    return session.run(None, {first.name: np.ascontiguousarray(inputs, dtype=dtype)})[0]


def _write_onnx(package_dir: Path, manifest: dict, opset: int) -> None:
    if package.PROGRAM not in manifest["files"] and not manifest.get("architecture"):
        cause = manifest.get("export_error") or "the package has no model.pt2"
        raise ExportError(
            "Cannot export to ONNX: torch.export failed when the package was saved. "
            + way_out(cause)
        )
    model = package.load(package_dir).flat
    inputs, _ = package.load_named_sample(package_dir)
    signature = manifest["signature"]
    try:
        torch.onnx.export(
            model,
            verify.trace_args(inputs),
            str(package_dir / FILE),
            dynamo=True,
            opset_version=opset,
            input_names=package.input_names(signature),
            output_names=[spec["name"] for spec in signature["outputs"]],
            dynamic_shapes=package.dims_for_export(signature),
            external_data=False,
            verbose=False,
        )
    except Exception as exc:  # the exporter raises many types; all mean "not exportable"
        (package_dir / FILE).unlink(missing_ok=True)
        raise ExportError("Cannot export to ONNX: " + way_out(exc, target="onnx")) from exc


def _dynamic_axes(signature: dict) -> dict:
    axes = {spec["name"]: {"0": "batch"} for spec in signature["inputs"]}
    for name, per_axis in (signature.get("dynamic_axes") or {}).items():
        axes.setdefault(name, {}).update(per_axis)
    return axes


_NUMPY_TYPES = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(float16)": np.float16,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(int16)": np.int16,
    "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8,
    "tensor(bool)": np.bool_,
}
