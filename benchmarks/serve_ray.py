"""Throughput of ember on Ray Serve with 1 and 2 replicas, beside ``ember serve`` alone.

Starts a local Ray instance (or joins ``--address``), runs ``ember.serve.scale.ray_serve``'s
application with a fixed number of replicas (autoscaling bounds min = max), and drives the same
KServe v2 request at each concurrency through Ray's HTTP proxy; then the same through one
``ember serve`` process on the same machine. Prints req/s, p50, p99 and the ratios
(2 replicas / 1 replica, Ray / ember serve). Uses serve_load.py's load generators (wrk when
installed). Run briefly:
    .venv/bin/python benchmarks/serve_ray.py --seconds 3 --concurrency 1 32
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import orjson

sys.path.insert(0, str(Path(__file__).parent))
import serve_load  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _ray_side(args: argparse.Namespace, repo: Path, body: bytes, replicas: int) -> dict:
    from ray import serve

    from ember.serve.scale.ray_serve import application

    app = application(repo, min_replicas=replicas, max_replicas=replicas, num_cpus=0.5,
                      poll_interval=2.0, max_batch_size=serve_load.MAX_BATCH)  # fmt: skip
    serve.run(app, name="ember", route_prefix="/")
    cells = _measure(args, args.port, body)
    serve.delete("ember")
    return cells


def _measure(args: argparse.Namespace, port: int, body: bytes) -> dict:
    path = "/v2/models/mlp/infer"
    serve_load._drive(args, port, path, body, 8, 2.0)  # warm-up
    cells = {}
    for c in args.concurrency:
        runs = [
            serve_load._drive(args, port, path, body, c, args.seconds) for _ in range(args.rounds)
        ]
        cells[c] = serve_load._median(runs)
    return cells


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--address", default=None, help="Ray cluster (default: a local one)")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--client", choices=["wrk", "python"], default=None)
    args = parser.parse_args()
    args.client = args.client or ("wrk" if shutil.which("wrk") else "python")
    repo = Path(tempfile.mkdtemp()) / "models"
    serve_load.build_models(repo)
    shutil.rmtree(repo / "cnn")
    x = np.random.default_rng(0).standard_normal((1, 1, 8, 8)).astype(np.float32)
    body = orjson.dumps({"inputs": [{"name": "input", "shape": [1, 1, 8, 8], "datatype": "FP32",
                                     "data": x.ravel().tolist()}]})  # fmt: skip

    import ray
    from ray import serve

    ray.init(address=args.address, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}})  # fmt: skip
    args.port = serve_load._free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": args.port})
    sides = {f"ray x{n}": _ray_side(args, repo, body, n) for n in (1, 2)}
    serve.shutdown()
    ray.shutdown()
    port = serve_load._free_port()
    code = (f"from ember.serve import serve; serve({str(repo)!r}, port={port}, grpc_port=None, "
            f"management_port=None, max_batch_size={serve_load.MAX_BATCH})")  # fmt: skip
    proc = serve_load.start(["-c", code], port, "/v2/health/ready")
    try:
        sides["ember serve"] = _measure(args, port, body)
    finally:
        serve_load.stop(proc)
    print(f"client: {args.client}; {time.strftime('%Y-%m-%d %H:%M')}")
    print(f"{'conc':>4} | " + " | ".join(f"{s + ' req/s':>17} {'p50':>6} {'p99':>6}" for s in sides)
          + " | x2/x1 | ray x2 / ember serve")  # fmt: skip
    for c in args.concurrency:
        row = " | ".join(f"{v[c]['rps']:>17.0f} {v[c]['p50']:>6.2f} {v[c]['p99']:>6.2f}"
                         for v in sides.values())  # fmt: skip
        two, one, alone = (
            sides["ray x2"][c]["rps"],
            sides["ray x1"][c]["rps"],
            sides["ember serve"][c]["rps"],
        )
        print(f"{c:>4} | {row} | {two / one:>5.2f} | {two / alone:.2f}")


if __name__ == "__main__":
    main()
