"""Hot reload: keeps a repository's loaded versions in step with the disk.

A scan finds what changed; a new or changed version is loaded and warmed in the background (once
its files stop changing) and gets traffic only when it is ready; a version leaving the policy or the
disk drains its in-flight requests before it is unloaded; a version that fails to load is reported
and never serves, and a version already serving keeps serving when its replacement fails. A version
whose files are still arriving (``versions.pending_versions``) is PENDING: reported, never loaded,
looked at again on the next scan. A model whose directory leaves the disk is unloaded and forgotten.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from ember.serve.batching import BatchingConfig
from ember.serve.model_version import ModelVersion
from ember.serve.routing import ModelRoutes, VersionEntry
from ember.serve.runtime import load_version
from ember.serve.versions import (
    DEFAULT_POLICY,
    Layout,
    fingerprint,
    pending_versions,
    read_config,
    scan,
)

__all__ = ["Reloader"]

logger = logging.getLogger(__name__)

_MAX_ERROR = 1000  # characters of a load error kept for the status APIs


class Reloader:
    """Keeps a repository's loaded versions in step with the disk (owned by ``ModelRepository``).

    The repository owns the routing table (``models``, one ``ModelRoutes`` per name) and the set
    of names unloaded through the management API (``unloaded``); the reloader fills and updates
    them, and owns what only hot reload needs: the scan state, the loader threads, the lock that
    orders scans, and the background loads.

    Args:
        root: the repository root (or the single package / ``.onnx`` file).
        models: the repository's routing table, updated in place.
        unloaded: names the watcher leaves alone (read only).
        executor: the inference thread pool the loaded versions run on.
        single: ``root`` is one model (served as version 1), not a repository.
        runtime: ``"auto"``, ``"onnxruntime"`` or ``"torch"``.
        batching: dynamic batching settings, None for none.
        version_policy: per model name, parsed policies overriding ``config.json``.
        metrics: a ``ServeMetrics`` or None.
        drain_timeout: seconds an old version may take to finish its in-flight requests.
        retire_gate: ``await retire_gate(name, versions)`` before retiring replaced versions.

    Example:
        >>> reloader = Reloader(root, models, set(), executor)  # doctest: +SKIP
        >>> await reloader.sync(immediate=True)  # doctest: +SKIP
    """

    def __init__(
        self,
        root: Path,
        models: dict[str, ModelRoutes],
        unloaded: set[str],
        executor: Executor,
        *,
        single: bool = False,
        runtime: str = "auto",
        batching: BatchingConfig | None = None,
        version_policy: dict[str, dict] | None = None,
        metrics: Any = None,
        drain_timeout: float = 30.0,
        retire_gate: Callable[[str, list[int]], Awaitable[None]] | None = None,
    ) -> None:
        self.root = root
        self.executor = executor
        self.single = single
        self.runtime = runtime
        self.batching = batching
        self.metrics = metrics
        self.drain_timeout = drain_timeout
        self.retire_gate = retire_gate
        self._models = models
        self._unloaded = unloaded
        self._policy_override = version_policy or {}
        self._loader = ThreadPoolExecutor(2, thread_name_prefix="ember-load")
        self._seen: dict[tuple[str, int], Any] = {}  # first sighting of a fingerprint (stability)
        self._refused: set[Path] = set()  # symlinks out of the repository, logged once
        self._background: set[asyncio.Future] = set()
        self._lock: asyncio.Lock | None = None
        self._watcher: asyncio.Task | None = None

    async def start(self, poll_interval: float | None) -> None:
        """Loads every model now (waiting), then scans every ``poll_interval`` s (0/None: never)."""
        self._lock = asyncio.Lock()
        await self.sync(immediate=True)
        if poll_interval:
            self._watcher = asyncio.get_running_loop().create_task(self._watch(poll_interval))

    async def stop(self) -> None:
        """Stops the watcher, cancels loads, retires every version and frees the loader threads."""
        if self._watcher is not None:
            self._watcher.cancel()
            await asyncio.gather(self._watcher, return_exceptions=True)
            self._watcher = None
        for model in self._models.values():
            for entry in model.entries.values():
                if entry.task is not None:
                    entry.task.cancel()
            await self.retire_all(model)
        self._loader.shutdown(wait=False, cancel_futures=True)

    async def retire_all(self, model: ModelRoutes) -> None:
        """Drains and unloads every version of ``model``."""
        await asyncio.gather(*(self._retire(model, v) for v in list(model.entries)))

    async def _watch(self, poll_interval: float) -> None:
        while True:
            await asyncio.sleep(poll_interval)
            try:
                await self.sync(immediate=False)
            except Exception:  # a bad scan must never stop the watcher
                logger.exception("Repository scan failed")

    async def sync(self, *, immediate: bool, only: str | None = None) -> None:
        """Scans the disk and loads/retires what changed (``immediate``: now, and wait).

        Args:
            immediate: load new versions now and wait for them; otherwise a version loads
                once its files stopped changing between two scans, in the background.
            only: scan only this model name.
        """
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            loop = asyncio.get_running_loop()
            layout, pending = await loop.run_in_executor(self._loader, self._scan)
            tasks = []
            for name, versions in layout.items():
                if (only is not None and name != only) or name in self._unloaded:
                    continue
                tasks += self._plan(name, versions, pending.get(name, {}), immediate)
            for name, model in list(self._models.items()):
                if name not in layout and name not in self._unloaded:
                    tasks.append(self._remove(name, model))
        if immediate:
            await asyncio.gather(*tasks)
        else:
            for coro in tasks:
                task = asyncio.ensure_future(coro)
                self._background.add(task)  # keep a reference until it is done
                task.add_done_callback(self._background.discard)

    def _scan(self) -> tuple[Layout, dict[str, dict[int, str]]]:
        layout = scan(self.root, self.single, self._refuse)
        return layout, pending_versions(layout)

    def _refuse(self, path: Path, reason: str) -> None:
        if path not in self._refused:  # once per path, not at every scan
            self._refused.add(path)
            logger.error("Refusing %s: %s", path, reason)

    def _plan(self, name: str, versions: Layout, pending: dict[int, str], immediate: bool) -> list:
        """Decides what to load and what to retire for one model; returns coroutines to run."""
        model = self._models.get(name)
        if model is None:
            model = self._models[name] = ModelRoutes(name, *self._config(name))
        todo = []
        if self._mark_pending(model, versions, pending):
            self._after_change(model)
        failed = model.failed(versions) | set(pending)
        for v, (path, fp) in versions.items():
            entry = model.entries.get(v)
            if v in pending:
                continue
            settled = (
                entry is not None
                and entry.state not in ("END", "PENDING")
                and entry.fingerprint == fp
            )
            if settled or (entry is not None and entry.state in ("LOADING", "UNLOADING")):
                continue
            known = entry is not None and entry.fingerprint == fp  # loaded before: stable
            if not immediate and not known and self._seen.get((name, v)) != fp:
                self._seen[(name, v)] = fp  # load once the files stop changing
                continue
            if v in model.wanted(versions, failed):
                todo.append(self._load(model, v, path, fp))
        model.gone = {v for v in model.entries if v not in versions}
        retire = [self._retire(model, v) for v in sorted(model.gone)]
        if todo and any(model.entries[v].state == "AVAILABLE" for v in model.gone):
            # A serving version was deleted: it serves until its replacement is ready (no gap).
            return [_in_order(todo, retire)]
        return todo + retire

    @staticmethod
    def _mark_pending(model: ModelRoutes, versions: Layout, pending: dict[int, str]) -> bool:
        """Records the pending versions (a loaded one keeps serving); True when a state changed."""
        changed = False
        for v, reason in pending.items():
            entry = model.entries.get(v)
            if entry is not None and entry.state in ("LOADING", "AVAILABLE", "UNLOADING"):
                continue
            if entry is None or (entry.state, entry.error) != ("PENDING", reason):
                entry = model.entries[v] = VersionEntry("PENDING", reason)
                entry.fingerprint = versions[v][1]
                changed = True
        return changed

    async def _remove(self, name: str, model: ModelRoutes) -> None:
        """Unloads a model whose directory left the disk, then forgets it (readiness too)."""
        await self.retire_all(model)
        if self._models.get(name) is model and all(
            e.state == "END" for e in model.entries.values()
        ):
            del self._models[name]
            if self.metrics is not None:
                self.metrics.forget_model(name)
            logger.info("Model %s left the repository: unloaded", name)

    def _config(self, name: str) -> tuple[dict, dict[str, int]]:
        override = self._policy_override.get(name)
        if self.single:
            return override or DEFAULT_POLICY, {}
        return read_config(self.root / name, override)

    async def _load(self, model: ModelRoutes, version: int, path: Path, fp: Any) -> None:
        entry = model.entries.get(version)
        if entry is None or entry.state in ("FAILED", "END", "PENDING"):
            entry = model.entries[version] = VersionEntry()
        entry.fingerprint = fp
        entry.task = asyncio.current_task()
        observe = self.metrics.observer(model.name, version) if self.metrics else None
        try:
            mv = await asyncio.get_running_loop().run_in_executor(
                self._loader,
                lambda: load_version(
                    model.name, version, path, self.executor, runtime=self.runtime,
                    batching=self.batching, observe=observe,
                ),
            )  # fmt: skip
        except Exception as exc:
            logger.error("Version %d of %s failed to load: %s", version, model.name, exc)
            error = str(exc)[:_MAX_ERROR]
            changed = await asyncio.get_running_loop().run_in_executor(
                self._loader, fingerprint, path
            )
            if changed != fp:  # the files changed while loading: look again at the next scan
                error = f"files changed while loading; retrying at the next scan ({error})"
            if entry.mv is None:  # never served: report it; a serving version keeps serving
                entry.state = "FAILED" if changed == fp else "PENDING"
            entry.error = error
            entry.task = None
            self._after_change(model)
            return
        old, entry.mv, entry.state, entry.error, entry.task = entry.mv, mv, "AVAILABLE", None, None
        self._after_change(model)
        if old is not None:
            await self._drain_and_close(old)
        await self._retire_unwanted(model)

    async def _retire_unwanted(self, model: ModelRoutes) -> None:
        if any(e.state == "LOADING" for e in model.entries.values()):
            return  # traffic moves only when every new version has settled
        on_disk = {
            v: (None, e.fingerprint)
            for v, e in model.entries.items()
            if e.state not in ("END", "PENDING") and v not in model.gone
        }
        wanted = model.wanted(on_disk, model.failed(on_disk))
        unwanted = [
            v for v, e in model.entries.items() if e.state == "AVAILABLE" and v not in wanted
        ]
        if unwanted and self.retire_gate is not None:
            # Other workers of a group must serve the replacements before this one drops anything.
            await self.retire_gate(model.name, sorted(set(model.serving) & wanted))
        await asyncio.gather(*(self._retire(model, v) for v in unwanted))

    async def _retire(self, model: ModelRoutes, version: int) -> None:
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

    def _after_change(self, model: ModelRoutes) -> None:
        model.rebuild()
        if self.metrics is not None:
            self.metrics.set_loaded(model.name, len(model.serving))
            self.metrics.set_states(model.name, {v: e.state for v, e in model.entries.items()})


async def _in_order(first: list, then: list) -> None:
    await asyncio.gather(*first)
    await asyncio.gather(*then)
