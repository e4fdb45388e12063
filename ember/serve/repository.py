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
serves.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from ember.serve.batching import BatchingConfig
from ember.serve.errors import ServeError
from ember.serve.runtime import RUNTIMES, ModelVersion, load_version

__all__ = ["ModelRepository", "check_model_name"]

logger = logging.getLogger(__name__)

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")
_POLICIES = ("latest", "all", "specific")


def check_model_name(name: str) -> str:
    """Returns ``name`` when it is a safe model directory name, else raises ``ServeError(400)``.

    Example:
        >>> check_model_name("../etc")
        Traceback (most recent call last):
        ...
        ember.serve.errors.ServeError: Invalid model name '../etc': ...
    """
    if not isinstance(name, str) or not _NAME.match(name) or ".." in name:
        raise ServeError(
            400,
            f"Invalid model name {name!r}: use letters, digits, '_', '-' and '.', starting with a "
            "letter or digit; no '..', no '/', no absolute paths.",
        )
    return name


class _Entry:
    """The state of one version: what serves it and what the disk held when it was loaded."""

    __slots__ = ("state", "error", "fingerprint", "mv", "task")

    def __init__(self) -> None:
        self.state = "LOADING"
        self.error: str | None = None
        self.fingerprint: Any = None
        self.mv: ModelVersion | None = None
        self.task: asyncio.Task | None = None


