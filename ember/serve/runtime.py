"""The runtimes behind the ``Runtime`` protocol, and ``load_version``, which loads one version.

ONNX Runtime is the default (threads set for the machine; it releases the GIL while computing, so
inference runs in a thread pool and the event loop never blocks). Packages without ``model.onnx``
run on torch in eager mode through ``ember.package.load``.
"""

from __future__ import annotations

import logging
import os
import threading
from concurrent.futures import Executor
from pathlib import Path
from typing import Any

import numpy as np

from ember import package
from ember.serve.batching import BatchingConfig, ObserveFn
from ember.serve.errors import ServeError
from ember.serve.model_version import ModelVersion, Runtime
from ember.serve.tensors import TensorSpec, numpy_dtype
from ember.serve.validation import check_manifest, verify_version_files

__all__ = ["ModelVersion", "Runtime", "TensorSpec", "load_version", "ort_session", "RUNTIMES"]

logger = logging.getLogger(__name__)

RUNTIMES = ("auto", "onnxruntime", "torch")
# torch.export.load keeps state in module globals: two loads at once fail.
_TORCH_LOAD_LOCK = threading.Lock()
SHRINK_ARENA_BYTES = 8 * 2**20
"""Input bytes above which an ONNX Runtime run gives its grown CPU arena back when it ends."""
_ARENA_SHRINKAGE = "memory.enable_memory_arena_shrinkage"


def load_version(
    name: str,
    version: int,
    path: Path,
    executor: Executor,
    *,
    runtime: str = "auto",
    batching: BatchingConfig | None = None,
    observe: ObserveFn | None = None,
) -> ModelVersion:
    """Loads, checks and warms one version (blocking: call it in a thread).

    Args:
        name: model name.
        version: version number.
        path: a package directory, a directory with only ``model.onnx``, or a ``.onnx`` file.
        executor: thread pool for inference.
        runtime: ``"auto"`` (ONNX Runtime when there is a model.onnx, else torch),
            ``"onnxruntime"`` or ``"torch"``.
        batching: dynamic batching settings, None for none.
        observe: metrics callback for each model call (see ``Batcher``).

    Returns:
        The warmed ``ModelVersion``.

    Raises:
        ServeError: the package is corrupt, has no runnable model, or fails its parity check.
    """
    if runtime not in RUNTIMES:
        raise ValueError(f"Unknown runtime {runtime!r}. Choose one of: {', '.join(RUNTIMES)}")
    path = Path(path)
    manifest = _read_manifest(path)
    verify_version_files(path, manifest)  # every listed file, whatever runtime serves it
    onnx_file = path if path.is_file() else path / "model.onnx"
    if runtime == "onnxruntime" or (runtime == "auto" and onnx_file.is_file()):
        _check_hash(onnx_file, manifest)
        engine: Runtime = _OrtRuntime(onnx_file)
    else:
        engine = _TorchRuntime(path, manifest)
    check_manifest(path, manifest, engine.inputs, engine.outputs)  # labels, shapes, dtypes
    mv = ModelVersion(
        name, version, path, engine, executor, manifest=manifest, batching=batching, observe=observe
    )
    _warm_up(engine, path, manifest)
    logger.info("Loaded %s version %d (%s) from %s", name, version, engine.platform, path)
    return mv


def _read_manifest(path: Path) -> dict:
    if not path.is_dir() or not (path / package.MANIFEST).is_file():
        return {}
    try:
        return package.read_manifest(path)
    except package.PackageError as exc:
        raise ServeError(400, f"Corrupt manifest in {path}: {exc}") from None


def _check_hash(onnx_file: Path, manifest: dict) -> None:
    if onnx_file.name not in (manifest.get("files") or {}) or not onnx_file.is_file():
        return
    try:
        package.verify_files(onnx_file.parent, manifest, names=[onnx_file.name])
    except package.PackageError as exc:
        raise ServeError(400, f"Corrupt package: {exc}") from None


