"""The model repository: models and versions on disk, version policy, labels, canary, hot reload.

Layout (what TF Serving and Triton users know)::

    models/
      digits/
        config.json   optional: {"version_policy": {"latest": {"num_versions": 1}},
                                 "labels": {"stable": 1}}
        1/            a model package (ember.json, model.onnx ...) or a dir with only model.onnx
        2/

A path to one package directory, a directory holding only ``model.onnx`` or a ``.onnx`` file is
served as a one-model repository (version 1). A watcher polls the disk: a new version is loaded and
warmed in the background and gets traffic only when it is ready; a version leaving the policy drains
its in-flight requests before it is unloaded; a version that fails to load is reported and never
serves; a version whose files are still arriving is PENDING; a model whose directory is removed is
unloaded. Readiness (``ready``) follows Triton's ``--strict-readiness`` switch, see ``ready``.

The parts live by concept: ``versions`` (disk layout, version policy), ``routing`` (which version
serves a request: default, pinned, labels, canary) and ``reload`` (the watcher keeping the loaded
versions in step with the disk: a ``Reloader`` the repository owns). ``ModelRepository`` ties
them together behind one API.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from ember.serve.batching import BatchingConfig
from ember.serve.errors import ServeError
from ember.serve.model_version import ModelVersion
from ember.serve.reload import Reloader
from ember.serve.routing import ModelRoutes
from ember.serve.runtime import RUNTIMES
from ember.serve.versions import (
    check_model_name,
    is_version_dir,
    model_dir,
    parse_policy,
    parse_version,
)

__all__ = ["ModelRepository", "check_model_name"]

logger = logging.getLogger(__name__)


class ModelRepository:
    """Models on disk, loaded, versioned and kept in sync with the disk.

    Args:
        root: a repository directory (``<name>/<version>/``), one package directory, a directory
            with only ``model.onnx``, or a ``.onnx`` file.
        poll_interval: seconds between disk scans; 0 or None turns hot reload off.
        runtime: ``"auto"``, ``"onnxruntime"`` or ``"torch"``.
        batching: dynamic batching settings; None turns batching off.
        version_policy: per model name, overrides ``config.json``:
            ``{"latest": {"num_versions": 2}}``, ``{"all": {}}`` or
            ``{"specific": {"versions": [1, 3]}}``.
        metrics: a ``ServeMetrics`` to record batches and loaded models in, or None.
        drain_timeout: seconds an old version may take to finish its in-flight requests.
        threads: inference thread pool size (default: CPU count, at least 4).
        strict_readiness: ``ready`` only while every model has a version serving (Triton's
            ``--strict-readiness=true``); by default one failed or pending model does not make
            the server unready (see ``ready``).
        retire_gate: ``await retire_gate(name, versions)`` before hot reload retires a version
            that ``versions`` replace; a worker group waits there until every worker serves them.

    Example:
        >>> repo = ModelRepository(Path("models"), poll_interval=2.0)  # doctest: +SKIP
        >>> await repo.start()  # doctest: +SKIP
        >>> await repo.get("digits").infer({"input": x})  # doctest: +SKIP
    """

    def __init__(
        self,
        root: Path | str,
        *,
        poll_interval: float | None = 2.0,
        runtime: str = "auto",
        batching: BatchingConfig | None = None,
        version_policy: dict[str, dict] | None = None,
        metrics: Any = None,
        drain_timeout: float = 30.0,
        threads: int | None = None,
        strict_readiness: bool = False,
        retire_gate: Callable[[str, list[int]], Awaitable[None]] | None = None,
    ) -> None:
        self.root = Path(root).expanduser().resolve()
        if not self.root.exists():
            raise ValueError(f"Model repository {str(root)!r} does not exist.")
        if runtime not in RUNTIMES:
            raise ValueError(f"Unknown runtime {runtime!r}. Choose one of: {', '.join(RUNTIMES)}")
        self.poll_interval = poll_interval
        self.runtime = runtime
        self.batching = batching
        self.metrics = metrics
        self.drain_timeout = drain_timeout
        self.strict_readiness = bool(strict_readiness)
        self.retire_gate = retire_gate
        policies = {k: parse_policy(v, k) for k, v in (version_policy or {}).items()}
        self._single = self.root.is_file() or is_version_dir(self.root)
        self._models: dict[str, ModelRoutes] = {}  # filled and updated by the reloader
        self._unloaded: set[str] = set()  # unloaded through the management API
        workers = threads or max(4, os.cpu_count() or 1)
        self.executor = ThreadPoolExecutor(workers, thread_name_prefix="ember-infer")
        self._reloader = Reloader(
            self.root, self._models, self._unloaded, self.executor, single=self._single,
            runtime=runtime, batching=batching, version_policy=policies, metrics=metrics,
            drain_timeout=drain_timeout, retire_gate=retire_gate,
        )  # fmt: skip
        self._started = False

    # ----------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        """Loads and warms every model (ready when done), then starts the watcher."""
        await self._reloader.start(self.poll_interval)
        self._started = True
        logger.info("Repository %s ready: %s", self.root, ", ".join(self._models) or "no models")

    async def stop(self) -> None:
        """Stops the watcher, drains every version and frees the runtimes."""
        await self._reloader.stop()
        self.executor.shutdown(wait=False, cancel_futures=True)
        self._started = False

    @property
    def started(self) -> bool:
        """True once the startup load has settled (every model loaded, failed or pending)."""
        return self._started

    @property
    def ready(self) -> bool:
        """Whether the server is ready for traffic (``/v2/health/ready``, ``/ping``, gRPC).

        Never before the startup load has settled (every model loaded, failed or pending).
        Then, with ``strict_readiness``, only while every model (not unloaded) has a version
        serving, as Triton's default; otherwise while at least one model serves (or the
        repository holds no version at all): a failed or pending model is reported in the
        status APIs and ``ember_model_version_state`` but does not take the server out of a
        load balancer. Per-model readiness is ``/v2/models/{name}/ready``.
        """
        if not self._started:
            return False
        models = [m for n, m in self._models.items() if n not in self._unloaded]
        if self.strict_readiness:
            return all(m.serving for m in models)
        return any(m.serving for m in models) or not any(m.entries for m in models)

    # ----------------------------------------------------------------- routing
    def get(
        self, name: str, version: str | int | None = None, label: str | None = None
    ) -> ModelVersion:
        """Returns the version that serves a request (default, pinned, labelled or canary).

        Args:
            name: model name.
            version: a version number (int or its string); None for the default route.
            label: a version label such as ``"stable"``; exclusive with ``version``.

        Raises:
            ServeError: 404 for an unknown model, version or label, 400 for a malformed version.
        """
        model = self._models.get(name)
        if model is None or name in self._unloaded:
            known = ", ".join(n for n in self._models if n not in self._unloaded) or "none"
            raise ServeError(404, f"Unknown model {name!r}. Available models: {known}.")
        if label is not None:
            if label not in model.labels:
                known = ", ".join(model.labels) or "none"
                raise ServeError(
                    404, f"Unknown label {label!r} for model {name!r}. Labels: {known}."
                )
            v = model.labels[label]
        elif version is not None and version != "":
            v = parse_version(version)
        else:
            v = model.route()
            if v is None:
                why = model.not_serving()
                raise ServeError(503, f"Model {name!r} has no version ready"
                                 + (f": {why}." if why else " yet."))  # fmt: skip
        entry = model.entries.get(v)
        if entry is None or entry.state != "AVAILABLE" or entry.mv is None:
            state = entry.state if entry else "unknown"
            if entry is not None and entry.error:
                state += f": {entry.error}"
            serving = ", ".join(map(str, model.serving)) or "none"
            raise ServeError(
                404,
                f"Version {v} of model {name!r} is not available (state: {state}). "
                f"Serving versions: {serving}.",
            )
        return entry.mv

    def models(self) -> list[str]:
        """Names of the models being served."""
        return [n for n in self._models if n not in self._unloaded]

    def versions(self, name: str) -> list[ModelVersion]:
        """The AVAILABLE versions of a model, newest first (404 when unknown)."""
        model = self._models.get(name)
        if model is None or name in self._unloaded:
            raise ServeError(
                404, f"Unknown model {name!r}. Available models: {', '.join(self.models())}."
            )
        return [model.entries[v].mv for v in model.serving]

    def status(self, name: str | None = None) -> list[dict]:
        """Every model version with its state and routing.

        States: ``AVAILABLE``, ``LOADING``, ``PENDING`` (files still arriving, with ``error``),
        ``FAILED`` (with ``error``), ``UNLOADING``, ``END``;
        routing: ``default``, ``labels`` and ``canary_percent``.
        """
        rows = []
        for model in self._models.values():
            if name is None or model.name == name:
                rows += model.status_rows(model.name in self._unloaded)
        if name is not None and not rows and name not in self._models:
            raise ServeError(
                404, f"Unknown model {name!r}. Available models: {', '.join(self.models())}."
            )
        return rows

    # ----------------------------------------------------------------- management
    async def load_model(self, name: str) -> list[dict]:
        """Loads (or reloads) a model from ``root/<name>`` and waits until it settles.

        Returns the model's status rows; a row ``FAILED`` or ``PENDING`` carries its ``error``
        (the management API answers 400 with the reasons then).
        """
        check_model_name(name)
        if self._single:
            raise ServeError(
                400, "This server serves a single model; there is nothing else to load."
            )
        model_dir(self.root, name)  # 400 for a symlink out of the repository, 404 when missing
        self._unloaded.discard(name)
        await self._reloader.sync(immediate=True, only=name)
        return self.status(name)

    async def unload_model(self, name: str) -> list[dict]:
        """Stops serving a model: its versions drain and unload; the watcher leaves it alone."""
        model = self._model(name)
        self._unloaded.add(name)
        await self._reloader.retire_all(model)
        return self.status(name)

    def set_default(self, name: str, version: int | str) -> None:
        """Pins the version that serves requests naming no version (until rollback)."""
        self._model(name).set_default(version)

    def set_canary(self, name: str, version: int | str, percent: float) -> None:
        """Sends ``percent`` of the default traffic to ``version``; 0 ends the canary."""
        self._model(name).set_canary(version, percent)

    def set_label(self, name: str, label: str, version: int | str) -> None:
        """Points a version label (``stable``, ``canary``, ...) at an AVAILABLE version."""
        self._model(name).set_label(label, version)

    def rollback(self, name: str) -> dict:
        """Undoes the last ``set_default`` or ``set_canary``; returns the routing now in force."""
        return self._model(name).rollback()

    def _model(self, name: str) -> ModelRoutes:
        check_model_name(name)
        model = self._models.get(name)
        if model is None:
            raise ServeError(
                404, f"Unknown model {name!r}. Available models: {', '.join(self._models)}."
            )
        return model
