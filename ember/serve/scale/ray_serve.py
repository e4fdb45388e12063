"""ember serve as a Ray Serve application: replicas over a Ray cluster's nodes, autoscaled.

Each replica is a whole ember server without listeners: the model repository, the REST app of
every protocol (KServe v2, TF Serving, TorchServe routes, ``/metrics``) as Ray Serve's ASGI
ingress, and the KServe v2 gRPC methods for Ray Serve's gRPC proxy. Ray Serve routes requests to
replicas, retries a request whose replica died, restarts replicas and scales their number
between ``min_replicas`` and ``max_replicas`` by ongoing requests per replica.

Versions: every replica watches the repository path (shared storage on a real cluster: an NFS
mount, a bucket mounted with a FUSE driver, or the same path on every node) and hot-reloads on
its own. Routing (default version, canary, labels) is the deployment's ``user_config``: Ray Serve
hands a changed one to every replica (``reconfigure``) without restarting them.

Example:
    >>> from ray import serve
    >>> from ember.serve.scale.ray_serve import application
    >>> serve.run(application("models", max_replicas=4), name="ember")  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
from typing import Any

from ray import serve

from ember.serve.options import ServeOptions

__all__ = ["EmberReplica", "GRPC_SERVICER", "application", "deploy"]

logger = logging.getLogger(__name__)

GRPC_SERVICER = "ember.serve.scale.ray_serve.add_grpc_servicer"
_ROUTING_KEYS = ("default", "canary", "labels")


@serve.ingress()
class EmberReplica:
    """One replica: a model repository and the ember app over it.

    Args:
        path: the repository, package or ``.onnx`` file (the same path on every node).
        options: ``poll_interval``, ``runtime``, ``max_batch_size``, ``max_queue_delay_ms``,
            ``body_limit`` (as ``ember.serve.serve``).
    """

    async def __init__(self, path: str, options: dict[str, Any]) -> None:
        from ember.serve.app import build_app
        from ember.serve.metrics import ServeMetrics
        from ember.serve.protocols.kserve_grpc import InferenceServicer
        from ember.serve.repository import ModelRepository

        opts = ServeOptions.from_dict(options)
        self.metrics = ServeMetrics()
        self.repository = ModelRepository(
            path, poll_interval=opts.poll_interval, runtime=opts.runtime,
            batching=opts.batching, metrics=self.metrics,
        )  # fmt: skip
        await self.repository.start()  # Ray sends traffic once the constructor returns
        self._app = build_app(self.repository, metrics=self.metrics,
                              body_limit=opts.body_limit)  # fmt: skip
        self._grpc = InferenceServicer(self.repository, "ember")
        _alias_generated_protos()
        self.node = _node_id()

    def __serve_build_asgi_app__(self) -> Any:
        return _ReplicaHeader(self._app, f"{self.node[:12]}/{os.getpid()}")

    def reconfigure(self, config: dict[str, Any]) -> None:
        """Applies ``{"routing": {model: {"default": v, "canary": [v, percent], "labels": {...}}}}``."""
        for name, routing in _check_routing(config.get("routing")).items():
            if "default" in routing:
                self.repository.set_default(name, routing["default"])
            if "canary" in routing:
                version, percent = routing["canary"]
                self.repository.set_canary(name, version, percent)
            for label, version in (routing.get("labels") or {}).items():
                self.repository.set_label(name, label, version)

    def check_health(self) -> None:
        """Ray restarts a replica whose repository stops being ready."""
        if not self.repository.ready:
            raise RuntimeError("ember repository is not ready")

    # KServe v2 gRPC through Ray Serve's gRPC proxy (methods named as in the proto).
    async def ServerLive(self, request: Any, grpc_context: Any = None) -> Any:  # noqa: N802
        return await self._rpc("ServerLive", request, grpc_context)

    async def ServerReady(self, request: Any, grpc_context: Any = None) -> Any:  # noqa: N802
        return await self._rpc("ServerReady", request, grpc_context)

    async def ModelReady(self, request: Any, grpc_context: Any = None) -> Any:  # noqa: N802
        return await self._rpc("ModelReady", request, grpc_context)

    async def ServerMetadata(self, request: Any, grpc_context: Any = None) -> Any:  # noqa: N802
        return await self._rpc("ServerMetadata", request, grpc_context)

    async def ModelMetadata(self, request: Any, grpc_context: Any = None) -> Any:  # noqa: N802
        return await self._rpc("ModelMetadata", request, grpc_context)

    async def ModelInfer(self, request: Any, grpc_context: Any = None) -> Any:  # noqa: N802
        return await self._rpc("ModelInfer", request, grpc_context)

    async def _rpc(self, method: str, request: Any, grpc_context: Any) -> Any:
        return await getattr(self._grpc, method)(request, _RayContext(grpc_context))


class _ReplicaHeader:
    """Adds ``x-ember-replica: <node id>/<pid>`` to every answer: which replica served it."""

    def __init__(self, app: Any, replica: str) -> None:
        self.app, self.header = app, (b"x-ember-replica", replica.encode())

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        async def tagged(message: dict) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), self.header]
            await send(message)

        await self.app(scope, receive, tagged if scope["type"] == "http" else send)


class _Aborted(Exception):
    """Raised by ``_RayContext.abort``: Ray Serve's proxy answers with the code set on it."""


