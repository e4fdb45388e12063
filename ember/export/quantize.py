"""The ``int8`` target: onnxruntime quantization of ``model.onnx``.

Dynamic quantization (int8 weights, activations quantized at run time) for graphs of
Linear/RNN layers, transformers included (their MatMul/Gemm weights; several inputs of any
dtype, dynamic sequence axes kept); static QDQ quantization (per-channel weights) calibrated on sample inputs
when the graph has Conv.

Weights use 7 bits (``reduce_range``): x86 CPUs without VNNI multiply uint8 activations by
int8 weights with an instruction that saturates at int16, which on the digits CNN flips about
one prediction in a hundred; 7-bit weights cannot saturate and cost no measurable accuracy.
The written file is then shrunk: internal tensor names are shortened and metadata dropped,
because on small models names and per-node metadata weigh as much as the int8 weights.
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
from ember.export.onnx import export_onnx, onnx_runner, run_onnx

__all__ = ["CALIBRATION_METHODS", "export_int8"]

logger = logging.getLogger(__name__)

FILE = "model.int8.onnx"
CALIBRATION_METHODS = {"minmax": "MinMax", "entropy": "Entropy", "percentile": "Percentile"}
_CONV_OPS = {"Conv", "ConvTranspose"}
_REGRESSION_RTOL = 0.05  # int8 parity for non-classifiers: 5% of the output scale
_CALIBRATION_BATCH = 16
_MAX_CALIBRATION = 1024  # more rows barely move MinMax ranges but slow calibration down


def export_int8(
    package_dir: str | os.PathLike,
    *,
    min_top1: float | None = 0.99,
    calibration_data: Any = None,
    calibration_method: str = "minmax",
    eval_data: tuple[Any, Any] | None = None,
    **options: Any,
) -> dict:
    """Write ``model.int8.onnx``, check top-1 agreement on the stored sample, record figures.

    Writes the ``onnx`` target first when the package has none.

    Args:
        package_dir: the package directory.
        min_top1: smallest top-1 agreement with the trained model (classifiers).
        calibration_data: inputs ``(N, ...)`` for static calibration, e.g. 512 training rows
            (at most the first 1024 are used); default the stored sample.
        calibration_method: ``"minmax"``, ``"entropy"`` or ``"percentile"`` (static only).
        eval_data: ``(x, y)`` held-out data; records ``accuracy`` and ``fp32_accuracy``.
        **options: passed to the ``onnx`` target when it has to be written.

    Returns:
        Figures recorded under ``targets.int8``: parity, ``mode``, ``size_ratio``, accuracies.

    Raises:
        ValueError: an unknown ``calibration_method`` or badly shaped ``calibration_data``.
        ExportError: quantization fails or top-1 agreement is below ``min_top1``.

    Example:
        >>> export_int8("digits", calibration_data=x_train[:512], eval_data=(x_test, y_test))
    """
    if calibration_method not in CALIBRATION_METHODS:
        raise ValueError(
            f"Unknown `calibration_method` {calibration_method!r}. "
            f"Choose one of: {', '.join(CALIBRATION_METHODS)}"
        )
    require("onnx", "export")
    ort_quant = require("onnxruntime.quantization", "export")
    package_dir = Path(package_dir)
    manifest = package.read_manifest(package_dir)
    inputs, _ = package.load_named_sample(package_dir)
    calibration = _calibration_feeds(calibration_data, inputs)
    if "onnx" not in manifest.get("targets", {}):
        export_onnx(package_dir, **options)
    package.verify_files(package_dir, package.read_manifest(package_dir), names=[FP32_FILE])
    method = CALIBRATION_METHODS[calibration_method]
    mode = _quantize(ort_quant, package_dir / FP32_FILE, package_dir / FILE, calibration, method)
    info = _figures(package_dir, manifest.get("task"), mode)
    if mode == "static":
        rows = len(next(iter(calibration.values())))
        info["calibration"] = {"method": calibration_method, "samples": rows}
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


def _calibration_feeds(data: Any, sample: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """Calibration inputs by name: the stored sample (any number of inputs, dtypes kept), or
    ``calibration_data`` rows for a one-input model."""
    if data is None:
        return {n: _whole_batches(t.numpy()) for n, t in sample.items()}
    if len(sample) != 1:
        raise ValueError(
            f"`calibration_data` is for one-input models; this one takes {list(sample)}. "
            "Leave it out to calibrate on the stored sample."
        )
    name, first = next(iter(sample.items()))
    return {name: _calibration_rows(data, first)}


def _calibration_rows(data: Any, sample: torch.Tensor) -> np.ndarray:
    """The calibration inputs as float32, checked against the sample's row shape."""
    rows = _as_array(data)
    expected = tuple(sample.shape[1:])
    if rows.ndim == 0 or tuple(rows.shape[1:]) != expected or len(rows) == 0:
        raise ValueError(
            f"`calibration_data` must be a non-empty batch of rows shaped {expected} like the "
            f"stored sample, i.e. (N, {', '.join(map(str, expected))}). "
            f"Received: shape {tuple(rows.shape)}"
        )
    if len(rows) > _MAX_CALIBRATION:
        logger.info("Calibrating on the first %d of %d rows", _MAX_CALIBRATION, len(rows))
    return _whole_batches(rows[:_MAX_CALIBRATION])


