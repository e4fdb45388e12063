"""The ``mobile`` target: an ExecuTorch ``.pte`` (XNNPACK) and an ONNX Runtime Mobile ``.ort``."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ember import package
from ember.export import verify
from ember.export.errors import ExportError, require, way_out
from ember.export.onnx import FILE as ONNX_FILE
from ember.export.onnx import export_onnx, onnx_runner

__all__ = ["MAX_BATCH", "export_mobile", "run_pte"]

logger = logging.getLogger(__name__)

PTE_FILE = "mobile/model.pte"
ORT_FILE = "mobile/model.ort"
MAX_BATCH = 64  # ExecuTorch plans memory ahead of time, so the dynamic batch needs a bound


def export_mobile(
    package_dir: str | os.PathLike,
    *,
    rtol: float | None = 1e-4,
    static: bool = False,
    **options: Any,
) -> dict:
    """Write ``mobile/model.pte`` and ``mobile/model.ort``, run both on the sample, record figures.

    Args:
        package_dir: the package directory.
        rtol: tolerance on ``max_rel_diff`` for both files (both are fp32).
        static: export the ``.pte`` with the stored sample's fixed shapes (batch and sequence
            included), for models whose dynamic axes cannot lower (e.g. a reshape on the batch).
            The ``.ort`` keeps the ONNX target's dynamic axes.
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
    (package_dir / "mobile").mkdir(exist_ok=True)
    files = [PTE_FILE, ORT_FILE]
    try:
        bounds = _write_pte(package_dir, manifest["signature"], static)
        _write_ort(package_dir / ONNX_FILE, package_dir / ORT_FILE)
    except Exception:
        package.remove_target(package_dir, "mobile", files)
        raise
    task = manifest.get("task")
    pte_file = package_dir / PTE_FILE
    try:
        pte = verify.parity_on_samples(
            package_dir, lambda feed: run_pte(pte_file, feed), task=task, static=static
        )
    except RuntimeError as exc:  # the runtime's own error, e.g. "execute() failed with error 0x12"
        package.remove_target(package_dir, "mobile", files)
        hint = "" if static else " Export it with fixed shapes: --static / static=True."
        raise ExportError(
            f"The ExecuTorch program was written but fails to run on the stored samples "
            f"({package.first_line(exc)}), typically a dynamic axis its memory plan cannot "
            f"take.{hint}"
        ) from exc
    ort = verify.parity_on_samples(package_dir, onnx_runner(package_dir / ORT_FILE), task=task)
    worst = {
        k: max(pte[k], ort[k]) if "diff" in k else min(pte[k], ort[k])
        for k in pte
        if k != "checked_shapes"
    }
    info = {
        "file": PTE_FILE,
        "ort_file": ORT_FILE,
        **worst,
        "checked_shapes": pte["checked_shapes"],
        "pte": pte,
        "ort": ort,
        "static": static,
        "max_batch": None if static else MAX_BATCH,
        "max_sizes": bounds,
        "size_bytes": (package_dir / PTE_FILE).stat().st_size,
        "ort_size_bytes": (package_dir / ORT_FILE).stat().st_size,
    }
    return verify.accept(package_dir, "mobile", info, files, rtol=rtol, min_top1=None)


def run_pte(file: str | os.PathLike, inputs: torch.Tensor) -> Any:
    """Run an ExecuTorch program's ``forward`` through ``executorch.runtime``.

    Args:
        file: a ``.pte`` file.
        inputs: one tensor ``(N, ...)`` with ``N <= MAX_BATCH`` (returns the first output), or
            ``{name: array}`` in signature order (returns every output, as a list).

    Returns:
        The output as a numpy array, or a list of them for named inputs.

    Example:
        >>> run_pte("digits/mobile/model.pte", torch.zeros(1, 1, 8, 8)).shape
        (1, 10)
    """
    runtime = require("executorch.runtime", "mobile").Runtime.get()
    with _native_stderr_hidden():  # XNNPACK's cpuinfo prints probe notes on first use
        method = runtime.load_program(Path(file)).load_method("forward")
        if isinstance(inputs, dict):
            args = [torch.from_numpy(np.ascontiguousarray(a)) for a in inputs.values()]
            return [out.numpy() for out in method.execute(args)]
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


