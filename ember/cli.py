"""The `ember` command line: thin wrappers over the Python API."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["main"]

log = logging.getLogger(__name__)

_TARGETS = "onnx,int8,mobile,web,cpp"


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s"
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return args.func(args) or 0
    except KeyboardInterrupt:
        return 130
    except (ValueError, TypeError, OSError, RuntimeError, KeyError) as exc:
        if args.verbose:
            raise
        _console(stderr=True).print(f"[bold red]error:[/] {exc}", markup=True, highlight=False)
        return 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ember",
        description="Build, train, watch, scale, export and serve PyTorch models.",
        epilog="Run `ember COMMAND --help` for a command's options.",
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="log progress and show tracebacks"
    )
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")
    _add_train(sub)
    _add_demo(sub)
    _add_inspect(sub)
    _add_export(sub)
    _add_import_tfjs(sub)
    _add_serve(sub)
    _add_report(sub)
    return parser


def _command(
    sub: Any, name: str, func: Callable[[argparse.Namespace], int], **kwargs: Any
) -> argparse.ArgumentParser:
    """Add the subcommand `name` (`help`, `description`, ... in kwargs) that runs `func`."""
    p = sub.add_parser(name, **kwargs)
    p.set_defaults(func=func)
    return p


def _console(stderr: bool = False):
    from rich.console import Console

    # soft_wrap: a long message or path stays on one line (rich would break it at 80 columns when
    # the output is a pipe or a file), so it can be read whole and copied
    return Console(stderr=stderr, highlight=False, soft_wrap=True)


# -- train ----------------------------------------------------------------------------------------
def _training_options(p: argparse.ArgumentParser, epochs: int = 15) -> None:
    p.add_argument(
        "--epochs", type=_positive_int, default=epochs, help="epochs (default %(default)s)"
    )
    p.add_argument("--batch-size", type=_positive_int, default=32, help="batch size (default 32)")
    p.add_argument("--lr", type=float, default=3e-3, help="learning rate (default 0.003)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--precision", default="32", help="32, 16-mixed or bf16-mixed (default 32)")
    p.add_argument(
        "--devices", default="auto", help="processes/devices per node; >1 trains with DDP"
    )
    p.add_argument("--strategy", default="auto", help="auto, ddp or fsdp (default auto)")
    p.add_argument("--num-nodes", type=_positive_int, default=1, help="machines (use torchrun)")
    p.add_argument(
        "--output",
        type=Path,
        default=Path("demo_output"),
        help="output directory (default demo_output; ember train DATA: ember_output)",
    )
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def _add_train(sub: Any) -> None:
    p = _command(
        sub,
        "train",
        _cmd_train,
        help="train on a CSV file, an image folder, or the built-in digits",
        description="Train a default model (or --model module:function) on DATA: a CSV file "
        "(--target COLUMN) or a folder of images with one sub-folder per class. Without DATA, a "
        "small CNN on scikit-learn's bundled 8x8 digits (no download). Writes TensorBoard logs, "
        "the report and checkpoints to OUTPUT/runs and the model package to OUTPUT/model.",
    )
    p.add_argument("data", nargs="?", type=Path, help="a .csv file or an image folder")
    p.add_argument("--target", help="the CSV column to predict")
    p.add_argument(
        "--task", choices=("classification", "regression"), help="default: guessed from the target"
    )
    p.add_argument("--model", help="module:function returning your nn.Module (default: built in)")
    p.add_argument(
        "--image-size",
        type=_positive_int,
        nargs=2,
        default=(64, 64),
        metavar=("H", "W"),
        help="resize images to H W (default 64 64)",
    )
    _training_options(p)
    p.set_defaults(output=None)  # ember_output for DATA, demo_output for the digits


def _train(args: argparse.Namespace) -> dict:
    from ember.demo import train_digits

    return train_digits(output=args.output, **_fit_options(args))


def _train_files(args: argparse.Namespace) -> dict:
    from ember.train_files import train_files

    return train_files(
        args.data,
        target=args.target,
        task=args.task,
        model=args.model,
        image_size=tuple(args.image_size),
        output=args.output or Path("ember_output"),
        **_fit_options(args),
    )


def _fit_options(args: argparse.Namespace) -> dict:
    """The training options `ember train` shares between the digits and the user's files."""
    devices = args.devices
    if str(devices).isascii() and str(devices).isdigit():
        devices = int(devices)
    return {
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "seed": args.seed,
        "progress": not args.no_progress,
        "precision": args.precision,
        "devices": devices,
        "strategy": args.strategy,
        "num_nodes": args.num_nodes,
    }


