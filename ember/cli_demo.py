"""`ember demo`: train, export to every target, serve and query with each protocol - offline."""

from __future__ import annotations

import asyncio
import json
import shutil
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["run_demo", "query_all_protocols"]


def run_demo(args: Any, *, train: Any, console: Any) -> int:
    """Train the digits CNN, export it, serve it and query it; returns the exit code."""
    console.rule("[bold]1. train")
    result = train(args)
    if result["package"] is None:
        return 0  # non-zero rank of a distributed run
    console.print(
        f"test accuracy: [bold]{result['test_accuracy']:.4f}[/]  logs: {result['log_dir']}"
    )
    console.rule("[bold]2. export")
    failed = _export(result["package"], args.to, result["test_data"], console)
    if args.no_serve:
        return 1 if failed else 0
    console.rule("[bold]3. serve and query")
    repo = Path(args.output) / "models"
    version_dir = repo / "digits" / "1"
    if version_dir.exists():
        shutil.rmtree(version_dir)
    shutil.copytree(result["package"], version_dir)
    xt, yt = result["test_data"]
    answers = serve_and_query(repo, xt[:4])
    for protocol, labels in answers.items():
        console.print(f"{protocol:<22} predicted {labels}  (true {yt[:4].tolist()})")
    console.print(f"\nServe it yourself: [bold]ember serve {repo}[/]")
    return 1 if failed else 0


def _export(package: Path, to: str, test_data: tuple, console: Any) -> list[str]:
    from rich.table import Table

    from ember.export import export
    from ember.package import read_manifest

    failed = []
    for target in [t.strip() for t in to.split(",") if t.strip()]:
        t0 = time.monotonic()
        try:
            export(package, [target], eval_data=test_data)
            console.print(f"{target}: ok ({time.monotonic() - t0:.1f}s)")
        except Exception as exc:  # one failing target must not hide the others' figures
            failed.append(target)
            console.print(f"[red]{target}: failed[/]: {exc}")
    table = Table(title="parity with the trained model (stored sample)")
    for col in ("target", "file", "max abs diff", "top-1 agreement", "size"):
        table.add_column(col)
    for name, fig in read_manifest(package).get("targets", {}).items():
        top1 = fig.get("top1_agreement")
        size = fig.get("size_bytes")
        table.add_row(
            name,
            str(fig.get("file", "")),
            f"{fig.get('max_abs_diff', float('nan')):.2e}",
            "-" if top1 is None else f"{top1:.3f}",
            "-" if size is None else f"{size / 1024:.0f} KiB",
        )
    console.print(table, soft_wrap=False)  # cells wrap to the terminal's width
    return failed


def serve_and_query(repository: Path, x: np.ndarray) -> dict[str, list[int]]:
    """Start `ember serve` in a thread on free ports, query every protocol, stop it."""
    from ember.serve.server import run

    started: dict[str, Any] = {}
    ready = threading.Event()
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()

    def on_start(info: dict[str, Any]) -> None:
        started.update(info)
        ready.set()

    def main() -> None:
        loop.run_until_complete(
            run(
                repository,
                stop=stop,
                on_start=on_start,
                port=0,
                grpc_port=_free_port(),
                poll_interval=0,
            )  # fmt: skip
        )

    thread = threading.Thread(target=main, daemon=True)
    thread.start()
    if not ready.wait(60):
        raise RuntimeError("The demo server did not start within 60 s.")
    try:
        _wait_ready(started["rest"])
        return query_all_protocols(started["rest"], started["grpc"], "digits", x)
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(30)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_ready(url: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/v2/health/ready", timeout=5) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"The server at {url} was not ready within {timeout:.0f} s.")


def _post(url: str, body: dict) -> dict:
    req = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def query_all_protocols(rest: str, grpc_target: str | None, model: str, x: np.ndarray) -> dict:
    """Ask the same question in every protocol; returns {protocol: predicted labels}."""
    x = np.asarray(x, dtype=np.float32)
    out = {}
    v2 = _post(
        f"{rest}/v2/models/{model}/infer",
        {
            "inputs": [
                {
                    "name": "input",
                    "shape": list(x.shape),
                    "datatype": "FP32",
                    "data": x.ravel().tolist(),
                }
            ]
        },
    )
    logits = np.asarray(v2["outputs"][0]["data"], dtype=np.float32).reshape(
        v2["outputs"][0]["shape"]
    )
    out["KServe v2 REST"] = logits.argmax(1).tolist()
    tfs = _post(f"{rest}/v1/models/{model}:predict", {"instances": x.tolist()})
    out["TF Serving REST"] = np.asarray(tfs["predictions"]).argmax(1).tolist()
    # TorchServe takes one instance per request and answers a classifier with {label: probability}.
    answers = [_post(f"{rest}/predictions/{model}", {"data": row.tolist()}) for row in x]
    out["TorchServe REST"] = [int(max(a, key=a.get)) for a in answers]
    if grpc_target:
        out["KServe v2 gRPC"] = _grpc_infer(grpc_target, model, x)
    return out


def _grpc_infer(target: str, model: str, x: np.ndarray) -> list[int]:
    import grpc

    from ember.serve.protocols._grpc import grpc_predict_v2_pb2 as pb
    from ember.serve.protocols._grpc import grpc_predict_v2_pb2_grpc as pb_grpc

    with grpc.insecure_channel(target) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        request = pb.ModelInferRequest(model_name=model)
        tensor = request.inputs.add(name="input", datatype="FP32", shape=list(x.shape))
        tensor.contents.fp32_contents.extend(x.ravel().tolist())
        reply = stub.ModelInfer(request, timeout=30)
    shape = list(reply.outputs[0].shape)
    logits = np.frombuffer(reply.raw_output_contents[0], dtype=np.float32).reshape(shape)
    return logits.argmax(1).tolist()