def _write_pte(package_dir: Path, signature: dict, static: bool) -> dict:
    """Lower to XNNPACK; returns the upper bound of each dynamic dim (empty when static)."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import EdgeCompileConfig, to_edge_transform_and_lower
    from torch.nn.attention import SDPBackend, sdpa_kernel

    model = package.load(package_dir).flat
    inputs, _ = package.load_named_sample(package_dir)
    bounds: dict[str, int] = {}
    if static:
        trace, shapes = tuple(inputs.values()), None
    else:
        # Memory planning sizes buffers from the traced shape, so trace at the largest sizes:
        # MAX_BATCH rows and, for a dim like "sequence", its recorded maximum (else 4x the sample).
        bounds = {"batch": MAX_BATCH}
        for name, axes in (signature.get("dynamic_axes") or {}).items():
            for axis, dim in axes.items():
                recorded = ((signature.get("dims") or {}).get(dim) or {}).get("max")
                bounds.setdefault(dim, int(recorded or 4 * inputs[name].shape[int(axis)]))
        trace = tuple(_grow(t, n, signature, bounds) for n, t in inputs.items())
        shapes = package.dims_for_export(signature, max_batch=MAX_BATCH, max_sizes=bounds)
    try:
        # Trace and decompose attention with the math kernel: the CPU fused kernel's decomposition
        # returns another memory layout than the kernel traced, so a later .view (GPT-2's Conv1D)
        # fails with "Cannot view a tensor ..." (pytorch/pytorch#136543).
        with sdpa_kernel([SDPBackend.MATH]):
            program = torch.export.export(model, trace, dynamic_shapes=shapes)
            lowered = to_edge_transform_and_lower(
                program,
                partitioner=[XnnpackPartitioner()],
                # ExecuTorch 1.5's dtype verifier takes len() of an op's first output tensor
                # (split, unbind: Tensor[] outputs), which fixes a dynamic batch at the traced
                # size; the program then fails at run time with error 0x12. Skip it when dynamic.
                compile_config=EdgeCompileConfig(_check_ir_validity=static),
            )
        (package_dir / PTE_FILE).write_bytes(lowered.to_executorch().buffer)
    except Exception as exc:  # export and lowering raise many types
        raise ExportError(
            "Cannot export to ExecuTorch: " + way_out(exc, target="mobile", static=static)
        ) from exc
    if not static:
        _check_still_dynamic(lowered.exported_program(), signature, list(inputs))
    return bounds


def _check_still_dynamic(program: Any, signature: dict, names: list[str]) -> None:
    """Fail with the axis's name when lowering fixed a dynamic axis at its traced size."""
    from torch.fx.experimental.symbolic_shapes import is_concrete_int

    values = {n.name: n.meta.get("val") for n in program.graph.nodes if n.op == "placeholder"}
    axes = signature.get("dynamic_axes") or {}
    for name, placeholder in zip(names, program.graph_signature.user_inputs):
        shape = getattr(values.get(placeholder), "shape", None)
        wanted = {0: "batch", **{int(a): d for a, d in (axes.get(name) or {}).items()}}
        for axis, dim in wanted.items():
            if shape is not None and is_concrete_int(shape[axis]):  # a SymInt may be fixed too
                other = "" if axis == 0 else f", or save the package without {dim!r}"
                raise ExportError(
                    f"ExecuTorch fixed the dynamic axis {dim!r} of input {name!r} at "
                    f"{shape[axis]} while lowering, so the program would fail on other sizes. "
                    f"Way out: ember export DIR --to mobile --static (fixed shapes){other}."
                )


def _grow(t: torch.Tensor, name: str, signature: dict, bounds: dict) -> torch.Tensor:
    """``t`` at its dims' upper bounds: rows repeated, other axes extended by their last slice."""
    t = t.repeat(-(-MAX_BATCH // t.shape[0]), *[1] * (t.dim() - 1))[:MAX_BATCH]
    for axis, dim in ((signature.get("dynamic_axes") or {}).get(name) or {}).items():
        axis, length = int(axis), bounds[dim]
        last = t.narrow(axis, t.shape[axis] - 1, 1)
        if length > t.shape[axis]:
            size = [length - t.shape[axis] if i == axis else -1 for i in range(t.dim())]
            t = torch.cat([t, last.expand(*size)], dim=axis)
    return t.contiguous()


def _write_ort(source: Path, target: Path) -> None:
    ort = require("onnxruntime", "export")
    options = ort.SessionOptions()
    # Basic optimisations only: the saved graph must stay portable to ORT Mobile builds.
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = str(target)
    options.add_session_config_entry("session.save_model_format", "ORT")
    ort.InferenceSession(str(source), options, providers=["CPUExecutionProvider"])