def _cmd_train(args: argparse.Namespace) -> int:
    if args.data is None:
        args.output = args.output or Path("demo_output")
    result = _train_files(args) if args.data is not None else _train(args)
    if result["package"] is None:
        return 0  # a non-zero rank of a distributed run
    console = _console()
    if args.data is not None:
        scores = ", ".join(f"{k}={v:.4f}" for k, v in result["metrics"].items())
        console.print(f"validation: [bold]{scores}[/]")
    else:
        console.print(f"test accuracy: [bold]{result['test_accuracy']:.4f}[/]")
    console.print(
        f"TensorBoard logs: {result['log_dir']}  (tensorboard --logdir {result['log_dir'].parent})"
    )
    if (result["log_dir"] / "report.html").exists():
        console.print(f"report: {result['log_dir'] / 'report.html'}")
    console.print(f"model package: {result['package']}")
    return 0


# -- demo -----------------------------------------------------------------------------------------
def _add_demo(sub: Any) -> None:
    p = _command(
        sub,
        "demo",
        _cmd_demo,
        help="train, export to every target, serve and query the digits model",
        description="The whole life of a model, offline: train on digits, export to every target "
        "with its parity check, then serve it and query each protocol.",
    )
    _training_options(p)
    p.add_argument("--to", default=_TARGETS, help=f"export targets (default {_TARGETS})")
    p.add_argument("--no-serve", action="store_true", help="skip serving and querying")


def _cmd_demo(args: argparse.Namespace) -> int:
    from ember.cli_demo import run_demo

    return run_demo(args, train=_train, console=_console())


# -- inspect / export -----------------------------------------------------------------------------
def _add_inspect(sub: Any) -> None:
    p = _command(
        sub,
        "inspect",
        _cmd_inspect,
        help="show a model package's signature, targets and parity figures",
        description="Print a model package's signature, the export targets present and their parity.",
    )
    p.add_argument("package", type=Path, help="model package directory")


def _cmd_inspect(args: argparse.Namespace) -> int:
    from ember.package import inspect_text

    _console().print(inspect_text(args.package), markup=False)
    return 0


def _add_export(sub: Any) -> None:
    p = _command(
        sub,
        "export",
        _cmd_export,
        help="export a model package to onnx, int8, mobile, web, cpp, tfjs",
        description="Write export targets into a model package; each is checked against the trained "
        "model's outputs on the stored sample and its parity recorded in ember.json.",
    )
    p.add_argument(
        "package", type=Path, help="model package directory (from model.save / ember train)"
    )
    p.add_argument(
        "--to",
        default="onnx",
        help=f"comma-separated targets from {_TARGETS},tfjs, or all (default onnx)",
    )
    p.add_argument(
        "--rtol", type=float, default=1e-4, help="fp32 relative tolerance (default 1e-4)"
    )
    p.add_argument(
        "--static",
        action="store_true",
        help="mobile: export the .pte with the stored sample's fixed shapes (when a dynamic "
        "batch or sequence axis cannot lower)",
    )
    p.add_argument(
        "--min-top1", type=float, default=0.99, help="int8 top-1 agreement (default 0.99)"
    )


def _cmd_export(args: argparse.Namespace) -> int:
    from ember.export import export
    from ember.package import inspect_text

    targets = [t.strip() for t in args.to.split(",") if t.strip()]
    export(args.package, targets, rtol=args.rtol, min_top1=args.min_top1, static=args.static)
    _console().print(inspect_text(args.package), markup=False)
    return 0