class _RayContext:
    """What the v2 servicer needs of a grpc.aio context (``abort``), over Ray's context."""

    def __init__(self, context: Any) -> None:
        self.context = context

    async def abort(self, code: Any, details: str) -> None:
        if self.context is not None:
            self.context.set_code(code)
            self.context.set_details(details)
        raise _Aborted(f"{code.name}: {details}")


def application(
    path: str | os.PathLike,
    *,
    name: str = "ember",
    min_replicas: int = 1,
    max_replicas: int = 2,
    target_ongoing_requests: float = 16.0,
    max_ongoing_requests: int = 64,
    max_replicas_per_node: int | None = None,
    num_cpus: float = 1.0,
    resources: dict[str, float] | None = None,
    routing: dict[str, dict] | None = None,
    **options: Any,
) -> Any:
    """The ember Ray Serve application (bind it with ``serve.run``).

    Args:
        path: the repository, package or ``.onnx`` file, at the same path on every node.
        name: the deployment's name.
        min_replicas: fewest replicas (autoscaling's floor; at least 1).
        max_replicas: most replicas.
        target_ongoing_requests: Ray Serve adds replicas above this many in-flight requests
            per replica and removes them below it.
        max_ongoing_requests: requests one replica takes at once (Ray's default, 5, leaves
            ember's dynamic batching nothing to merge and queues the rest in Ray's proxy).
        max_replicas_per_node: spread replicas: at most this many on one node.
        num_cpus: CPUs each replica reserves.
        resources: custom Ray resources each replica needs (``{"gpu_node": 1}``).
        routing: per model ``{"default": v, "canary": [v, percent], "labels": {"stable": v}}``,
            applied by every replica; change it with another ``serve.run`` (no restart).
        options: ``ServeOptions`` fields each replica uses: ``poll_interval``, ``runtime``,
            ``max_batch_size``, ``max_queue_delay_ms``, ``adaptive_batching``, ``target_p99_ms``,
            ``body_limit``.

    Returns:
        A bound Ray Serve application.

    Example:
        >>> app = application("models", min_replicas=1, max_replicas=4)  # doctest: +SKIP
        >>> serve.run(app, name="ember", route_prefix="/")  # doctest: +SKIP
    """
    if not isinstance(min_replicas, int) or not 1 <= min_replicas <= max_replicas:
        raise ValueError("Received invalid replica bounds, expected 1 <= min_replicas <= "
                         f"max_replicas. Received: min_replicas={min_replicas!r}, "
                         f"max_replicas={max_replicas!r}")  # fmt: skip
    if not os.path.exists(path):
        raise ValueError(f"Model repository {str(path)!r} does not exist.")
    routing = _check_routing(routing)
    ServeOptions().replace(caller="application", **options)  # a TypeError names a wrong keyword
    deployment = serve.deployment(
        EmberReplica,
        name=name,
        autoscaling_config={
            "min_replicas": min_replicas,
            "max_replicas": max_replicas,
            "target_ongoing_requests": target_ongoing_requests,
        },
        max_ongoing_requests=max_ongoing_requests,
        max_replicas_per_node=max_replicas_per_node,
        ray_actor_options={"num_cpus": num_cpus, "resources": dict(resources or {})},
        user_config={"routing": routing or {}},
        health_check_period_s=2,
    )
    return deployment.bind(os.path.abspath(path), options)