class _Model:
    def __init__(self, name: str, policy: dict, labels: dict[str, int]) -> None:
        self.name = name
        self.policy = policy
        self.labels = labels
        self.entries: dict[int, _Entry] = {}
        self.pinned: int | None = None
        self.canary: tuple[int, float] | None = None
        self.history: list[tuple[int | None, tuple[int, float] | None]] = []
        self.serving: list[int] = []  # AVAILABLE versions, newest first (rebuilt on each change)
        self.preferred: list[int] = []
        self.gone: set[int] = set()  # versions whose directory has left the disk

    def rebuild(self) -> None:
        self.serving = sorted(
            (v for v, e in self.entries.items() if e.state == "AVAILABLE" and e.mv), reverse=True
        )
        # The default route prefers what the policy serves over versions kept only for a label.
        chosen = _by_policy(self.policy, self.serving)
        self.preferred = [v for v in self.serving if v in chosen] or self.serving

    def route(self) -> int | None:
        if self.canary is not None and self.canary[0] in self.serving:
            if random.random() * 100.0 < self.canary[1]:
                return self.canary[0]
        if self.pinned is not None and self.pinned in self.serving:
            return self.pinned
        return self.preferred[0] if self.preferred else None


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
        self._policy_override = {k: _parse_policy(v, k) for k, v in (version_policy or {}).items()}
        self._single = self.root.is_file() or _is_version_dir(self.root)
        self._models: dict[str, _Model] = {}
        self._unloaded: set[str] = set()
        self._seen: dict[tuple[str, int], Any] = {}  # first sighting of a fingerprint (stability)
        workers = threads or max(4, os.cpu_count() or 1)
        self.executor = ThreadPoolExecutor(workers, thread_name_prefix="ember-infer")
        self._loader = ThreadPoolExecutor(2, thread_name_prefix="ember-load")
        self._watcher: asyncio.Task | None = None
        self._background: set[asyncio.Future] = set()
        self._started = False
        self._lock: asyncio.Lock | None = None

    # ----------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        """Loads and warms every model (ready when done), then starts the watcher."""
        self._lock = asyncio.Lock()
        await self._sync(immediate=True)
        self._started = True
        if self.poll_interval:
            self._watcher = asyncio.get_running_loop().create_task(self._watch())
        logger.info("Repository %s ready: %s", self.root, ", ".join(self._models) or "no models")

    async def stop(self) -> None:
        """Stops the watcher, drains every version and frees the runtimes."""
        if self._watcher is not None:
            self._watcher.cancel()
            await asyncio.gather(self._watcher, return_exceptions=True)
            self._watcher = None
        for model in self._models.values():
            for entry in model.entries.values():
                if entry.task is not None:
                    entry.task.cancel()
            await asyncio.gather(*(self._retire(model, v) for v in list(model.entries)))
        self.executor.shutdown(wait=False, cancel_futures=True)
        self._loader.shutdown(wait=False, cancel_futures=True)
        self._started = False

    @property
    def ready(self) -> bool:
        """True once started and every model (not unloaded) has a version serving."""
        return self._started and all(
            m.serving for n, m in self._models.items() if n not in self._unloaded
        )

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
            v = _parse_version(version)
        else:
            v = model.route()
            if v is None:
                raise ServeError(503, f"Model {name!r} has no version ready yet.")
        entry = model.entries.get(v)
        if entry is None or entry.state != "AVAILABLE" or entry.mv is None:
            state = entry.state if entry else "unknown"
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

        States: ``AVAILABLE``, ``LOADING``, ``FAILED`` (with ``error``), ``UNLOADING``, ``END``;
        routing: ``default``, ``labels`` and ``canary_percent``.
        """
        rows = []
        for model in self._models.values():
            if name is not None and model.name != name:
                continue
            default = (
                model.pinned if model.pinned in model.serving else (model.serving or [None])[0]
            )
            for v in sorted(model.entries):
                entry = model.entries[v]
                row: dict[str, Any] = {"name": model.name, "version": v, "state": entry.state}
                if model.name in self._unloaded and entry.state == "END":
                    row["state"] = "UNLOADED"
                if entry.error:
                    row["error"] = entry.error
                row["default"] = v == default
                row["labels"] = [k for k, lv in model.labels.items() if lv == v]
                if model.canary and model.canary[0] == v:
                    row["canary_percent"] = model.canary[1]
                rows.append(row)
        if name is not None and not rows and name not in self._models:
            raise ServeError(
                404, f"Unknown model {name!r}. Available models: {', '.join(self.models())}."
            )
        return rows

    # ----------------------------------------------------------------- management
    async def load_model(self, name: str) -> list[dict]:
        """Loads (or reloads) a model from ``root/<name>`` and waits until it settles."""
        check_model_name(name)
        if self._single:
            raise ServeError(
                400, "This server serves a single model; there is nothing else to load."
            )
        path = (self.root / name).resolve()
        if path.parent != self.root or not path.is_dir():
            raise ServeError(404, f"No model directory {name!r} in the repository {self.root}.")
        self._unloaded.discard(name)
        await self._sync(immediate=True, only=name)
        return self.status(name)

    async def unload_model(self, name: str) -> list[dict]:
        """Stops serving a model: its versions drain and unload; the watcher leaves it alone."""
        model = self._model(name)
        self._unloaded.add(name)
        await asyncio.gather(*(self._retire(model, v) for v in list(model.entries)))
        return self.status(name)

    def set_default(self, name: str, version: int | str) -> None:
        """Pins the version that serves requests naming no version (until rollback)."""
        model = self._model(name)
        v = self._available(model, version)
        model.history.append((model.pinned, model.canary))
        model.pinned = v

    def set_canary(self, name: str, version: int | str, percent: float) -> None:
        """Sends ``percent`` of the default traffic to ``version``; 0 ends the canary."""
        model = self._model(name)
        if (
            isinstance(percent, bool)
            or not isinstance(percent, (int, float))
            or not 0 <= percent <= 100
        ):
            raise ServeError(
                400, f"'percent' must be a number from 0 to 100, received {percent!r}."
            )
        v = self._available(model, version)
        model.history.append((model.pinned, model.canary))
        model.canary = (v, float(percent)) if percent > 0 else None

    def set_label(self, name: str, label: str, version: int | str) -> None:
        """Points a version label (``stable``, ``canary``, ...) at an AVAILABLE version."""
        model = self._model(name)
        if not isinstance(label, str) or not re.match(r"^[A-Za-z0-9_\-]{1,64}$", label):
            raise ServeError(400, f"Invalid label {label!r}: use 1-64 letters, digits, '_' or '-'.")
        model.labels[label] = self._available(model, version)

    def rollback(self, name: str) -> dict:
        """Undoes the last ``set_default`` or ``set_canary``; returns the routing now in force."""
        model = self._model(name)
        if not model.history:
            raise ServeError(400, f"Nothing to roll back for model {name!r}.")
        model.pinned, model.canary = model.history.pop()
        return {
            "default": model.route() if model.canary is None else model.pinned,
            "canary": model.canary,
        }

    def _model(self, name: str) -> _Model:
        check_model_name(name)
        model = self._models.get(name)
        if model is None:
            raise ServeError(
                404, f"Unknown model {name!r}. Available models: {', '.join(self._models)}."
            )
        return model

    @staticmethod
    def _available(model: _Model, version: int | str) -> int:
        v = _parse_version(version)
        if v not in model.serving:
            raise ServeError(
                404,
                f"Version {v} of model {model.name!r} is not available. "
                f"Serving versions: {', '.join(map(str, model.serving)) or 'none'}.",
            )
        return v

    # ----------------------------------------------------------------- disk sync
    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.poll_interval)
            try:
                await self._sync(immediate=False)
            except Exception:  # a bad scan must never stop the watcher
                logger.exception("Repository scan failed")

    async def _sync(self, *, immediate: bool, only: str | None = None) -> None:
        async with self._lock:
            loop = asyncio.get_running_loop()
            layout = await loop.run_in_executor(self._loader, self._scan)
            tasks = []
            for name, versions in layout.items():
                if (only is not None and name != only) or name in self._unloaded:
                    continue
                tasks += self._plan(name, versions, immediate)
            for name, model in self._models.items():
                if name not in layout and name not in self._unloaded:
                    tasks += [self._retire(model, v) for v in list(model.entries)]
        if immediate:
            await asyncio.gather(*tasks)
        else:
            for coro in tasks:
                task = asyncio.ensure_future(coro)
                self._background.add(task)  # keep a reference until it is done
                task.add_done_callback(self._background.discard)

    def _scan(self) -> dict[str, dict[int, tuple[Path, Any]]]:
        """Reads the disk: ``{name: {version: (path, fingerprint)}}`` (runs in a thread)."""
        if self._single:
            return {_single_name(self.root): {1: (self.root, _fingerprint(self.root))}}
        layout = {}
        for model_dir in sorted(self.root.iterdir()):
            if not model_dir.is_dir() or not _NAME.match(model_dir.name):
                continue
            versions = {}
            for vdir in model_dir.iterdir():
                if vdir.is_dir() and vdir.name.isdigit():
                    versions[int(vdir.name)] = (vdir, _fingerprint(vdir))
            layout[model_dir.name] = versions
        return layout

    def _plan(self, name: str, versions: dict[int, tuple[Path, Any]], immediate: bool) -> list:
        """Decides what to load and what to retire for one model; returns coroutines to run."""
        model = self._models.get(name)
        if model is None:
            policy, labels = self._read_config(name)
            model = self._models[name] = _Model(name, policy, labels)
        todo = []
        for v, (path, fp) in versions.items():
            entry = model.entries.get(v)
            settled = entry is not None and entry.state != "END" and entry.fingerprint == fp
            if settled or (entry is not None and entry.state in ("LOADING", "UNLOADING")):
                continue
            known = entry is not None and entry.fingerprint == fp  # loaded before: stable
            if not immediate and not known and self._seen.get((name, v)) != fp:
                self._seen[(name, v)] = fp  # load once the files stop changing
                continue
            if v in _wanted(model, versions, self._failed(model, versions)):
                todo.append(self._load(model, v, path, fp))
        model.gone = {v for v in model.entries if v not in versions}
        retire = [self._retire(model, v) for v in sorted(model.gone)]
        if todo and any(model.entries[v].state == "AVAILABLE" for v in model.gone):
            # A serving version was deleted: it serves until its replacement is ready (no gap).
            return [_in_order(todo, retire)]
        return todo + retire

    def _failed(self, model: _Model, versions: dict) -> set[int]:
        return {
            v
            for v, e in model.entries.items()
            if e.state == "FAILED" and v in versions and e.fingerprint == versions[v][1]
        }

    async def _load(self, model: _Model, version: int, path: Path, fp: Any) -> None:
        entry = model.entries.get(version)
        if entry is None or entry.state in ("FAILED", "END"):
            entry = model.entries[version] = _Entry()
        entry.fingerprint = fp
        entry.task = asyncio.current_task()
        observe = self.metrics.observer(model.name, version) if self.metrics else None
        try:
            mv = await asyncio.get_running_loop().run_in_executor(
                self._loader,
                lambda: load_version(
                    model.name,
                    version,
                    path,
                    self.executor,
                    runtime=self.runtime,
                    batching=self.batching,
                    observe=observe,
                ),
            )
        except Exception as exc:
            logger.error("Version %d of %s failed to load: %s", version, model.name, exc)
            if entry.mv is None:  # never served: report it; a serving version keeps serving
                entry.state = "FAILED"
            entry.error = str(exc)
            entry.task = None
            self._after_change(model)
            return
        old, entry.mv, entry.state, entry.error, entry.task = entry.mv, mv, "AVAILABLE", None, None
        self._after_change(model)
        if old is not None:
            await self._drain_and_close(old)
        await self._retire_unwanted(model)

    async def _retire_unwanted(self, model: _Model) -> None:
        if any(e.state == "LOADING" for e in model.entries.values()):
            return  # traffic moves only when every new version has settled
        on_disk = {
            v: (None, e.fingerprint)
            for v, e in model.entries.items()
            if e.state != "END" and v not in model.gone
        }
        wanted = _wanted(model, on_disk, self._failed(model, on_disk))
        await asyncio.gather(
            *(
                self._retire(model, v)
                for v, e in list(model.entries.items())
                if e.state == "AVAILABLE" and v not in wanted
            )
        )

    async def _retire(self, model: _Model, version: int) -> None:
        entry = model.entries.get(version)
        if entry is None or entry.state in ("UNLOADING", "END"):
            return
        if entry.task is not None and entry.task is not asyncio.current_task():
            entry.task.cancel()
        mv, entry.mv = entry.mv, None
        entry.state = "UNLOADING" if mv is not None else "END"
        self._after_change(model)
        if mv is not None:
            await self._drain_and_close(mv)
            entry.state = "END"
            logger.info("Unloaded %s version %d", model.name, version)

    async def _drain_and_close(self, mv: ModelVersion) -> None:
        mv.state = "UNLOADING"
        if not await mv.drain(self.drain_timeout):
            logger.warning(
                "%s version %d: in-flight requests still running after %.0fs",
                mv.name,
                mv.version,
                self.drain_timeout,
            )
        await mv.close()

    def _after_change(self, model: _Model) -> None:
        model.rebuild()
        if self.metrics is not None:
            self.metrics.set_loaded(model.name, len(model.serving))

    def _read_config(self, name: str) -> tuple[dict, dict[str, int]]:
        config: dict = {}
        config_file = self.root / name / "config.json"
        if not self._single and config_file.is_file():
            try:
                config = json.loads(config_file.read_text())
            except (OSError, ValueError) as exc:
                logger.error("Ignoring unreadable %s: %s", config_file, exc)
        policy = self._policy_override.get(name) or _parse_policy(
            config.get("version_policy") or {"latest": {"num_versions": 1}}, name
        )
        labels = {str(k): int(v) for k, v in (config.get("labels") or {}).items()}
        return policy, labels


async def _in_order(first: list, then: list) -> None:
    await asyncio.gather(*first)
    await asyncio.gather(*then)


def _wanted(model: _Model, versions: dict, failed: set[int]) -> set[int]:
    """Versions the policy wants served (failed ones skipped so an older one keeps serving)."""
    candidates = sorted((v for v in versions if v not in failed), reverse=True)
    wanted = _by_policy(model.policy, candidates)
    pinned = (
        {model.pinned} | set(model.labels.values()) | ({model.canary[0]} if model.canary else set())
    )
    return wanted | (pinned & set(candidates))


def _by_policy(policy: dict, candidates: list[int]) -> set[int]:
    """The versions a policy selects from ``candidates`` (sorted newest first)."""
    kind, arg = next(iter(policy.items()))
    if kind == "latest":
        return set(candidates[: int(arg.get("num_versions", 1))])
    if kind == "all":
        return set(candidates)
    return set(candidates) & {int(v) for v in arg.get("versions", [])}


def _parse_policy(policy: Any, name: str) -> dict:
    if isinstance(policy, str):
        policy = {policy: {}}
    if not isinstance(policy, dict) or len(policy) != 1 or next(iter(policy)) not in _POLICIES:
        raise ValueError(
            f"Invalid version_policy for model {name!r}: {policy!r}. Use one of "
            '{"latest": {"num_versions": N}}, {"all": {}}, {"specific": {"versions": [...]}}.'
        )
    return policy


def _parse_version(version: int | str) -> int:
    if isinstance(version, bool):
        version = str(version)
    if isinstance(version, int) and version >= 0:
        return version
    if isinstance(version, str) and version.isdigit() and len(version) < 19:
        return int(version)
    raise ServeError(400, f"Invalid version {version!r}: expected a non-negative integer.")


def _is_version_dir(path: Path) -> bool:
    return (path / "ember.json").is_file() or (path / "model.onnx").is_file()


def _single_name(path: Path) -> str:
    if path.is_file():
        name = path.stem
    else:
        try:
            name = json.loads((path / "ember.json").read_text()).get("name") or path.name
        except (OSError, ValueError):
            name = path.name
    name = re.sub(r"[^A-Za-z0-9_.\-]", "_", str(name)).lstrip(".") or "model"
    return name


def _fingerprint(path: Path) -> Any:
    """What changes when the files of a version change: names, sizes and modification times."""
    try:
        if path.is_file():
            st = path.stat()
            return (st.st_size, st.st_mtime_ns)
        return tuple(
            sorted(
                (e.name, e.stat().st_size, e.stat().st_mtime_ns)
                for e in os.scandir(path)
                if e.is_file()
            )
        )
    except OSError:
        return None