def _add_import_tfjs(sub: Any) -> None:
    p = _command(
        sub,
        "import-tfjs",
        _cmd_import_tfjs,
        help="read weights trained in TF.js back into a model package",
        description="Load a TF.js model.json (trained with the tfjs bundle's train.js or its page) "
        "into the ember model of PACKAGE, check that both compute the same on the stored sample, "
        "and write the result as a new package.",
    )
    p.add_argument("model_json", type=Path, help="the TF.js model.json (weights beside it)")
    p.add_argument("package", type=Path, help="the package the tfjs target was exported from")
    p.add_argument("--out", type=Path, required=True, help="the new package directory")
    p.add_argument(
        "--rtol", type=float, default=1e-4, help="fp32 relative tolerance (default 1e-4)"
    )


def _cmd_import_tfjs(args: argparse.Namespace) -> int:
    from ember.export.tfjs import import_tfjs
    from ember.package import inspect_text

    import_tfjs(args.model_json, args.package, args.out, rtol=args.rtol)
    _console().print(inspect_text(args.out), markup=False)
    return 0


# -- serve ----------------------------------------------------------------------------------------
def _add_serve(sub: Any) -> None:
    p = _command(
        sub,
        "serve",
        _cmd_serve,
        help="serve a model repository, a package or an ONNX file",
        description="Serve models over KServe v2 (REST and gRPC), TF Serving and TorchServe REST. "
        "PATH is a repository (models/<name>/<version>/), one model package, or a model.onnx.",
    )
    p.add_argument("path", type=Path, help="repository, package directory or .onnx file")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=_port, default=8080, help="REST port (default 8080; 0 picks one)")
    p.add_argument(
        "--grpc-port", type=_port, default=None,
        help="KServe v2 gRPC port (default PORT+1, or a free one with --port 0)",
    )  # fmt: skip
    p.add_argument("--no-grpc", action="store_true", help="do not serve gRPC")
    p.add_argument(
        "--management-port", type=_port, default=None,
        help="management API port on 127.0.0.1 (default PORT+2, or a free one with --port 0)",
    )  # fmt: skip
    p.add_argument("--no-management", action="store_true", help="do not serve the management API")
    p.add_argument(
        "--token-file", type=Path, default=None, help="management bearer token file (mode 0600)"
    )
    p.add_argument(
        "--poll-interval", type=float, default=2.0, help="seconds between repository scans; 0 = off"
    )
    p.add_argument(
        "--max-batch-size", type=_positive_int, default=32, help="dynamic batching: max rows"
    )
    p.add_argument(
        "--max-queue-delay-ms", type=float, default=0.0, help="dynamic batching: max wait"
    )
    p.add_argument(
        "--adaptive-batching", action="store_true", help="size batches to keep p99 under target"
    )
    p.add_argument(
        "--target-p99-ms", type=float, default=50.0, help="adaptive batching target (ms)"
    )
    p.add_argument(
        "--body-limit", type=_positive_int, default=64 * 1024 * 1024, help="max request bytes"
    )
    p.add_argument(
        "--body-timeout",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="seconds a request body may take to arrive (408 after; default 60; 0 = no limit)",
    )
    p.add_argument(
        "--runtime", default="auto", help="auto (onnxruntime, else torch), onnxruntime, torch"
    )
    p.add_argument("--grace-period", type=float, default=30.0, help="seconds to drain at shutdown")
    p.add_argument("--access-log", action="store_true", help="log every request")
    p.add_argument(
        "--strict-readiness", action="store_true",
        help="ready only while every model serves (default: while at least one does)",
    )  # fmt: skip
    p.add_argument(
        "--workers",
        default="1",
        help="server processes sharing the ports (default 1; auto = cores)",
    )
    p.add_argument(
        "--ray", nargs="?", const="", default=None, metavar="ADDRESS",
        help="run as a Ray Serve application on the cluster at ADDRESS (none: the local one); "
        "--port is the HTTP proxy's, --grpc-port the gRPC proxy's",
    )  # fmt: skip
    p.add_argument("--min-replicas", type=_positive_int, default=1, help="Ray: fewest replicas")
    p.add_argument("--max-replicas", type=_positive_int, default=2, help="Ray: most replicas")


