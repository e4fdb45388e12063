"""``ModelVersion``: one loaded, servable version of a model, and the ``Runtime`` it runs on.

A runtime is anything that follows the ``Runtime`` protocol (``ember.serve.runtime`` holds the
ONNX Runtime and torch ones); ``ModelVersion`` adds what the server needs around it: the
signature, the batching queue, the in-flight count that a drain waits for, and the metadata.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import Executor
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from ember.serve.batching import Batcher, BatchingConfig, ObserveFn
from ember.serve.errors import ServeError
from ember.serve.tensors import TensorSpec, check_inputs

__all__ = ["ModelVersion", "Runtime"]


@runtime_checkable
class Runtime(Protocol):
    """What ``ModelVersion`` needs from an inference engine (ONNX Runtime, torch, your own).

    Attributes:
        platform: the KServe platform name, e.g. ``"onnxruntime"`` or ``"pytorch"``.
        inputs: one ``TensorSpec`` per model input, in the model's order (``-1``: dynamic axis).
        outputs: one ``TensorSpec`` per model output.

    ``run`` is called from a thread pool, several threads at once: it must be thread-safe (ONNX
    Runtime's session and torch in inference mode are). ``close`` frees what the engine holds;
    ``run`` is never called after it.

    Example:
        >>> class Doubler:
        ...     platform = "custom"
        ...     inputs = [TensorSpec("x", "FP32", [-1, 2])]
        ...     outputs = [TensorSpec("y", "FP32", [-1, 2])]
        ...     def run(self, inputs):
        ...         return {"y": inputs["x"] * 2}
        ...     def close(self):
        ...         pass
        >>> isinstance(Doubler(), Runtime)
        True
    """

    platform: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Runs one (possibly batched) request: one array per input name, one per output name."""
        ...

    def close(self) -> None:
        """Frees the engine's memory (sessions, modules)."""
        ...


class ModelVersion:
    """One version of one model: its signature, its runtime and its batching queue.

    Built by ``load_version`` (or ``ModelRepository``); use ``infer`` from the event loop.

    Attributes:
        name, version, platform (``"onnxruntime"`` or ``"pytorch"``), labels, task,
        inputs, outputs (lists of ``TensorSpec``), path, manifest, state, error.

    Example:
        >>> mv = repository.get("digits")  # doctest: +SKIP
        >>> (await mv.infer({"input": x}))["output"].shape  # doctest: +SKIP
        (1, 10)
    """

    def __init__(
        self,
        name: str,
        version: int,
        path: Path,
        runtime: Runtime,
        executor: Executor,
        *,
        manifest: dict | None = None,
        batching: BatchingConfig | None = None,
        observe: ObserveFn | None = None,
    ) -> None:
        self.name = name
        self.version = version
        self.path = path
        self.manifest = manifest or {}
        self.platform: str = runtime.platform
        self.labels: list[str] | None = self.manifest.get("labels")
        self.task: str | None = self.manifest.get("task")
        self.inputs: list[TensorSpec] = runtime.inputs
        self.outputs: list[TensorSpec] = runtime.outputs
        self.state = "AVAILABLE"
        self.error: str | None = None
        self._runtime: Runtime | None = runtime
        self._executor = executor
        self._output_names = {s.name for s in self.outputs}
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        batchable = all(s.shape[:1] == [-1] for s in self.inputs + self.outputs)
        self._batcher = (
            Batcher(runtime.run, executor, batching, observe)
            if batching is not None and batching.enabled and batchable
            else None
        )
        self._observe = observe
        self._limits = _axis_limits(self.manifest)

    @property
    def in_flight(self) -> int:
        """Requests currently inside ``infer``."""
        return self._in_flight

    async def infer(
        self, inputs: dict[str, np.ndarray], output_names: list[str] | None = None
    ) -> dict[str, np.ndarray]:
        """Runs the model on one request (through the dynamic batcher when batching is on).

        Args:
            inputs: one array per model input, batch along dim 0.
            output_names: outputs to return; all when None.

        Returns:
            The requested outputs by name.

        Raises:
            ServeError: 400 for a missing or mismatched input or an unknown output name.
        """
        self._in_flight += 1  # before any await: a drain started after get() waits for us
        self._idle.clear()
        try:
            check_inputs(self.inputs, inputs)
            for name, axis, dim, most in self._limits:
                if inputs[name].shape[axis] > most:  # e.g. BERT's 64 position embeddings
                    raise ServeError(400, f"Input {name!r}: axis {axis} ({dim}) takes at most "
                                     f"{most}, received {inputs[name].shape[axis]}.")  # fmt: skip
            if output_names:
                self._check_outputs(output_names)
            if self._batcher is not None:
                outputs = await self._batcher.submit(inputs)
            else:
                outputs = await self._run_alone(inputs)
        finally:
            self._in_flight -= 1
            if self._in_flight == 0:
                self._idle.set()
        if output_names:
            return {n: outputs[n] for n in output_names}
        return outputs

    async def _run_alone(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        loop = asyncio.get_running_loop()
        start = loop.time()
        outputs = await loop.run_in_executor(self._executor, self._runtime.run, inputs)
        if self._observe is not None:
            first = next(iter(inputs.values()))
            self._observe(first.shape[0] if first.ndim else 1, [0.0], loop.time() - start)
        return outputs

    def _check_outputs(self, names: list[str]) -> None:
        unknown = [n for n in names if n not in self._output_names]
        if unknown:
            raise ServeError(
                400,
                f"Unknown output(s) {unknown} for model {self.name!r}. "
                f"Outputs: {', '.join(s.name for s in self.outputs)}.",
            )

    async def drain(self, timeout: float = 30.0) -> bool:
        """Waits until no request is in flight; returns False when ``timeout`` passed first."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
            return True
        except asyncio.TimeoutError:
            return False

    async def close(self) -> None:
        """Stops the batcher and frees the runtime (call after ``drain``)."""
        if self._batcher is not None:
            await self._batcher.close()
        self.state = "END"
        if self._runtime is not None and self._in_flight == 0:
            self._runtime.close()  # a request still running past the drain keeps its runtime
        self._runtime = None

    def metadata(self) -> dict[str, Any]:
        """KServe v2 model metadata of this version."""
        return {
            "name": self.name,
            "versions": [str(self.version)],
            "platform": self.platform,
            "inputs": [s.to_dict() for s in self.inputs],
            "outputs": [s.to_dict() for s in self.outputs],
        }

    def __repr__(self) -> str:
        return f"ModelVersion(name={self.name!r}, version={self.version}, state={self.state!r})"


def _axis_limits(manifest: dict) -> list[tuple[str, int, str, int]]:
    """``(input, axis, dim name, maximum)`` for each dynamic axis whose package records a maximum.

    Beyond it the runtime fails with its own words (ONNX Runtime: "invalid expand shape").
    """
    signature = manifest.get("signature") or {}
    dims = signature.get("dims") or {}
    limits = []
    for name, axes in (signature.get("dynamic_axes") or {}).items():
        for axis, dim in (axes or {}).items():
            most = (dims.get(dim) or {}).get("max")
            if isinstance(most, int) and str(axis).isdigit():
                limits.append((name, int(axis), dim, most))
    return limits