def ort_session(onnx_file: Path, threads: int | None = None) -> Any:
    """An ONNX Runtime session configured as ember serves it.

    Args:
        onnx_file: the model.
        threads: intra-op threads; default one for small models (under 4 MiB, where a thread
            pool's hand-off costs more than it saves: batch-1 latency halves) else every core.

    Example:
        >>> session = ort_session(Path("digits/model.onnx"))
    """
    import onnxruntime as ort

    if threads is None:
        threads = 1 if Path(onnx_file).stat().st_size < 4 * 2**20 else (os.cpu_count() or 1)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    # One thread: nothing to spin for. Several (a large model): spinning between the parallel
    # parts of a run keeps them on their cores (about 15% more batch-1 requests/s for the
    # benchmark's compute-bound CNN); a small model's single thread never spins.
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if threads > 1 else "0")
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # A request the model cannot take (a token id past the vocabulary) is answered with a 400
    # carrying ORT's message; ORT would also print it, in colour codes, on every such request.
    options.log_severity_level = 4
    available = ort.get_available_providers()
    providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
    return ort.InferenceSession(str(onnx_file), options, providers=providers)


class _OrtRuntime:
    """ONNX Runtime behind ``run(inputs) -> outputs``, with a lean per-call path.

    For a small model ``InferenceSession.run`` costs about as much in Python as the model computes:
    each call re-checks the feed in Python, rebuilds the output names and builds a default
    ``RunOptions`` (about 5 of 12 us for the batch-1 demo MLP). ``run`` instead calls the session's
    C++ binding with the names and one ``RunOptions`` made here (never mutated, so concurrent threads
    share it safely; the binding itself is thread-safe). A feed whose names differ from the model's
    inputs, or an execution-provider failure, goes through the public ``session.run``: same errors,
    same CPU fallback. Outputs are identical to ``session.run``'s.
    """

    platform = "onnxruntime"

    def __init__(self, onnx_file: Path) -> None:
        import onnxruntime as ort
        from onnxruntime.capi.onnxruntime_pybind11_state import EPFail

        try:
            self._session = ort_session(onnx_file)
        except Exception as exc:  # ORT raises its own exception types for corrupt files
            raise ServeError(400, f"Cannot load {onnx_file}: {exc}") from None
        self.inputs = [
            TensorSpec.parse(i.name, i.type, i.shape) for i in self._session.get_inputs()
        ]
        self.outputs = [
            TensorSpec.parse(o.name, o.type, o.shape) for o in self._session.get_outputs()
        ]
        self._names = [o.name for o in self.outputs]
        self._feed_names = frozenset(s.name for s in self.inputs)
        self._run_options = ort.RunOptions()
        # A big request grows the CPU arena and ONNX Runtime keeps it grown (issue 13 measured
        # about a third of the 120-190 MB held after four 60 MB requests): such runs shrink it
        # back when they end. Small requests keep the plain options (no shrink, no cost).
        self._shrink_options = ort.RunOptions()
        self._shrink_options.add_run_config_entry(_ARENA_SHRINKAGE, "cpu:0")
        self._shrink_above = SHRINK_ARENA_BYTES
        self._fast_run = _binding_run(self._session)
        self._ep_fail = EPFail

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        size = 0
        for array in inputs.values():  # a loop: a quarter of sum()'s cost (about 0.25 us)
            size += array.nbytes
        options = self._shrink_options if size > self._shrink_above else self._run_options
        if inputs.keys() == self._feed_names:
            try:
                results = self._fast_run(self._names, inputs, options)
            except self._ep_fail:  # the public run retries on the fallback providers
                results = self._session.run(self._names, inputs, options)
        else:  # the public run raises its clear error for a missing input
            results = self._session.run(self._names, inputs, options)
        if len(results) == 1:  # 0.25 us less than dict(zip(...)) on a ~7 us call
            return {self._names[0]: results[0]}
        return dict(zip(self._names, results))

    def close(self) -> None:
        """Drops the session (ONNX Runtime frees it, arena included, once unreferenced)."""
        self._session = None
        self._fast_run = None


