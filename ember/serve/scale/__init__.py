"""Serving past one process: worker groups on one machine, Ray Serve, KServe (see DESIGN.md).

Example:
    >>> from ember.serve import serve
    >>> serve("models", port=8080, workers=2)  # doctest: +SKIP
"""

from __future__ import annotations

from ember.serve.scale.workers import WorkerGroup, resolve_workers, serve_workers

__all__ = ["WorkerGroup", "resolve_workers", "serve_workers"]
