"""Load test of ``ember serve`` against its limits, side by side in one run.

Two models: ``mlp`` (64 -> 128 -> 10, about 10 us of compute: overhead-bound, it measures the
server) and ``cnn`` (five 3x3 convolutions, 64-256 channels on 3x32x32, about 7 ms per sample on
one core: compute-bound, it measures batching). For each at concurrency 1, 8 and 64 it prints
req/s, p50 and p99 of
  * ember serve (KServe v2 REST, every feature on: batching, metrics, hot-reload watcher),
  * a bare starlette + uvicorn endpoint running the same ONNX model (no batching, no checks),
  * LitServe running the same ONNX session with its batching on (when ``litserve`` imports),
and the ratios to the bare endpoint and to in-process ONNX Runtime at the same batch size
(samples/s of ``session.run`` on a batch of ``concurrency`` rows, every core: the limit batching
can reach). Servers alternate within each round; figures are medians over ``--rounds``.

Localhost only; each cell is bounded in time and request count. Run:
    .venv/bin/python benchmarks/serve_load.py [--seconds 2] [--rounds 3] [--concurrency 1 8 64]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import orjson

ROOT = Path(__file__).resolve().parents[1]
MAX_REQUESTS = 200_000
MAX_BATCH = 64


def build_models(root: Path) -> dict[str, tuple[int, ...]]:
    """Writes models/<name>/1 packages with model.onnx; returns each model's sample shape."""
    import torch

    from ember import export, package

    torch.manual_seed(0)
    mlp = torch.nn.Sequential(
        torch.nn.Flatten(), torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10)
    )
    conv = lambda i, o: [torch.nn.Conv2d(i, o, 3, padding=1), torch.nn.ReLU()]  # noqa: E731
    cnn = torch.nn.Sequential(
        *conv(3, 64), *conv(64, 128), torch.nn.MaxPool2d(2),  # (B, 128, 16, 16)
        *conv(128, 256), *conv(256, 256), torch.nn.MaxPool2d(2),  # (B, 256, 8, 8)
        *conv(256, 256), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(256, 10),
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
    session = _session(str(onnx_file))
    name = session.get_inputs()[0].name
    x = np.random.default_rng(0).standard_normal((batch, *shape)).astype(np.float32)
    session.run(None, {name: x})
    runs, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds or runs < 3:
        session.run(None, {name: x})
        runs += 1
    return runs * batch / (time.perf_counter() - start)


def _session(onnx_file: str):  # noqa: ANN202 - an onnxruntime.InferenceSession
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = os.cpu_count() or 1
    return ort.InferenceSession(onnx_file, options, providers=["CPUExecutionProvider"])


def bare_app(onnx_file: str):  # noqa: ANN201 - a Starlette app
    """The baseline: one route, orjson, ORT in a thread, no checks, no batching, no metrics."""
    from starlette.applications import Starlette
    from starlette.responses import Response
    from starlette.routing import Route

    session = _session(onnx_file)

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


try:  # LitServe's worker processes are spawned: the API class must live at module level.
    import litserve as ls
except ImportError:
    ls = None
else:

    class OnnxAPI(ls.LitAPI):
        """LitServe's side: the same ONNX session and JSON as the bare endpoint, batched."""

        def __init__(self, onnx_file: str, **kwargs) -> None:  # noqa: ANN003
            super().__init__(**kwargs)
            self.onnx_file = onnx_file

        def setup(self, device):  # noqa: ANN001, ANN202
            self.session = _session(self.onnx_file)

        def decode_request(self, request):  # noqa: ANN001, ANN202
            tensor = request["inputs"][0]
            return np.asarray(tensor["data"], dtype=np.float32).reshape(tensor["shape"][1:])

        def batch(self, inputs):  # noqa: ANN001, ANN202
            return np.stack(inputs)

        def predict(self, x):  # noqa: ANN001, ANN202
            return self.session.run(None, {"input": x})[0]

        def unbatch(self, output):  # noqa: ANN001, ANN202
            return list(output)

        def encode_response(self, y):  # noqa: ANN001, ANN202
            return {"outputs": [{"name": "output", "datatype": "FP32", "shape": [1, *y.shape],
                                 "data": y.ravel().tolist()}]}  # fmt: skip


def run_litserve(onnx_file: str, name: str, port: int) -> None:
    """LitServe with one worker running the same ONNX session, batching up to ``MAX_BATCH``."""
    api = OnnxAPI(onnx_file, max_batch_size=MAX_BATCH, batch_timeout=0.001,
                  api_path=f"/v2/models/{name}/infer")  # fmt: skip
    server = ls.LitServer(api, accelerator="cpu", workers_per_device=1)
    server.run(host="127.0.0.1", port=port, log_level="warning", generate_client_file=False)


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


def start(args: list[str], port: int, health: str | None) -> subprocess.Popen:
    """Starts a server process and waits until ``GET health`` answers 200 (None: any answer)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    # Its own process group: LitServe spawns workers that must go down with it (stop()).
    proc = subprocess.Popen([sys.executable, *args], env=env, stderr=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
                s.sendall(f"GET {health or '/'} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
                if s.recv(64).startswith(b"HTTP/1.1 200" if health else b"HTTP/1.1"):
                    return proc
        except OSError:
            pass
        time.sleep(0.2)
    stop(proc)
    raise RuntimeError(f"server {args} did not start")


def stop(proc: subprocess.Popen) -> None:
    """Ends a server started by ``start`` and every process it spawned (its process group)."""
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait)
            time.sleep(0.2)  # let spawned children see the signal too
            os.killpg(proc.pid, signal.SIGKILL)  # stragglers of the group
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            continue
        return


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _median(runs: list[dict]) -> dict:
    return {k: statistics.median(r[k] for r in runs) for k in ("rps", "p50", "p99", "errors")}


def _row(name: str, c: int, cells: dict[str, dict], limit: float) -> str:
    e, b = cells["ember"], cells["bare"]
    text = f"{name:5} {c:>4} |"
    for side in cells.values():
        text += f"{side['rps']:>15.0f} {side['p50']:>7.2f} {side['p99']:>7.2f} | "
    text += f"{limit:>9.0f} | {e['rps'] / b['rps']:>7.2f} {e['rps'] / limit:>6.2f}"
    errors = {k: v["errors"] for k, v in cells.items() if v["errors"]}
    return text + (f"  errors: {errors}" if errors else "")


def _header(litserve: bool) -> str:
    sides = ["ember", "bare"] + (["litserve"] if litserve else [])
    cells = "".join(f"{side + ' req/s':>15} {'p50 ms':>7} {'p99 ms':>7} | " for side in sides)
    return f"{'model':5} {'conc':>4} |" + cells + f"{'ORT limit':>9} | {'vs bare':>7} {'vs ORT':>6}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="per cell and round")
    parser.add_argument("--rounds", type=int, default=3, help="medians over this many rounds")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 64])
    parser.add_argument("--models", nargs="+", default=["mlp", "cnn"], choices=["mlp", "cnn"])
    parser.add_argument("--no-litserve", action="store_true", help="skip LitServe")
    parser.add_argument("--repo", type=Path, default=None, help="where to build the models")
    parser.add_argument("--bare", nargs=2, metavar=("ONNX", "PORT"), help=argparse.SUPPRESS)
    parser.add_argument("--lit", nargs=3, metavar=("ONNX", "NAME", "PORT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.bare:
        import uvicorn

        uvicorn.run(bare_app(args.bare[0]), port=int(args.bare[1]), loop="uvloop", http="httptools",
                    log_level="warning", access_log=False)  # fmt: skip
        return
    if args.lit:
        run_litserve(args.lit[0], args.lit[1], int(args.lit[2]))
        return
    repo = args.repo or Path(tempfile.mkdtemp()) / "models"
    shapes = build_models(repo)
    litserve = not args.no_litserve and ls is not None
    port = _free_port()
    serve = (f"from ember.serve import serve; serve({str(repo)!r}, port={port}, grpc_port=None, "
             f"management_port=None, poll_interval=2.0, max_batch_size={MAX_BATCH})")  # fmt: skip
    ember = start(["-c", serve], port, "/v2/health/ready")
    print(_header(litserve), flush=True)
    try:
        for name in args.models:
            _bench_model(args, repo, name, shapes[name], port, litserve)
    finally:
        stop(ember)


def _bench_model(args: argparse.Namespace, repo: Path, name: str, shape: tuple[int, ...],
                 ember_port: int, litserve: bool) -> None:  # fmt: skip
    onnx_file = str(repo / name / "1" / "model.onnx")
    x = np.random.default_rng(0).standard_normal((1, *shape)).astype(np.float32)
    body = orjson.dumps({"inputs": [{"name": "input", "shape": [1, *shape], "datatype": "FP32",
                                     "data": x.ravel().tolist()}]})  # fmt: skip
    ports, procs = {"ember": ember_port}, []
    try:
        ports["bare"] = _free_port()
        procs.append(
            start([__file__, "--bare", onnx_file, str(ports["bare"])], ports["bare"], None)
        )
        if litserve:
            ports["litserve"] = _free_port()
            procs.append(start([__file__, "--lit", onnx_file, name, str(ports["litserve"])],
                               ports["litserve"], "/health"))  # fmt: skip
        path = f"/v2/models/{name}/infer"
        for c in args.concurrency:
            runs: dict[str, list[dict]] = {k: [] for k in ports}
            limits = []
            for r in range(args.rounds):
                order = list(ports)[r % len(ports) :] + list(ports)[: r % len(ports)]
                for side in order:
                    runs[side].append(asyncio.run(drive(ports[side], path, body, c, args.seconds)))
                limits.append(ort_limit(Path(onnx_file), shape, c, seconds=args.seconds / 2))
            cells = {k: _median(v) for k, v in runs.items()}
            print(_row(name, c, cells, statistics.median(limits)), flush=True)
    finally:
        for proc in procs:
            stop(proc)


if __name__ == "__main__":
    main()