REQUEST_TIMEOUT_S = 60.0  # the proxy's end-to-end limit per HTTP request


def deploy(
    path: str | os.PathLike,
    *,
    address: str | None = None,
    host: str = "127.0.0.1",
    port: int = 8000,
    grpc_port: int | None = 9000,
    app_name: str = "ember",
    request_timeout_s: float = REQUEST_TIMEOUT_S,
    **kwargs: Any,
) -> None:
    """Connects to a Ray cluster (``address``; None: the local one, or a new one; already
    connected: that one) and runs the application.

    Ray Serve's HTTP proxy listens on ``host:port`` (every route of the ember app under ``/``)
    and its gRPC proxy on ``grpc_port`` (KServe v2 ``inference.GRPCInferenceService``). A request
    not answered within ``request_timeout_s`` gets 408 from the proxy instead of waiting for ever
    (Ray Serve has no limit by default: a request caught on a dying replica could hang).

    Example:
        >>> deploy("models", address="auto", max_replicas=4)  # doctest: +SKIP
    """
    import ray

    if not ray.is_initialized():  # ray.init would replace the caller's SIGTERM handler
        ray.init(address=address, log_to_driver=False)
    grpc_options = None
    if grpc_port is not None:
        grpc_options = {"port": grpc_port, "grpc_servicer_functions": [GRPC_SERVICER]}
    http_options = {"host": host, "port": port, "request_timeout_s": request_timeout_s}
    serve.start(http_options=http_options, grpc_options=grpc_options)
    serve.run(application(path, **kwargs), name=app_name, route_prefix="/")
    logger.info("ember on Ray Serve: http://%s:%d (gRPC %s)", host, port, grpc_port)


def add_grpc_servicer(servicer: Any, server: Any) -> None:
    """Registers ``inference.GRPCInferenceService`` on Ray Serve's gRPC proxy (``GRPC_SERVICER``)."""
    from ember.serve.protocols._grpc import grpc_predict_v2_pb2_grpc

    _alias_generated_protos()
    grpc_predict_v2_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, server)


def _alias_generated_protos() -> None:
    # The generated messages say their module is ``grpc_predict_v2_pb2`` (protoc's top-level
    # name); Ray pickles them between its proxy and the replicas, so that name must import.
    import sys

    from ember.serve.protocols._grpc import grpc_predict_v2_pb2

    sys.modules.setdefault("grpc_predict_v2_pb2", grpc_predict_v2_pb2)


def _check_routing(routing: Any) -> dict[str, dict]:
    if routing is None:
        return {}
    if not isinstance(routing, dict) or not all(isinstance(r, dict) for r in routing.values()):
        raise ValueError("`routing` must map model names to dicts such as "
                         f'{{"digits": {{"default": 2}}}}. Received: {routing!r}')  # fmt: skip
    for name, entry in routing.items():
        unknown = set(entry) - set(_ROUTING_KEYS)
        if unknown:
            raise ValueError(f"Unknown routing keys {sorted(unknown)} for model {name!r}. "
                             f"Allowed: {', '.join(_ROUTING_KEYS)}.")  # fmt: skip
    return routing


def _node_id() -> str:
    import ray

    return ray.get_runtime_context().get_node_id()
