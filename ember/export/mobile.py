"""The ``mobile`` target: an ExecuTorch ``.pte`` (XNNPACK) and an ONNX Runtime Mobile ``.ort``."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from ember import package
from ember.export import verify
from ember.export.errors import ExportError, require, way_out
from ember.export.onnx import FILE as ONNX_FILE
from ember.export.onnx import export_onnx, run_onnx

__all__ = ["MAX_BATCH", "export_mobile", "run_pte"]

logger = logging.getLogger(__name__)

PTE_FILE = "mobile/model.pte"
ORT_FILE = "mobile/model.ort"
MAX_BATCH = 64  # ExecuTorch plans memory ahead of time, so the dynamic batch needs a bound


def export_mobile(
    package_dir: str | os.PathLike,
    *,
    rtol: float | None = 1e-4,
    **options: Any,
) -> dict:
    """Write ``mobile/model.pte`` and ``mobile/model.ort``, run both on the sample, record figures.

    Args:
        package_dir: the package directory.
        rtol: tolerance on ``max_rel_diff`` for both files (both are fp32).
        **options: passed to the ``onnx`` target when it has to be written first.

    Returns:
        Figures under ``targets.mobile``: those of the ``.pte`` plus ``ort_*`` for the ``.ort``.

    Raises:
        MissingDependencyError: executorch is missing (``pip install 'ember[mobile]'``).
        ExportError: lowering fails or parity is beyond ``rtol``.

    Example:
        >>> export_mobile("digits")["max_batch"]
        64
    """
    require("executorch.runtime", "mobile")
    package_dir = Path(package_dir)
    manifest = package.read_manifest(package_dir)
    if "onnx" not in manifest.get("targets", {}):
        export_onnx(package_dir, rtol=rtol, **options)
    inputs, expected = package.load_sample(package_dir)
    (package_dir / "mobile").mkdir(exist_ok=True)
    files = [PTE_FILE, ORT_FILE]
    try:
        _write_pte(package_dir, inputs)
        _write_ort(package_dir / ONNX_FILE, package_dir / ORT_FILE)
    except Exception:
        package.remove_target(package_dir, "mobile", files)
        raise
    task = manifest.get("task")
    pte = verify.parity(expected.numpy(), run_pte(package_dir / PTE_FILE, inputs), task=task)
    ort = verify.parity(
        expected.numpy(), run_onnx(package_dir / ORT_FILE, inputs.numpy()), task=task
    )
    worst = {k: max(pte[k], ort[k]) if "diff" in k else min(pte[k], ort[k]) for k in pte}
    info = {
        "file": PTE_FILE,
        "ort_file": ORT_FILE,
        **worst,
        "pte": pte,
        "ort": ort,
        "max_batch": MAX_BATCH,
        "size_bytes": (package_dir / PTE_FILE).stat().st_size,
        "ort_size_bytes": (package_dir / ORT_FILE).stat().st_size,
    }
    return verify.accept(package_dir, "mobile", info, files, rtol=rtol, min_top1=None)


def run_pte(file: str | os.PathLike, inputs: torch.Tensor) -> Any:
    """Run an ExecuTorch program's ``forward`` through ``executorch.runtime``.

    Args:
        file: a ``.pte`` file with one tensor input and output.
        inputs: ``(N, ...)`` with ``N <= MAX_BATCH``.

    Returns:
        The output as a numpy array.

    Example:
        >>> run_pte("digits/mobile/model.pte", torch.zeros(1, 1, 8, 8)).shape
        (1, 10)
    """
    runtime = require("executorch.runtime", "mobile").Runtime.get()
    with _native_stderr_hidden():  # XNNPACK's cpuinfo prints probe notes on first use
        method = runtime.load_program(Path(file)).load_method("forward")
        return method.execute([inputs.contiguous()])[0].numpy()


@contextlib.contextmanager
def _native_stderr_hidden() -> Iterator[None]:
    """Point file descriptor 2 at /dev/null for the block (C++ prints; Python errors still raise)."""
    if logger.isEnabledFor(logging.INFO):  # `ember -v` shows everything
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _write_pte(package_dir: Path, inputs: torch.Tensor) -> None:
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    model = package.load(package_dir)
    # Memory planning sizes buffers from the traced shape, so trace at the largest batch.
    reps = -(-MAX_BATCH // inputs.shape[0])
    trace = inputs.repeat(reps, *[1] * (inputs.dim() - 1))[:MAX_BATCH]
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    try:
        program = torch.export.export(model, (trace,), dynamic_shapes=({0: batch},))
        lowered = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()])
        (package_dir / PTE_FILE).write_bytes(lowered.to_executorch().buffer)
    except Exception as exc:  # export and lowering raise many types
        raise ExportError("Cannot export to ExecuTorch: " + way_out(exc)) from exc


def _write_ort(source: Path, target: Path) -> None:
    ort = require("onnxruntime", "export")
    options = ort.SessionOptions()
    # Basic optimisations only: the saved graph must stay portable to ORT Mobile builds.
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = str(target)
    options.add_session_config_entry("session.save_model_format", "ORT")
    ort.InferenceSession(str(source), options, providers=["CPUExecutionProvider"])
