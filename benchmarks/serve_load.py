"""Load test of ``ember serve`` against its limits, side by side in one run.

Two models: ``mlp`` (64 -> 128 -> 10, about 10 us of compute: overhead-bound, it measures the
server) and ``cnn`` (five 3x3 convolutions, 64-256 channels on 3x32x32, about 7 ms per sample on
one core: compute-bound, it measures batching). For each at concurrency 1, 8 and 64 it prints
req/s, p50 and p99 of
  * ember serve (KServe v2 REST, every feature on: batching, metrics, hot-reload watcher),
  * a bare starlette + uvicorn endpoint running the same ONNX model (no batching, no checks),
  * LitServe running the same ONNX session with its batching on (when ``litserve`` imports),
  * TorchServe running the same ONNX session in a handler, with its batching on (when the
    ``torchserve`` and ``torch-model-archiver`` commands and ``java`` are found),
and the ratios to the bare endpoint and to in-process ONNX Runtime at the same batch size
(samples/s of ``session.run`` on a batch of ``concurrency`` rows, every core: the limit batching
can reach). Servers alternate within each round; figures are medians over ``--rounds``.

``--workers N`` runs ember (``serve(workers=N)``) and the bare endpoint (``uvicorn --workers N``)
with N processes each. The load comes from ``wrk`` when it is installed (``apt-get install wrk``:
a C client leaves the servers more of a small machine's cores), else from the asyncio client below.

Localhost only; each cell is bounded in time and request count. Run:
    .venv/bin/python benchmarks/serve_load.py [--seconds 2] [--rounds 3] [--concurrency 1 8 64]
        [--workers 2] [--client wrk|python]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
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


def bare_from_env():  # noqa: ANN201 - uvicorn's app factory for --workers N (an import string)
    return bare_app(os.environ["EMBER_BENCH_ONNX"])


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


def ts_handle(data: list[dict] | None, context):  # noqa: ANN001, ANN201 - TorchServe's Context
    """TorchServe's side (a function handler): the same ONNX session and JSON, batched by TorchServe.

    TorchServe calls it once with ``data=None`` to set up, then with one list of requests per batch.
    """
    if data is None:
        model = (
            Path(context.system_properties["model_dir"])
            / context.manifest["model"]["serializedFile"]
        )
        context.ort_session = _session(str(model))
        return None
    # TorchServe has already parsed application/json bodies; bytes only when it could not.
    tensors = [_json(row.get("body", row.get("data")))["inputs"][0] for row in data]
    x = np.concatenate(
        [np.asarray(t["data"], dtype=np.float32).reshape(t["shape"]) for t in tensors]
    )
    (y,) = context.ort_session.run(None, {tensors[0]["name"]: x})  # (B, 10)
    return [{"outputs": [{"name": "output", "datatype": "FP32", "shape": [1, *row.shape],
                          "data": row.ravel().tolist()}]} for row in y]  # fmt: skip


def _json(body: dict | bytes | bytearray) -> dict:
    return body if isinstance(body, dict) else orjson.loads(body)


def torchserve_tools() -> tuple[str, str] | None:
    """The ``torchserve`` and ``torch-model-archiver`` commands, or None (with a note) if missing."""
    found = []
    for tool in ("torchserve", "torch-model-archiver"):
        beside = Path(sys.executable).with_name(tool)
        found.append(str(beside) if beside.is_file() else shutil.which(tool))
    java_home = os.environ.get("JAVA_HOME")
    java = f"{java_home}/bin/java" if java_home else shutil.which("java")
    missing = [n for n, f in zip(("torchserve", "torch-model-archiver", "java"), [*found, java])
               if not f or not Path(f).is_file()]  # fmt: skip
    if missing:
        print(f"TorchServe side skipped: {', '.join(missing)} not found (see docs/benchmarks.md)")
        return None
    return found[0], found[1]


def start_torchserve(tools: tuple[str, str], onnx_file: str, name: str, port: int,
                     workdir: Path) -> subprocess.Popen:  # fmt: skip
    """Archives ``ts_handle`` and the ONNX file into ``name.mar`` and starts TorchServe on it.

    One worker, batches of up to ``MAX_BATCH`` requests, 1 ms batch delay; its logs, pid file and
    config live in ``workdir``. Stop it with ``stop_torchserve``.
    """
    store = workdir / "store"
    store.mkdir(parents=True)
    (workdir / "model-config.yaml").write_text(
        f"minWorkers: 1\nmaxWorkers: 1\nbatchSize: {MAX_BATCH}\nmaxBatchDelay: 1\n"
    )
    # "file:function" without ".py": the archiver copies file.py and the worker calls function.
    handler = f"{Path(__file__).with_suffix('')}:ts_handle"
    ts_env = {"TMPDIR": str(workdir)}  # its pid file and the archiver's scratch directory
    subprocess.run([tools[1], "--model-name", name, "--version", "1.0", "--serialized-file",
                    onnx_file, "--handler", handler, "--config-file",
                    str(workdir / "model-config.yaml"), "--export-path", str(store)],
                   check=True, cwd=workdir, env={**os.environ, **ts_env})  # fmt: skip
    addresses = {"inference_address": port, "management_address": _free_port(),
                 "metrics_address": _free_port()}  # fmt: skip
    (workdir / "config.properties").write_text(
        "".join(f"{k}=http://127.0.0.1:{v}\n" for k, v in addresses.items())
        + "default_workers_per_model=1\n"
    )
    args = ["--start", "--foreground", "--ncs", "--disable-token-auth", "--ts-config",
            str(workdir / "config.properties"), "--model-store", str(store), "--models",
            f"{name}={name}.mar"]  # fmt: skip
    proc = start(args, port, "/ping", exe=tools[0], cwd=workdir, env=ts_env)
    # /ping answers before the worker has loaded the model: wait for the management API's READY.
    url = f"http://127.0.0.1:{addresses['management_address']}/models/{name}"
    status, deadline = "", time.time() + 120
    while '"READY"' not in status and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
        try:
            with urllib.request.urlopen(url, timeout=5) as answer:
                status = answer.read().decode()
        except OSError:  # not registered yet (404) or not listening yet
            continue
    if '"READY"' not in status:
        stop_torchserve(tools, proc, workdir)
        raise RuntimeError(f"TorchServe's worker for {name} did not start; see {workdir}/logs")
    return proc


def stop_torchserve(tools: tuple[str, str], proc: subprocess.Popen, workdir: Path) -> None:
    """``torchserve --stop``, then ends whatever is left of its process group (java, workers)."""
    subprocess.run([tools[0], "--stop"], cwd=workdir, env={**os.environ, "TMPDIR": str(workdir)},
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)  # fmt: skip
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        pass
    stop(proc)


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


def drive_wrk(port: int, path: str, body: bytes, concurrency: int, seconds: float) -> dict:
    """The same load from ``wrk`` (one thread, ``concurrency`` keep-alive connections)."""
    script = (
        'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
        f"wrk.body = [==[{body.decode()}]==]\n"
        "done = function(s, lat, req)\n"
        '  io.write(string.format("RESULT %d %f %d %d %d\\n", s.requests, s.duration,\n'
        "    lat:percentile(50), lat:percentile(99), s.errors.status + s.errors.connect +\n"
        "    s.errors.read + s.errors.write + s.errors.timeout))\nend\n"
    )
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as f:
        f.write(script)
        f.flush()
        cmd = ["wrk", "-t1", f"-c{concurrency}", f"-d{max(1, round(seconds))}s", "--timeout", "10s",
               "-s", f.name, f"http://127.0.0.1:{port}{path}"]  # fmt: skip
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    fields = next(ln for ln in out.splitlines() if ln.startswith("RESULT")).split()[1:]
    requests, micros, p50, p99, errors = (float(x) for x in fields)
    return {"rps": requests / (micros / 1e6), "p50": p50 / 1000.0, "p99": p99 / 1000.0,
            "errors": int(errors)}  # fmt: skip


def start(args: list[str], port: int, health: str | None, exe: str = sys.executable,
          cwd: Path | None = None, env: dict[str, str] | None = None) -> subprocess.Popen:  # fmt: skip
    """Starts ``exe args`` and waits until ``GET health`` answers 200 (None: any answer)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    # Its own process group: LitServe and TorchServe spawn workers that must go down with it (stop()).
    proc = subprocess.Popen([exe, *args], env=env, stderr=subprocess.DEVNULL, cwd=cwd,
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
        text += f"{side['rps']:>16.0f} {side['p50']:>7.2f} {side['p99']:>7.2f} | "
    text += f"{limit:>9.0f} | {e['rps'] / b['rps']:>7.2f} {e['rps'] / limit:>6.2f}"
    errors = {k: v["errors"] for k, v in cells.items() if v["errors"]}
    return text + (f"  errors: {errors}" if errors else "")


def _header(sides: list[str]) -> str:
    cells = "".join(f"{side + ' req/s':>16} {'p50 ms':>7} {'p99 ms':>7} | " for side in sides)
    return f"{'model':5} {'conc':>4} |" + cells + f"{'ORT limit':>9} | {'vs bare':>7} {'vs ORT':>6}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="per cell and round")
    parser.add_argument("--rounds", type=int, default=3, help="medians over this many rounds")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 64])
    parser.add_argument("--models", nargs="+", default=["mlp", "cnn"], choices=["mlp", "cnn"])
    parser.add_argument("--no-litserve", action="store_true", help="skip LitServe")
    parser.add_argument("--no-torchserve", action="store_true", help="skip TorchServe")
    parser.add_argument("--repo", type=Path, default=None, help="where to build the models")
    parser.add_argument("--workers", type=int, default=1, help="processes of ember and of bare")
    parser.add_argument("--client", choices=["wrk", "python"], default=None,
                        help="load generator (default: wrk when installed)")  # fmt: skip
    parser.add_argument(
        "--bare", nargs=3, metavar=("ONNX", "PORT", "WORKERS"), help=argparse.SUPPRESS
    )
    parser.add_argument("--lit", nargs=3, metavar=("ONNX", "NAME", "PORT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.bare:
        import uvicorn

        os.environ["EMBER_BENCH_ONNX"] = args.bare[0]
        uvicorn.run("serve_load:bare_from_env", factory=True, app_dir=str(Path(__file__).parent),
                    port=int(args.bare[1]), workers=int(args.bare[2]), loop="uvloop",
                    http="httptools", log_level="warning", access_log=False)  # fmt: skip
        return
    if args.lit:
        run_litserve(args.lit[0], args.lit[1], int(args.lit[2]))
        return
    repo = args.repo or Path(tempfile.mkdtemp()) / "models"
    shapes = build_models(repo)
    litserve = not args.no_litserve and ls is not None
    torchserve = None if args.no_torchserve else torchserve_tools()
    port = _free_port()
    serve = (f"from ember.serve import serve; serve({str(repo)!r}, port={port}, grpc_port=None, "
             f"management_port=None, poll_interval=2.0, max_batch_size={MAX_BATCH}, "
             f"workers={args.workers})")  # fmt: skip
    ember = start(["-c", serve], port, "/v2/health/ready")
    if args.client is None:
        args.client = "wrk" if shutil.which("wrk") else "python"
    print(f"workers: {args.workers} (ember and bare), client: {args.client}", flush=True)
    sides = ["ember", "bare"] + ["litserve"] * litserve + ["torchserve"] * bool(torchserve)
    print(_header(sides), flush=True)
    try:
        for name in args.models:
            _bench_model(args, repo, name, shapes[name], port, litserve, torchserve)
    finally:
        stop(ember)


def _bench_model(args: argparse.Namespace, repo: Path, name: str, shape: tuple[int, ...],
                 ember_port: int, litserve: bool, torchserve: tuple[str, str] | None) -> None:  # fmt: skip
    onnx_file = str(repo / name / "1" / "model.onnx")
    x = np.random.default_rng(0).standard_normal((1, *shape)).astype(np.float32)
    body = orjson.dumps({"inputs": [{"name": "input", "shape": [1, *shape], "datatype": "FP32",
                                     "data": x.ravel().tolist()}]})  # fmt: skip
    infer = f"/v2/models/{name}/infer"
    ports, paths, procs = {"ember": ember_port}, {"ember": infer}, []
    ts_proc, ts_dir = None, Path(tempfile.mkdtemp(prefix="torchserve-"))
    try:
        ports["bare"], paths["bare"] = _free_port(), infer
        procs.append(
            start(
                [__file__, "--bare", onnx_file, str(ports["bare"]), str(args.workers)],
                ports["bare"],
                None,
            )  # fmt: skip
        )
        if litserve:
            ports["litserve"], paths["litserve"] = _free_port(), infer
            procs.append(start([__file__, "--lit", onnx_file, name, str(ports["litserve"])],
                               ports["litserve"], "/health"))  # fmt: skip
        if torchserve:
            ports["torchserve"], paths["torchserve"] = _free_port(), f"/predictions/{name}"
            ts_proc = start_torchserve(torchserve, onnx_file, name, ports["torchserve"], ts_dir)
        for side in ports:  # warm-up (lazy set-up, caches, the JVM's JIT) stays out of the figures
            _drive(args, ports[side], paths[side], body, 8, 2.0)
        for c in args.concurrency:
            _bench_cell(args, name, shape, onnx_file, c, ports, paths, body)
    finally:
        if ts_proc is not None:
            stop_torchserve(torchserve, ts_proc, ts_dir)
        for proc in procs:
            stop(proc)
        shutil.rmtree(ts_dir, ignore_errors=True)


def _bench_cell(args: argparse.Namespace, name: str, shape: tuple[int, ...], onnx_file: str,
                c: int, ports: dict[str, int], paths: dict[str, str], body: bytes) -> None:  # fmt: skip
    """One table row: every side at concurrency ``c``, alternating, medians over the rounds."""
    runs: dict[str, list[dict]] = {k: [] for k in ports}
    limits = []
    for r in range(args.rounds):
        order = list(ports)[r % len(ports) :] + list(ports)[: r % len(ports)]
        for side in order:
            runs[side].append(_drive(args, ports[side], paths[side], body, c, args.seconds))
        limits.append(ort_limit(Path(onnx_file), shape, c, seconds=args.seconds / 2))
    cells = {k: _median(v) for k, v in runs.items()}
    print(_row(name, c, cells, statistics.median(limits)), flush=True)


def _drive(args: argparse.Namespace, port: int, path: str, body: bytes, c: int, seconds: float):  # noqa: ANN202
    if args.client == "wrk":
        return drive_wrk(port, path, body, c, seconds)
    return asyncio.run(drive(port, path, body, c, seconds))


if __name__ == "__main__":
    main()
