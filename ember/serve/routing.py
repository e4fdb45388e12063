"""Which version serves a request: per-model state, version policy, pinned default, labels, canary.

``ModelRoutes`` holds one model's versions (``VersionEntry``: state, fingerprint, the loaded
``ModelVersion``) and its routing, and answers ``route()`` on the request hot path from a list it
rebuilds only when a version changes state.
"""

from __future__ import annotations

import asyncio
import random
import re
from typing import Any

from ember.serve.errors import ServeError
from ember.serve.model_version import ModelVersion
from ember.serve.versions import parse_version, select_versions

__all__ = ["ModelRoutes", "VersionEntry"]

_LABEL = re.compile(r"[A-Za-z0-9_\-]{1,64}")  # used with fullmatch


class VersionEntry:
    """The state of one version: what serves it and what the disk held when it was loaded.

    States: ``PENDING`` (files still arriving, with ``error`` saying which), ``LOADING``,
    ``AVAILABLE``, ``FAILED`` (with ``error``), ``UNLOADING``, ``END``.
    """

    __slots__ = ("state", "error", "fingerprint", "mv", "task")

    def __init__(self, state: str = "LOADING", error: str | None = None) -> None:
        self.state = state
        self.error = error
        self.fingerprint: Any = None
        self.mv: ModelVersion | None = None
        self.task: asyncio.Task | None = None


class ModelRoutes:
    """One model: its versions and how requests are routed among them.

    Args:
        name: model name.
        policy: version policy (see ``ember.serve.versions.parse_policy``).
        labels: ``{label: version}``.

    Example:
        >>> routes = ModelRoutes("digits", {"latest": {"num_versions": 1}}, {})
        >>> routes.route() is None  # nothing loaded yet
        True
    """

    def __init__(self, name: str, policy: dict, labels: dict[str, int]) -> None:
        self.name = name
        self.policy = policy
        self.labels = labels
        self.entries: dict[int, VersionEntry] = {}
        self.pinned: int | None = None
        self.canary: tuple[int, float] | None = None
        self.history: list[tuple[int | None, tuple[int, float] | None]] = []
        self.serving: list[int] = []  # AVAILABLE versions, newest first (rebuilt on each change)
        self.preferred: list[int] = []
        self.gone: set[int] = set()  # versions whose directory has left the disk

    def rebuild(self) -> None:
        """Recomputes ``serving`` and ``preferred`` after a version changed state."""
        self.serving = sorted(
            (v for v, e in self.entries.items() if e.state == "AVAILABLE" and e.mv), reverse=True
        )
        # The default route prefers what the policy serves over versions kept only for a label.
        chosen = select_versions(self.policy, self.serving)
        self.preferred = [v for v in self.serving if v in chosen] or self.serving

    def route(self) -> int | None:
        """The version for a request naming none: canary share, else pinned, else newest."""
        if self.canary is not None and self.canary[0] in self.serving:
            if random.random() * 100.0 < self.canary[1]:
                return self.canary[0]
        if self.pinned is not None and self.pinned in self.serving:
            return self.pinned
        return self.preferred[0] if self.preferred else None

    def wanted(self, versions: dict, failed: set[int]) -> set[int]:
        """Versions to serve: the policy's (failed ones skipped so an older one keeps serving)
        plus any pinned, labelled or canary version still on disk."""
        candidates = sorted((v for v in versions if v not in failed), reverse=True)
        keep = {self.pinned} | set(self.labels.values())
        if self.canary:
            keep.add(self.canary[0])
        return select_versions(self.policy, candidates) | (keep & set(candidates))

    def failed(self, versions: dict) -> set[int]:
        """Versions that failed to load from the files still on disk (not retried until changed)."""
        return {
            v
            for v, e in self.entries.items()
            if e.state == "FAILED" and v in versions and e.fingerprint == versions[v][1]
        }

    def not_serving(self) -> str:
        """Why no version serves: the newest failed or pending versions (up to 3) and their
        reasons ("" if none)."""
        why = [
            f"version {v} {e.state}: {e.error.rstrip('.')}"  # the caller ends the sentence
            for v, e in sorted(self.entries.items(), reverse=True)
            if e.state in ("FAILED", "PENDING") and e.error
        ]
        return "; ".join(why[:3])

    def available(self, version: int | str) -> int:
        """Returns ``version`` as an int when it is serving, else raises ``ServeError(404)``."""
        v = parse_version(version)
        if v not in self.serving:
            raise ServeError(
                404,
                f"Version {v} of model {self.name!r} is not available. "
                f"Serving versions: {', '.join(map(str, self.serving)) or 'none'}.",
            )
        return v

    def set_default(self, version: int | str) -> None:
        """Pins the version that serves requests naming no version (until rollback)."""
        v = self.available(version)
        self.history.append((self.pinned, self.canary))
        self.pinned = v

    def set_canary(self, version: int | str, percent: float) -> None:
        """Sends ``percent`` of the default traffic to ``version``; 0 ends the canary."""
        if (
            isinstance(percent, bool)
            or not isinstance(percent, (int, float))
            or not 0 <= percent <= 100
        ):
            raise ServeError(
                400, f"'percent' must be a number from 0 to 100, received {percent!r}."
            )
        v = self.available(version)
        self.history.append((self.pinned, self.canary))
        self.canary = (v, float(percent)) if percent > 0 else None

    def set_label(self, label: str, version: int | str) -> None:
        """Points a version label (``stable``, ``canary``, ...) at an AVAILABLE version."""
        if not isinstance(label, str) or not _LABEL.fullmatch(label):
            raise ServeError(400, f"Invalid label {label!r}: use 1-64 letters, digits, '_' or '-'.")
        self.labels[label] = self.available(version)

    def rollback(self) -> dict:
        """Undoes the last ``set_default`` or ``set_canary``; returns the routing now in force."""
        if not self.history:
            raise ServeError(400, f"Nothing to roll back for model {self.name!r}.")
        self.pinned, self.canary = self.history.pop()
        return {
            "default": self.route() if self.canary is None else self.pinned,
            "canary": self.canary,
        }

    def status_rows(self, unloaded: bool) -> list[dict]:
        """One status row per version (see ``ModelRepository.status``)."""
        default = self.pinned if self.pinned in self.serving else (self.serving or [None])[0]
        rows = []
        for v in sorted(self.entries):
            entry = self.entries[v]
            row: dict[str, Any] = {"name": self.name, "version": v, "state": entry.state}
            if unloaded and entry.state == "END":
                row["state"] = "UNLOADED"
            if entry.error:
                row["error"] = entry.error
            row["default"] = v == default
            row["labels"] = [k for k, lv in self.labels.items() if lv == v]
            if self.canary and self.canary[0] == v:
                row["canary_percent"] = self.canary[1]
            rows.append(row)
        return rows
