"""Load test of ``ember serve`` against its limits, side by side in one run.

For a demo MLP and a compute-bound CNN at concurrency 1, 8 and 64 it prints req/s, p50 and p99 of
  * ember serve (KServe v2 REST, every feature on: batching, metrics, access-log hook, hot reload),
  * a bare starlette + uvicorn endpoint running the same ONNX model (no batching, no checks),
and the ratios to the bare endpoint and to in-process ONNX Runtime at the same batch size
(samples/s of ``session.run`` on a batch of ``concurrency`` rows: the limit batching can reach).

Localhost only; each cell is bounded in time and request count. Run:
    .venv/bin/python benchmarks/serve_load.py [--seconds 3] [--concurrency 1 8 64]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import orjson

ROOT = Path(__file__).resolve().parents[1]
MAX_REQUESTS = 200_000


def build_models(root: Path) -> dict[str, tuple[int, ...]]:
    """Writes models/<name>/1 packages with model.onnx; returns each model's sample shape."""
    import torch

    from ember import export, package

    torch.manual_seed(0)
    mlp = torch.nn.Sequential(
        torch.nn.Flatten(), torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10)
    )
    cnn = torch.nn.Sequential(
        torch.nn.Conv2d(3, 32, 3, padding=1), torch.nn.ReLU(),
        torch.nn.Conv2d(32, 64, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(64, 64, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(), torch.nn.Linear(64, 10),
    )  # fmt: skip
    shapes = {"mlp": (1, 8, 8), "cnn": (3, 32, 32)}
    for name, model in (("mlp", mlp), ("cnn", cnn)):
        path = root / name / "1"
        if not (path / "model.onnx").is_file():
            example = torch.randn(4, *shapes[name])
            package.save(
                model.eval(), path, example_input=example, name=name, task="classification"
            )
            export.export(path, ["onnx"])
    return shapes


def ort_limit(onnx_file: Path, shape: tuple[int, ...], batch: int, seconds: float = 1.0) -> float:
    """Samples/s of in-process ONNX Runtime on batches of ``batch`` rows."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = os.cpu_count() or 1
    session = ort.InferenceSession(str(onnx_file), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    x = np.random.default_rng(0).standard_normal((batch, *shape)).astype(np.float32)
    session.run(None, {name: x})
    runs, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        session.run(None, {name: x})
        runs += 1
    return runs * batch / (time.perf_counter() - start)


def bare_app(onnx_file: str):  # noqa: ANN201 - a Starlette app
    """The baseline: one route, orjson, ORT in a thread, no checks, no batching, no metrics."""
    import onnxruntime as ort
    from starlette.applications import Starlette
    from starlette.responses import Response
    from starlette.routing import Route

    options = ort.SessionOptions()
    options.intra_op_num_threads = os.cpu_count() or 1
    session = ort.InferenceSession(onnx_file, options, providers=["CPUExecutionProvider"])

    async def infer(request):  # noqa: ANN001, ANN202
        body = orjson.loads(await request.body())
        tensor = body["inputs"][0]
        x = np.asarray(tensor["data"], dtype=np.float32).reshape(tensor["shape"])
        loop = asyncio.get_running_loop()
        (y,) = await loop.run_in_executor(None, session.run, None, {tensor["name"]: x})
        out = {
            "outputs": [
                {"name": "output", "datatype": "FP32", "shape": list(y.shape), "data": y.ravel()}
            ]
        }
        return Response(
            orjson.dumps(out, option=orjson.OPT_SERIALIZE_NUMPY), media_type="application/json"
        )

    return Starlette(routes=[Route("/v2/models/{name}/infer", infer, methods=["POST"])])


async def drive(port: int, path: str, body: bytes, concurrency: int, seconds: float) -> dict:
    """Keep-alive HTTP/1.1 clients sending ``body`` back to back; returns req/s, p50, p99 (ms)."""
    request = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    latencies: list[float] = []
    errors = [0]
    deadline = time.perf_counter() + seconds

    async def client() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        while time.perf_counter() < deadline and len(latencies) < MAX_REQUESTS:
            start = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
            await reader.readexactly(length)
            if not head.startswith(b"HTTP/1.1 200"):
                errors[0] += 1
            latencies.append(time.perf_counter() - start)
        writer.close()

    start = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    elapsed = time.perf_counter() - start
    lat = np.array(latencies) * 1000.0
    return {"rps": len(lat) / elapsed, "p50": float(np.percentile(lat, 50)),
            "p99": float(np.percentile(lat, 99)), "errors": errors[0]}  # fmt: skip


def start(args: list[str], port: int) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, *args], env=env, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
                s.sendall(b"GET /v2/health/ready HTTP/1.1\r\nHost: x\r\n\r\n")
                if s.recv(64).startswith(b"HTTP/1.1 200") or "--bare" in args:
                    return proc
        except OSError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"server {args} did not start")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 64])
    parser.add_argument("--repo", type=Path, default=None, help="where to build the models")
    parser.add_argument("--bare", nargs=2, metavar=("ONNX", "PORT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.bare:
        import uvicorn

        uvicorn.run(bare_app(args.bare[0]), port=int(args.bare[1]), loop="uvloop", http="httptools",
                    log_level="warning", access_log=False)  # fmt: skip
        return
    repo = args.repo or Path(tempfile.mkdtemp()) / "models"
    shapes = build_models(repo)
    port = _free_port()
    serve = (f"from ember.serve import serve; serve({str(repo)!r}, port={port}, grpc_port=None, "
             "management_port=None, poll_interval=2.0, max_batch_size=64)")  # fmt: skip
    ember = start(["-c", serve], port)
    print(f"{'model':5} {'conc':>4} | {'ember req/s':>11} {'p50 ms':>7} {'p99 ms':>7} | "
          f"{'bare req/s':>10} {'p50 ms':>7} {'p99 ms':>7} | {'ORT limit':>9} | "
          f"{'vs bare':>7} {'vs ORT':>6}")  # fmt: skip
    try:
        for name, shape in shapes.items():
            x = np.random.default_rng(0).standard_normal((1, *shape)).astype(np.float32)
            body = orjson.dumps({"inputs": [{"name": "input", "shape": [1, *shape],
                                             "datatype": "FP32", "data": x.ravel().tolist()}]})  # fmt: skip
            bare_port = _free_port()
            bare = start(
                [__file__, "--bare", str(repo / name / "1" / "model.onnx"), str(bare_port)],
                bare_port,
            )
            try:
                for c in args.concurrency:
                    path = f"/v2/models/{name}/infer"
                    e = asyncio.run(drive(port, path, body, c, args.seconds))
                    b = asyncio.run(drive(bare_port, path, body, c, args.seconds))
                    limit = ort_limit(repo / name / "1" / "model.onnx", shape, c)
                    print(f"{name:5} {c:>4} | {e['rps']:>11.0f} {e['p50']:>7.2f} {e['p99']:>7.2f} | "
                          f"{b['rps']:>10.0f} {b['p50']:>7.2f} {b['p99']:>7.2f} | {limit:>9.0f} | "
                          f"{e['rps'] / b['rps']:>7.2f} {e['rps'] / limit:>6.2f}"
                          + (f"  errors: {e['errors']}/{b['errors']}" if e["errors"] or b["errors"] else ""),
                          flush=True)  # fmt: skip
            finally:
                bare.terminate()
                bare.wait()
    finally:
        ember.terminate()
        ember.wait()


if __name__ == "__main__":
    main()