def _whole_batches(rows: np.ndarray) -> np.ndarray:
    """Drop a short last batch: histogram calibrators (entropy, percentile) stack batches."""
    if len(rows) <= _CALIBRATION_BATCH:
        return rows
    return rows[: len(rows) // _CALIBRATION_BATCH * _CALIBRATION_BATCH]


def _figures(package_dir: Path, task: Any, mode: str) -> dict:
    figures = verify.parity_on_samples(package_dir, onnx_runner(package_dir / FILE), task=task)
    size, fp32_size = (package_dir / FILE).stat().st_size, (package_dir / FP32_FILE).stat().st_size
    return {
        "file": FILE,
        "mode": mode,
        "reduce_range": True,
        "per_channel": mode == "static",
        **figures,
        "size_bytes": size,
        "fp32_size_bytes": fp32_size,
        "size_ratio": size / fp32_size,
    }


def _quantize(
    ort_quant: Any, source: Path, target: Path, calibration: dict[str, np.ndarray], method: str
) -> str:
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
                ort_quant.quantize_static(
                    str(prepared),
                    str(target),
                    _CalibrationReader(calibration),
                    quant_format=ort_quant.QuantFormat.QDQ,
                    per_channel=True,
                    reduce_range=True,
                    activation_type=ort_quant.QuantType.QUInt8,
                    weight_type=ort_quant.QuantType.QInt8,
                    calibrate_method=getattr(ort_quant.CalibrationMethod, method),
                )
            else:
                ort_quant.quantize_dynamic(
                    str(prepared),
                    str(target),
                    weight_type=ort_quant.QuantType.QInt8,
                    reduce_range=True,
                )
        except Exception as exc:
            target.unlink(missing_ok=True)
            raise ExportError(f"onnxruntime quantization failed: {exc}") from exc
    _shrink(target)
    return "static" if static else "dynamic"


def _shrink(file: Path) -> None:
    """Drop metadata and unused opset imports and shorten internal tensor names, in place."""
    import onnx

    model = onnx.load(str(file))
    graph = model.graph
    for node in graph.node:
        del node.metadata_props[:]
        node.doc_string = ""
    del graph.value_info[:]  # inferred shapes: onnxruntime infers them again on load
    del model.metadata_props[:]
    model.doc_string = graph.doc_string = ""
    used = {node.domain for node in graph.node} | {
        n.domain for f in model.functions for n in f.node
    }
    kept = [op for op in model.opset_import if op.domain in used | {"", "ai.onnx"}]
    del model.opset_import[:]
    model.opset_import.extend(kept)
    if _renamable(graph):
        _rename(graph)
    onnx.save(model, str(file))


def _renamable(graph: Any) -> bool:
    """Renaming is safe unless a subgraph (If/Loop/Scan) or sparse tensor refers to names."""
    subgraphs = any(attr.g.node or attr.graphs for node in graph.node for attr in node.attribute)
    return not subgraphs and not graph.sparse_initializer


def _rename(graph: Any) -> None:
    """Give initializers, node outputs and nodes short hex names; graph inputs/outputs keep theirs."""
    kept = {v.name for v in graph.input} | {v.name for v in graph.output} | {""}
    names: dict[str, str] = {}

    def short(name: str) -> str:
        if name in kept:
            return name
        return names.setdefault(name, format(len(names), "x"))

    for init in graph.initializer:
        init.name = short(init.name)
        init.doc_string = ""
    for node in graph.node:
        node.name = ""
        node.input[:] = [short(n) for n in node.input]
        node.output[:] = [short(n) for n in node.output]


class _CalibrationReader:
    """Feeds calibration batches to ``quantize_static`` (onnxruntime's CalibrationDataReader API)."""

    def __init__(self, data: dict[str, np.ndarray]) -> None:
        rows = len(next(iter(data.values())))
        self._batches = iter(
            {name: array[i : i + _CALIBRATION_BATCH] for name, array in data.items()}
            for i in range(0, rows, _CALIBRATION_BATCH)
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
