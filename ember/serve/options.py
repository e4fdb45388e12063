"""``ServeOptions``: the server's options, one object shared by ``serve``, ``run``, the worker
group (``ember.serve.scale``) and the CLI.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from ember.serve.batching import BatchingConfig

__all__ = ["ServeOptions", "option_keywords"]

_F = TypeVar("_F", bound=Callable[..., Any])


@dataclass(frozen=True)
class ServeOptions:
    """How ``ember serve`` listens, loads, batches and shuts down.

    ``serve(path, **kwargs)`` and ``run(path, stop=..., **kwargs)`` build one from their keyword
    arguments; pass one instead (``serve(path, options)``) to share a configuration.

    Args:
        host: REST interface (KServe v2, TF Serving, TorchServe, /metrics, /docs).
        port: REST port (0 picks a free one).
        grpc_port: KServe v2 gRPC port on ``host`` (0 picks a free one); None turns gRPC off.
        management_host: management interface; keep it local.
        management_port: management port (0 picks a free one); None turns the management API off.
        token: management bearer token; when None one is read from ``token_file`` or generated.
        token_file: where the token is read from or written to (mode 0600).
            Default ``~/.ember/serve-token``.
        poll_interval: seconds between repository scans for hot reload; 0 turns it off.
        max_batch_size: dynamic batching limit in rows; 1 turns batching off.
        max_queue_delay_ms: how long a request may wait for a batch to fill.
        adaptive_batching: size batches from measured latency to keep p99 under ``target_p99_ms``.
        target_p99_ms: latency target of adaptive batching.
        body_limit: largest request body in bytes (413 above it).
        body_timeout: seconds a request body may take to arrive (408 after); None waits forever.
        runtime: ``"auto"``, ``"onnxruntime"`` or ``"torch"``.
        grace_period: seconds in-flight requests get to finish at shutdown.
        access_log: log every request to the ``ember.serve.access`` logger (INFO); it costs about
            a tenth of the throughput of a tiny model, so it is off by default.
        strict_readiness: ``/v2/health/ready`` answers 200 only while every model has a version
            serving (Triton's default); by default it does while at least one model serves, so
            one failed or pending model does not take a replica out of service.
        workers: server processes sharing the ports (``"auto"``: one per core); see
            ``ember.serve.scale``. Each loads the whole repository.

    Example:
        >>> options = ServeOptions(port=9000, grpc_port=None, max_batch_size=8)
        >>> options.batching.max_batch_size
        8
        >>> options.replace(port=9001).port
        9001
    """

    host: str = "127.0.0.1"
    port: int = 8080
    grpc_port: int | None = 8081
    management_host: str = "127.0.0.1"
    management_port: int | None = 8082
    token: str | None = None
    token_file: str | os.PathLike | None = None
    poll_interval: float = 2.0
    max_batch_size: int = 32
    max_queue_delay_ms: float = 0.0
    adaptive_batching: bool = False
    target_p99_ms: float = 50.0
    body_limit: int = 64 * 1024 * 1024
    body_timeout: float | None = 60.0
    runtime: str = "auto"
    grace_period: float = 30.0
    access_log: bool = False
    strict_readiness: bool = False
    workers: int | str = 1

    def __post_init__(self) -> None:
        # A negative grace period made uvicorn cancel every request at shutdown; a negative
        # poll interval or body timeout was taken silently.
        for name in ("poll_interval", "grace_period", "body_timeout"):
            value = getattr(self, name)
            if value is None and name == "body_timeout":
                continue
            if not isinstance(value, (int, float)) or not value >= 0:
                raise ValueError(f"Received an invalid value for `{name}`, expected a number "
                                 f">= 0 (0 = off). Received: {name}={value!r}")  # fmt: skip

    @classmethod
    def build(
        cls, options: ServeOptions | None, kwargs: dict[str, Any], caller: str = "serve"
    ) -> ServeOptions:
        """``options`` (default ``ServeOptions()``) with ``kwargs`` replacing its fields.

        Raises:
            TypeError: a keyword is not an option; the message lists the allowed ones.
        """
        base = cls() if options is None else options
        if not isinstance(base, ServeOptions):
            raise TypeError(
                f"{caller}() expected `options` to be a ServeOptions. Received: options={options!r}"
            )
        return base.replace(caller=caller, **kwargs) if kwargs else base

    def replace(self, caller: str = "ServeOptions.replace", **changes: Any) -> ServeOptions:
        """A copy with ``changes`` applied (a ``TypeError`` lists the valid names)."""
        names = self.names()
        unknown = [k for k in changes if k not in names]
        if unknown:
            raise TypeError(
                f"{caller}() got unexpected keyword argument(s) {', '.join(map(repr, unknown))}. "
                f"Choose from: {', '.join(names)}."
            )
        return dataclasses.replace(self, **changes)

    @classmethod
    def names(cls) -> list[str]:
        """The option names, in declaration order."""
        return [f.name for f in dataclasses.fields(cls)]

    @property
    def batching(self) -> BatchingConfig:
        """The dynamic batching settings these options describe."""
        return BatchingConfig(
            self.max_batch_size,
            self.max_queue_delay_ms,
            self.adaptive_batching,
            self.target_p99_ms,
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (a path becomes a string); ``from_dict`` reads it back."""
        data = dataclasses.asdict(self)
        if data["token_file"] is not None:
            data["token_file"] = os.fspath(data["token_file"])
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ServeOptions:
        """Options from ``to_dict``'s output (unknown keys raise a ``TypeError``)."""
        return cls().replace(caller="ServeOptions.from_dict", **data)


def option_keywords(defaults: ServeOptions) -> Callable[[_F], _F]:
    """Shows every ``ServeOptions`` field as a keyword of the decorated ``f(..., **kwargs)``.

    ``inspect.signature``, ``help()`` and IDEs then list ``host=``, ``port=`` ... with the
    defaults of ``defaults`` in place of ``**kwargs``; the function still receives them in
    ``kwargs`` and builds its options with ``ServeOptions.build``.

    Example:
        >>> @option_keywords(ServeOptions())
        ... def start(path, options=None, **kwargs): ...
        >>> inspect.signature(start).parameters["port"].default
        8080
    """

    def decorate(func: _F) -> _F:
        signature = inspect.signature(func)
        params = [p for p in signature.parameters.values() if p.kind is not p.VAR_KEYWORD]
        params += [
            inspect.Parameter(
                f.name,
                inspect.Parameter.KEYWORD_ONLY,
                default=getattr(defaults, f.name),
                annotation=f.type,
            )  # fmt: skip
            for f in dataclasses.fields(ServeOptions)
        ]
        func.__signature__ = signature.replace(parameters=params)  # type: ignore[attr-defined]
        return func

    return decorate