def _binding_run(session: Any) -> Any:
    """``session._sess.run`` (the C++ binding), or the public ``session.run`` where it is missing.

    Both take ``(output_names, input_feed, run_options)`` and return the outputs as a list.
    """
    run = getattr(getattr(session, "_sess", None), "run", None)
    if not callable(run):
        logger.warning("onnxruntime has no InferenceSession._sess.run: using session.run")
        return session.run
    return run


class _TorchRuntime:
    """A package's exported program on torch (eager), behind ``run(inputs) -> outputs``."""

    platform = "pytorch"

    def __init__(self, path: Path, manifest: dict) -> None:
        import torch

        signature = manifest.get("signature") or {}
        if not signature.get("inputs") or not signature.get("outputs"):
            raise ServeError(400, f"No model.onnx and no signature in {path}/ember.json.")
        try:
            with _TORCH_LOAD_LOCK:
                self._module = package.load(path).eval()
        except Exception as exc:
            raise ServeError(400, f"Cannot load package {path}: {exc}") from None
        self._torch = torch
        self.inputs = [
            TensorSpec.parse(s["name"], s["dtype"], s["shape"]) for s in signature["inputs"]
        ]
        self.outputs = [
            TensorSpec.parse(s["name"], s["dtype"], s["shape"]) for s in signature["outputs"]
        ]

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        torch = self._torch
        args = [torch.from_numpy(np.ascontiguousarray(inputs[s.name])) for s in self.inputs]
        with torch.inference_mode():
            result = self._module.flat(*args)
        return {s.name: t.detach().cpu().numpy() for s, t in zip(self.outputs, result)}

    def close(self) -> None:
        """Drops the module and its weights."""
        self._module = None


def _warm_up(engine: Runtime, path: Path, manifest: dict) -> None:
    """Runs the package's samples (checking parity) or zeros once, so the first request is fast.

    Every stored sample is run: the one saved with the package and, where an axis beyond the
    batch is dynamic, the same rows at another length, so a runtime that lost that axis fails
    here rather than on the first request of another length.
    """
    if package.SAMPLE in (manifest.get("files") or {}) and path.is_dir():
        try:
            samples = package.load_samples(path)
        except package.PackageError as exc:
            raise ServeError(400, f"Corrupt package: {exc}") from None
        names = [s.name for s in engine.inputs]
        for kind, (inputs, expected) in samples.items():
            if list(inputs) != names or list(expected) != [s.name for s in engine.outputs]:
                break  # a runtime whose names differ from the signature: warm with zeros
            feed = {
                spec.name: inputs[spec.name].numpy().astype(numpy_dtype(spec.datatype))
                for spec in engine.inputs
            }
            try:
                actual = engine.run(feed)
            except Exception as exc:  # e.g. a model.onnx that lost a dynamic axis
                shapes = {n: list(a.shape) for n, a in feed.items()}
                raise ServeError(
                    400, f"{engine.platform} cannot run the package's {kind} sample {shapes}: {exc}"
                ) from None
            for name, want in expected.items():
                _check_parity(actual[name], want.numpy(), manifest, engine.platform)
        else:
            return
    zeros = {}
    for spec in engine.inputs:
        shape = [d if d >= 0 else 1 for d in spec.shape]
        zeros[spec.name] = np.zeros(shape, dtype=numpy_dtype(spec.datatype))
    engine.run(zeros)


def _check_parity(actual: np.ndarray, expected: np.ndarray, manifest: dict, platform: str) -> None:
    record = (manifest.get("targets") or {}).get("onnx") or {}
    recorded = float(record.get("max_abs_diff") or 0.0)
    atol = max(1e-4, 10.0 * recorded)
    diff = float(np.max(np.abs(actual.astype(np.float64) - expected))) if actual.size else 0.0
    scale = float(np.max(np.abs(expected))) if expected.size else 0.0
    if actual.shape != expected.shape or diff > atol + 1e-3 * scale:
        raise ServeError(
            400,
            f"Failed parity: {platform} output differs from the package sample by {diff:.3g} "
            f"(allowed {atol:.3g}; recorded max_abs_diff {recorded:.3g}).",
        )