def _cmd_serve(args: argparse.Namespace) -> int:
    from ember.serve import ServeOptions, serve

    if not args.path.exists():
        raise ValueError(
            f"{args.path} does not exist: pass a model repository, a package or a .onnx file."
        )
    if args.ray is not None:
        return _serve_ray(args)
    grpc_port, management_port = serve_ports(args.port, args.grpc_port, args.management_port)
    logging.getLogger("ember.serve").setLevel(logging.INFO)  # where it listens, what it loaded
    options = ServeOptions(
        host=args.host,
        port=args.port,
        grpc_port=None if args.no_grpc else grpc_port,
        management_port=None if args.no_management else management_port,
        token_file=args.token_file,
        poll_interval=args.poll_interval,
        max_batch_size=args.max_batch_size,
        max_queue_delay_ms=args.max_queue_delay_ms,
        adaptive_batching=args.adaptive_batching,
        target_p99_ms=args.target_p99_ms,
        body_limit=args.body_limit,
        body_timeout=args.body_timeout or None,
        runtime=args.runtime,
        grace_period=args.grace_period,
        access_log=args.access_log,
        strict_readiness=args.strict_readiness,
        workers=args.workers,
    )
    return serve(args.path, **options.to_dict())  # keywords: what serve(path, **kwargs) takes


def _serve_ray(args: argparse.Namespace) -> int:
    import signal
    import threading

    import ray
    from ray import serve as ray_serve

    from ember.serve.scale.ray_serve import deploy

    ray.init(address=args.ray or None, log_to_driver=False)
    stop = threading.Event()  # handlers after ray.init (it sets its own), before the deployment
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    grpc_port, _ = serve_ports(args.port, args.grpc_port, args.management_port)
    deploy(args.path, host=args.host, port=args.port,
           grpc_port=None if args.no_grpc else grpc_port, min_replicas=args.min_replicas,
           max_replicas=args.max_replicas, poll_interval=args.poll_interval,
           max_batch_size=args.max_batch_size, max_queue_delay_ms=args.max_queue_delay_ms,
           runtime=args.runtime, body_limit=args.body_limit)  # fmt: skip
    _console().print(f"ember on Ray Serve: http://{args.host}:{args.port} (Ctrl-C removes it)")
    while not stop.wait(0.5):  # a timed wait lets the main thread run the signal handler
        pass
    ray_serve.delete("ember")
    return 0


# -- report ---------------------------------------------------------------------------------------
def _add_report(sub: Any) -> None:
    p = _command(
        sub,
        "report",
        _cmd_report,
        help="write a self-contained HTML training report",
        description="Write one HTML file (no network needed) with the curves of one or more runs.",
    )
    p.add_argument("runs", type=Path, nargs="+", help="run directories (runs/<name>/version_N)")
    p.add_argument(
        "-o", "--output", type=Path, default=None, help="output file (default RUN/report.html)"
    )
    p.add_argument("--package", type=Path, default=None, help="model package whose parity to show")


def _cmd_report(args: argparse.Namespace) -> int:
    from ember.report import write_report

    path = write_report(args.runs, output=args.output, package_dir=args.package)
    _console().print(f"report: {path}")
    return 0


def serve_ports(port: int, grpc_port: int | None, management_port: int | None) -> tuple[int, int]:
    """The gRPC and management ports: as given, else PORT+1 and PORT+2 (free ones for PORT 0).

    A second server started with another `--port` (or `--port 0`) then clashes with nothing.

    Example:
        >>> serve_ports(9000, None, None), serve_ports(0, None, None)
        ((9001, 9002), (0, 0))
    """
    derived = (0, 0) if port == 0 else (port + 1, port + 2)
    if derived[1] > 65535 and management_port is None or derived[0] > 65535 and grpc_port is None:
        raise ValueError(
            f"--port {port} leaves no room for the gRPC and management ports (PORT+1, PORT+2): "
            "pass --grpc-port and --management-port, or a lower --port."
        )
    return (
        derived[0] if grpc_port is None else grpc_port,
        derived[1] if management_port is None else management_port,
    )


def _version() -> str:
    import platform
    from importlib.metadata import PackageNotFoundError, version

    from ember import __version__

    try:  # the installed distribution's version: importing torch would take a second
        torch_version = version("torch")
    except PackageNotFoundError:
        torch_version = "not installed"
    return f"ember {__version__} (torch {torch_version}, Python {platform.python_version()})"


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, received {text}")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(
            f"expected a port number 0..65535 (0 picks a free one), received {text}"
        )
    return value


if __name__ == "__main__":
    sys.exit(main())
