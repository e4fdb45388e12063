"""Big JSON request bodies: do they stall other clients, and how much memory do they take?

Starts ``ember serve`` in its own process over one small model (4 inputs -> 3 outputs, ONNX),
then sends a TF Serving ``:predict`` (or KServe v2 ``infer``) body of ``--mib`` MiB of float32
rows, first one alone, then ``--concurrent`` at once. A second process asks
``/v2/health/live`` over and over the whole time, and a thread samples the server's resident
memory every 5 ms. Printed, side by side in one run:

  * health latency while the big bodies are parsed, and its ratio to the idle latency,
  * peak resident-memory growth over the idle server, as a ratio to the body size,
  * what is still held a few seconds after the last answer, as a ratio to the body size.

Run against another checkout with ``--ember PATH`` (the server imports ember from there).
Localhost only. Run:
    .venv/bin/python benchmarks/big_body.py [--mib 59.5] [--concurrent 4] [--protocol tfserving]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import orjson

ROOT = Path(__file__).resolve().parents[1]


def build_model(root: Path) -> Path:
    import torch

    from ember import export, package

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    path = root / "m" / "1"
    package.save(model.eval(), path, example_input=torch.randn(4, 4), name="m")
    export.export(path, ["onnx"])
    return root


def make_body(mib: float, protocol: str) -> bytes:
    """A body of about ``mib`` MiB: rows of 4 float32 values as clients send them."""
    rows = int(mib * 2**20 / 80)  # about 80 bytes of JSON per row of 4 floats
    x = np.random.default_rng(0).standard_normal((rows, 4)).astype(np.float32)
    if protocol == "kserve":
        inputs = [{"name": "input", "shape": [rows, 4], "datatype": "FP32", "data": x.tolist()}]
        return orjson.dumps({"inputs": inputs})
    return orjson.dumps({"instances": x.tolist()})


def start_server(repo: Path, ember_path: Path, log: Path) -> tuple[subprocess.Popen, str]:
    code = (
        "import logging, sys; from ember.serve import serve; "
        "logging.basicConfig(level=logging.INFO, format='%(message)s'); "
        "sys.exit(serve(sys.argv[1], port=0, grpc_port=None, management_port=None, "
        "poll_interval=0))"
    )
    env = {**os.environ, "PYTHONPATH": str(ember_path), "OMP_NUM_THREADS": "1"}
    out = open(log, "w")  # noqa: SIM115 - the server's log, kept open while it runs
    proc = subprocess.Popen(  # cwd: not this checkout, whose ember "-c" would import first
        [sys.executable, "-c", code, str(repo)], stdout=out, stderr=out, env=env, cwd=log.parent
    )
    deadline = time.time() + 120
    while time.time() < deadline:
        found = re.search(r"ready at (http://127\.0\.0\.1:\d+)/", log.read_text())
        if found:
            url = found.group(1)
            try:
                with urllib.request.urlopen(url + "/v2/health/ready", timeout=2) as r:
                    if r.status == 200:
                        return proc, url
            except OSError:
                pass
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError("server did not start:\n" + log.read_text())


def rss_mib(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) / 1024


class MemorySampler(threading.Thread):
    """Samples the server's RSS every 5 ms; ``peak(start, end)`` gives the largest in a window."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.samples, self.stop = pid, [], threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            self.samples.append((time.monotonic(), rss_mib(self.pid)))
            time.sleep(0.005)

    def peak(self, start: float, end: float) -> float:
        return max(m for t, m in self.samples if start <= t <= end)


def health_prober(url: str, conn: multiprocessing.connection.Connection) -> None:
    """In its own process: GET /v2/health/live back to back until told to stop."""
    import http.client

    host, port = url.removeprefix("http://").split(":")
    client = http.client.HTTPConnection(host, int(port), timeout=60)
    samples = []
    while not conn.poll():
        start = time.monotonic()
        client.request("GET", "/v2/health/live")
        client.getresponse().read()
        samples.append((start, time.monotonic() - start))
        time.sleep(0.002)
    conn.send(samples)


def post(url: str, path: str, body: bytes, results: list) -> None:
    request = urllib.request.Request(url + path, data=body, method="POST")
    request.add_header("Content-Type", "application/json")
    start = time.monotonic()
    with urllib.request.urlopen(request, timeout=600) as r:
        r.read()
        results.append((r.status, time.monotonic() - start))


def phase(url: str, path: str, body: bytes, clients: int) -> tuple[float, float, list]:
    results: list = []
    threads = [
        threading.Thread(target=post, args=(url, path, body, results)) for _ in range(clients)
    ]
    start = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return start, time.monotonic(), results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mib", type=float, default=59.5, help="body size in MiB (limit: 64)")
    parser.add_argument("--concurrent", type=int, default=4, help="big bodies sent at once")
    parser.add_argument("--protocol", choices=["tfserving", "kserve"], default="tfserving")
    parser.add_argument("--ember", type=Path, default=ROOT, help="checkout the server runs")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        repo = build_model(Path(tmp) / "models")
        body = make_body(args.mib, args.protocol)
        size = len(body) / 2**20
        path = "/v1/models/m:predict" if args.protocol == "tfserving" else "/v2/models/m/infer"
        proc, url = start_server(repo, args.ember, Path(tmp) / "server.log")
        try:
            phase(url, path, make_body(0.01, args.protocol), 1)  # warm up the model
            here, there = multiprocessing.Pipe()
            prober = multiprocessing.Process(target=health_prober, args=(url, there))
            sampler = MemorySampler(proc.pid)
            sampler.start()
            prober.start()
            time.sleep(1.0)
            idle_end = time.monotonic()
            base = rss_mib(proc.pid)
            runs = [phase(url, path, body, 1)]
            time.sleep(1.0)
            runs.append(phase(url, path, body, args.concurrent))
            time.sleep(3.0)
            after = rss_mib(proc.pid)
            here.send("stop")
            health = here.recv()
            prober.join()
            sampler.stop.set()
        finally:
            proc.terminate()
            proc.wait(30)

    idle = [lat for t, lat in health if t < idle_end]
    idle_p50 = float(np.median(idle)) * 1000
    print(
        f"ember from {args.ember}; {args.protocol} body {size:.1f} MiB; idle server {base:.0f} MiB"
    )
    print(
        f"health /v2/health/live idle: p50 {idle_p50:.1f} ms, "
        f"p99 {np.percentile(idle, 99) * 1000:.1f} ms, max {max(idle) * 1000:.1f} ms"
    )
    for (start, end, results), clients in zip(runs, (1, args.concurrent)):
        during = [lat for t, lat in health if start <= t <= end] or [0.0]
        worst = max(during) * 1000
        growth = sampler.peak(start, end) - base
        statuses = sorted({s for s, _ in results})
        slowest = max(d for _, d in results)
        p99 = float(np.percentile(during, 99)) * 1000
        print(
            f"{clients} at once: answered {statuses} in {slowest:.2f} s | health during: "
            f"{len(during)} probes, p50 {np.median(during) * 1000:.1f} ms, p99 {p99:.0f} ms, "
            f"max {worst:.0f} ms | peak RSS growth {growth:.0f} MiB = {growth / size:.2f} x body, "
            f"{growth / (size * clients):.2f} x all bodies"
        )
    print(
        f"held 3 s after the last answer: {after - base:.0f} MiB = {(after - base) / size:.2f} x body"
    )


if __name__ == "__main__":
    main()
