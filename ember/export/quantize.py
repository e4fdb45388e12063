"""The ``int8`` target: onnxruntime quantization of ``model.onnx``.

Dynamic quantization (int8 weights, activations quantized at run time) for graphs of
Linear/RNN layers; static QDQ quantization calibrated on sample inputs when the graph has Conv.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ember import package
from ember.export import verify
from ember.export.errors import ExportError, require
from ember.export.onnx import FILE as FP32_FILE
from ember.export.onnx import export_onnx, run_onnx

__all__ = ["export_int8"]

logger = logging.getLogger(__name__)

FILE = "model.int8.onnx"
_CONV_OPS = {"Conv", "ConvTranspose"}
_REGRESSION_RTOL = 0.05  # int8 parity for non-classifiers: 5% of the output scale
_CALIBRATION_BATCH = 16


def export_int8(
    package_dir: str | os.PathLike,
    *,
    min_top1: float | None = 0.99,
    calibration_data: Any = None,
    eval_data: tuple[Any, Any] | None = None,
    **options: Any,
) -> dict:
    """Write ``model.int8.onnx``, check top-1 agreement on the stored sample, record figures.

    Writes the ``onnx`` target first when the package has none.

    Args:
        package_dir: the package directory.
        min_top1: smallest top-1 agreement with the trained model (classifiers).
        calibration_data: inputs ``(N, ...)`` for static calibration; default the stored sample.
        eval_data: ``(x, y)`` held-out data; records ``accuracy`` and ``fp32_accuracy``.
        **options: passed to the ``onnx`` target when it has to be written.

    Returns:
        Figures recorded under ``targets.int8``: parity, ``mode``, ``size_ratio``, accuracies.

    Raises:
        ExportError: quantization fails or top-1 agreement is below ``min_top1``.

    Example:
        >>> export_int8("digits", eval_data=(x_test, y_test))["size_ratio"]
    """
    require("onnx", "export")
    ort_quant = require("onnxruntime.quantization", "export")
    package_dir = Path(package_dir)
    manifest = package.read_manifest(package_dir)
    if "onnx" not in manifest.get("targets", {}):
        export_onnx(package_dir, **options)
    package.verify_files(package_dir, package.read_manifest(package_dir), names=[FP32_FILE])
    inputs, expected = package.load_sample(package_dir)
    calibration = _as_array(inputs if calibration_data is None else calibration_data)
    mode = _quantize(ort_quant, package_dir / FP32_FILE, package_dir / FILE, calibration)
    actual = run_onnx(package_dir / FILE, inputs.numpy())
    size, fp32_size = (package_dir / FILE).stat().st_size, (package_dir / FP32_FILE).stat().st_size
    info = {
        "file": FILE,
        "mode": mode,
        **verify.parity(expected.numpy(), actual, task=manifest.get("task")),
        "size_bytes": size,
        "fp32_size_bytes": fp32_size,
        "size_ratio": size / fp32_size,
    }
    if eval_data is not None:
        info.update(_accuracies(package_dir, eval_data))
    classifier = manifest.get("task") == "classification"
    return verify.accept(
        package_dir,
        "int8",
        info,
        [FILE],
        rtol=None if classifier else _REGRESSION_RTOL,
        min_top1=min_top1 if classifier else None,
    )


def _quantize(ort_quant: Any, source: Path, target: Path, calibration: np.ndarray) -> str:
    import onnx

    model = onnx.load(str(source))
    static = any(node.op_type in _CONV_OPS for node in model.graph.node)
    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        try:
            ort_quant.quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        except Exception as exc:  # pre-processing only helps; quantize the raw graph instead
            logger.warning("onnxruntime quant_pre_process failed, quantizing as is: %s", exc)
            prepared = source
        try:
            if static:
                reader = _CalibrationReader(model.graph.input[0].name, calibration)
                ort_quant.quantize_static(
                    str(prepared),
                    str(target),
                    reader,
                    quant_format=ort_quant.QuantFormat.QDQ,
                    per_channel=True,
                    activation_type=ort_quant.QuantType.QUInt8,
                    weight_type=ort_quant.QuantType.QInt8,
                )
            else:
                ort_quant.quantize_dynamic(
                    str(prepared), str(target), weight_type=ort_quant.QuantType.QInt8
                )
        except Exception as exc:
            target.unlink(missing_ok=True)
            raise ExportError(f"onnxruntime quantization failed: {exc}") from exc
    _strip(target)
    return "static" if static else "dynamic"


def _strip(file: Path) -> None:
    """Drop per-node stack-trace metadata and inferred shapes: on small models they outweigh int8."""
    import onnx

    model = onnx.load(str(file))
    for node in model.graph.node:
        del node.metadata_props[:]
        node.doc_string = ""
    del model.graph.value_info[:]
    onnx.save(model, str(file))


class _CalibrationReader:
    """Feeds calibration batches to ``quantize_static`` (onnxruntime's CalibrationDataReader API)."""

    def __init__(self, input_name: str, data: np.ndarray) -> None:
        self._batches = iter(
            {input_name: data[i : i + _CALIBRATION_BATCH]}
            for i in range(0, len(data), _CALIBRATION_BATCH)
        )

    def get_next(self) -> dict | None:
        return next(self._batches, None)


def _accuracies(package_dir: Path, eval_data: tuple[Any, Any]) -> dict:
    x, y = _as_array(eval_data[0]), np.asarray(eval_data[1]).reshape(-1)
    if len(x) != len(y):
        raise ValueError(f"`eval_data` x and y differ in length. Received: {len(x)} and {len(y)}")
    int8 = run_onnx(package_dir / FILE, x).argmax(axis=1)
    fp32 = run_onnx(package_dir / FP32_FILE, x).argmax(axis=1)
    return {"accuracy": float((int8 == y).mean()), "fp32_accuracy": float((fp32 == y).mean())}


def _as_array(data: Any) -> np.ndarray:
    if isinstance(data, torch.Tensor):
        data = data.detach().cpu().numpy()
    return np.ascontiguousarray(data, dtype=np.float32)
