"""``ember serve``: a model server for model packages and ONNX models.

KServe v2 (REST and gRPC), TF Serving REST and TorchServe style APIs on one port; versions, hot
reload, canary, dynamic batching, Prometheus metrics and a local, token-protected management API.

Example:
    >>> from ember.serve import serve
    >>> serve("models", port=8080, grpc_port=8081)  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

from ember.serve.batching import BatchingConfig
from ember.serve.errors import ServeError
from ember.serve.model_version import ModelVersion, Runtime
from ember.serve.options import ServeOptions
from ember.serve.repository import ModelRepository
from ember.serve.tensors import TensorSpec

__all__ = [
    "BatchingConfig",
    "ModelRepository",
    "ModelVersion",
    "Runtime",
    "ServeError",
    "ServeMetrics",
    "ServeOptions",
    "TensorSpec",
    "build_app",
    "build_management_app",
    "run",
    "serve",
]

_LAZY = {
    "serve": "ember.serve.server",
    "run": "ember.serve.server",
    "build_app": "ember.serve.app",
    "build_management_app": "ember.serve.management",
    "ServeMetrics": "ember.serve.metrics",
}


def __getattr__(name: str) -> Any:
    # starlette, uvicorn and prometheus_client load only when the server is used.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'ember.serve' has no attribute {name!r}")
