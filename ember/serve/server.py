"""``ember serve``: the repository, the REST app, the gRPC server and the management listener
on one event loop (uvloop), with a graceful shutdown on SIGTERM/SIGINT.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ember.serve.options import ServeOptions, option_keywords

__all__ = ["ServeOptions", "serve", "run", "loop_factory"]

logger = logging.getLogger(__name__)


@option_keywords(ServeOptions())
def serve(path: str | os.PathLike, options: ServeOptions | None = None, **kwargs: Any) -> int:
    """Serves a model repository until SIGTERM or SIGINT; returns the exit code (0).

    Args:
        path: a repository (``<name>/<version>/``), one package directory, a directory with only
            ``model.onnx``, or a ``.onnx`` file.
        options: a ``ServeOptions``; default ``ServeOptions()``.
        **kwargs: any field of ``ServeOptions``, replacing that of ``options``: ``host``,
            ``port``, ``grpc_port``, ``management_host``, ``management_port``, ``token``,
            ``token_file``, ``poll_interval``, ``max_batch_size``, ``max_queue_delay_ms``,
            ``adaptive_batching``, ``target_p99_ms``, ``body_limit``, ``body_timeout``,
            ``runtime``, ``grace_period``, ``access_log``, ``strict_readiness``, ``workers``
            (see ``ServeOptions`` for what each does).

    Returns:
        0 after a graceful shutdown.

    Example:
        >>> serve("models", port=8080, grpc_port=8081)  # doctest: +SKIP
    """
    options = ServeOptions.build(options, kwargs, "serve")
    from ember.serve.scale.workers import resolve_workers, serve_workers

    count = resolve_workers(options.workers)
    if count > 1:
        return serve_workers(path, workers=count, options=options)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("ember.serve.access").setLevel(
        logging.INFO if options.access_log else logging.WARNING
    )

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await run(path, stop=stop, freeze_heap=True, options=options)

    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        runner.run(main())
    return 0


# run() embeds the server in a caller's loop (tests, notebooks): gRPC and management stay off
# unless asked for.
_RUN_DEFAULTS = ServeOptions(grpc_port=None, management_port=None)


@option_keywords(_RUN_DEFAULTS)
async def run(
    path: str | os.PathLike,
    *,
    stop: asyncio.Event,
    on_start: Callable[[dict[str, Any]], None] | None = None,
    freeze_heap: bool = False,
    member: Any = None,
    options: ServeOptions | None = None,
    **kwargs: Any,
) -> None:
    """Runs the server on the current loop until ``stop`` is set (the async core of ``serve``).

    ``on_start`` is called once the listeners accept connections (models may still be loading:
    ``/v2/health/ready`` says when they are) with ``{"rest": url, "grpc": "host:port" | None,
    "management": url | None, "token": str | None, "app": app, "repository": repository}``.
    ``freeze_heap``: once the models are loaded, move every live object out of the garbage
    collector's reach (``gc.freeze``), so no full collection walks torch's and ONNX Runtime's
    objects mid-request (a 70 ms pause that set p99); ``serve`` turns it on, as it owns the
    process. ``member``: this process's ``ember.serve.scale.worker.GroupMember`` when it is one
    worker of a group (ports shared, readiness, metrics and hot reload agreed with the others).
    ``options`` and ``kwargs`` are those of ``serve``, except that without ``options`` gRPC and
    the management API are off unless ``grpc_port`` / ``management_port`` are given; ``workers``
    and ``access_log`` are ``serve``'s business and ignored here.
    """
    from ember.serve.app import build_app
    from ember.serve.management import build_management_app, resolve_token
    from ember.serve.metrics import ServeMetrics
    from ember.serve.repository import ModelRepository

    options = ServeOptions.build(options or _RUN_DEFAULTS, kwargs, "run")
    host, grace_period = options.host, options.grace_period

    metrics = ServeMetrics()
    repository = ModelRepository(
        Path(path), poll_interval=options.poll_interval, runtime=options.runtime,
        batching=options.batching, metrics=metrics, strict_readiness=options.strict_readiness,
        retire_gate=member.retire_gate if member else None,
    )  # fmt: skip
    app = build_app(repository, metrics=metrics, body_limit=options.body_limit,
                    body_timeout=options.body_timeout)  # fmt: skip
    if member is not None:
        app = member.wrap_app(app, repository, metrics)
    info: dict[str, Any] = {"app": app, "repository": repository, "grpc": None,
                            "management": None, "token": None}  # fmt: skip
    servers: list[tuple[Any, socket.socket]] = []
    rest_sock = member.rest_socket() if member is not None else _bind(host, options.port)
    servers.append((_uvicorn(app, grace_period), rest_sock))
    info["rest"] = _url(rest_sock)
    if options.management_port is not None:
        info["token"] = resolve_token(options.token, options.token_file)
        mgmt_sock = _bind(options.management_host, options.management_port)
        mgmt_app = build_management_app(repository, info["token"])
        if member is not None:
            mgmt_app = member.wrap_management(mgmt_app, repository, metrics, info["token"])
        servers.append((_uvicorn(mgmt_app, grace_period), mgmt_sock))
        info["management"] = _url(mgmt_sock)
    grpc_server = None
    with _closing(servers):
        tasks = await _start_listeners(servers)
        grpc_port = options.grpc_port
        if grpc_port is not None:
            from ember.serve.protocols.kserve_grpc import start_grpc_server

            grpc_port = grpc_port or _free_port(host)  # 0: a free port, known before binding
            grpc_server = await start_grpc_server(
                repository, host, grpc_port, reuse_port=member is not None
            )
            info["grpc"] = f"{host}:{grpc_port}"
        _announce(info, options.token_file, options.token is not None)
        if on_start is not None:
            on_start(info)
        loading = asyncio.ensure_future(repository.start())
        loading.add_done_callback(lambda f: f.cancelled() or _announce_models(repository))
        if freeze_heap:
            loading.add_done_callback(_freeze_heap)
        await stop.wait()
        logger.info("Shutting down: finishing in-flight requests (up to %.0fs)", grace_period)
        for server, _ in servers:
            server.should_exit = True
        if grpc_server is not None:
            await grpc_server.stop(grace=grace_period)
        await asyncio.gather(*tasks, return_exceptions=True)
        loading.cancel()
        await asyncio.gather(loading, return_exceptions=True)
        await repository.stop()
    logger.info("ember serve stopped")


async def _start_listeners(servers: list[tuple[Any, socket.socket]]) -> list[asyncio.Future]:
    """Starts every uvicorn server on its socket; returns once all accept connections."""
    tasks = [asyncio.ensure_future(s._serve_forever(sock)) for s, sock in servers]
    while not all(s.started for s, _ in servers):
        if any(t.done() for t in tasks):
            await asyncio.gather(*tasks)  # re-raises a startup failure
            raise RuntimeError("A listener stopped while starting.")
        await asyncio.sleep(0.01)
    return tasks


def _freeze_heap(_: Any = None) -> None:
    """Collects once, then freezes what is left: later collections skip the startup heap."""
    gc.collect()
    gc.freeze()
    logger.debug("Froze %d startup objects out of the garbage collector", gc.get_freeze_count())


def _uvicorn(app: Any, grace_period: float) -> Any:
    import uvicorn

    class _Server(uvicorn.Server):
        """A uvicorn server that leaves signals to ``serve`` (several servers share one loop)."""

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield

        async def _serve_forever(self, sock: socket.socket) -> None:
            await self.serve(sockets=[sock])

    config = uvicorn.Config(
        app,
        loop="none",
        http=_http_impl(),
        lifespan="off",
        access_log=False,  # ember.serve.access logs instead (cheaper, one line per request)
        server_header=False,
        timeout_graceful_shutdown=int(grace_period),
        log_level="warning",
    )
    return _Server(config)


def _bind(host: str, port: int) -> socket.socket:
    if not isinstance(port, int) or not 0 <= port <= 65535:
        raise ValueError(f"Received an invalid port, expected 0..65535. Received: port={port!r}")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise OSError(f"Cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


@contextlib.contextmanager
def _closing(servers: list[tuple[Any, socket.socket]]) -> Iterator[None]:
    try:
        yield
    finally:
        for _, sock in servers:
            sock.close()


def _url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _announce(info: dict[str, Any], token_file: Any, token_given: bool) -> None:
    rest = info["rest"]
    logger.info("ember serve listening (models loading; ready at %s/v2/health/ready)", rest)
    logger.info("  KServe v2 REST   %s/v2/models/{name}/infer", rest)
    logger.info("  TF Serving REST  %s/v1/models/{name}:predict", rest)
    logger.info("  TorchServe       %s/predictions/{name}", rest)
    logger.info("  Metrics, docs    %s/metrics  %s/docs", rest, rest)
    if info["grpc"]:
        logger.info("  KServe v2 gRPC   %s", info["grpc"])
    if info["management"]:
        where = "as given" if token_given else token_file or "~/.ember/serve-token"
        logger.info("  Management       %s/v2/repository/index (bearer token: %s)",
                    info["management"], where)  # fmt: skip


def _announce_models(repository: Any) -> None:
    """Log which model versions loaded (and which failed, with why) once loading ends."""
    loaded: dict[str, list[str]] = {}
    for row in repository.status():
        if row["state"] == "AVAILABLE":
            loaded.setdefault(row["name"], []).append(str(row["version"]))
        elif row["state"] == "FAILED":
            logger.warning("  Model %s version %s FAILED to load: %s",
                           row["name"], row["version"], row.get("error"))  # fmt: skip
    if not loaded:
        logger.warning("ember serve: no model loaded from %s%s", repository.root,
                       _layout_hint(Path(repository.root)))  # fmt: skip
    for name, versions in loaded.items():
        logger.info("  Loaded model     %s (version %s)", name, ", ".join(versions))


def _layout_hint(root: Path) -> str:
    """Where the models are when ``root`` is one level too high (``ember serve demo_output``)."""
    if not root.is_dir() or (root / "ember.json").is_file():
        return ""
    children = sorted(p for p in root.iterdir() if p.is_dir())
    for child in children:
        if any(
            (v / "ember.json").is_file() for m in child.iterdir() if m.is_dir() for v in m.iterdir()
        ):
            return f": {child} is a repository, serve it: ember serve {child}"
    for child in children:
        if (child / "ember.json").is_file():
            return f": {child} is a model package, serve it alone: ember serve {child}"
    return ": a repository holds <name>/<version>/ package directories"


def _free_port(host: str) -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The event loop the server runs on: uvloop's when installed, else None (asyncio's).

    Example:
        >>> with asyncio.Runner(loop_factory=loop_factory()) as runner:  # doctest: +SKIP
        ...     runner.run(main())
    """
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def _http_impl() -> str:
    try:
        import httptools  # noqa: F401
    except ImportError:
        return "h11"
    return "httptools"
