"""Batch-1 and batch-64 latency of eager torch, torch.compile, ORT fp32/int8 and ExecuTorch.

Run: ``python benchmarks/runtimes.py`` (about two minutes on 2 CPU cores). Prints, per model and
batch size, median latency and throughput as ratios to eager torch measured in the same run.
"""

from __future__ import annotations

import logging
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "export"))
from conftest import digits_cnn, digits_data, digits_mlp, train_digits  # noqa: E402

from ember import package  # noqa: E402
from ember.export import export  # noqa: E402

logger = logging.getLogger(__name__)
REPEATS = 200


def _median_seconds(fn: Callable[[], object], repeats: int = REPEATS) -> float:
    for _ in range(10):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _runners(model: torch.nn.Module, path: Path) -> dict[str, Callable]:
    from executorch.runtime import Runtime

    from ember.serve.runtime import ort_session

    def ort_runner(file: Path) -> Callable:
        session = ort_session(file)  # configured as `ember serve` runs it
        return lambda x: session.run(None, {"input": x.numpy()})

    method = Runtime.get().load_program(path / "mobile/model.pte").load_method("forward")
    compiled = torch.compile(model)
    return {
        "eager": lambda x: model(x),
        "torch.compile": lambda x: compiled(x),
        "ORT fp32": ort_runner(path / "model.onnx"),
        "ORT int8": ort_runner(path / "model.int8.onnx"),
        "ExecuTorch": lambda x: method.execute([x]),
    }


def main() -> None:
    """Train the demo models, export them, time every runtime and print the ratio table."""
    logging.basicConfig(level=logging.WARNING)
    _, _, x_test, y_test = digits_data()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, build in (("MLP", digits_mlp), ("CNN", digits_cnn)):
            model, _ = train_digits(build())
            path = package.save(
                model,
                Path(tmp) / name,
                example_input=x_test[:2],
                task="classification",
                sample_inputs=x_test[:64],
            )
            export(path, ["onnx", "int8", "mobile"], min_top1=0.9, eval_data=(x_test, y_test))
            runners = _runners(model, path)
            for batch in (1, 64):
                x = x_test[:batch].contiguous()
                with torch.no_grad():
                    times = {k: _median_seconds(lambda r=r, x=x: r(x)) for k, r in runners.items()}
                rows.append((name, batch, times))
    _print_table(rows)


def _print_table(rows: list) -> None:
    names = list(rows[0][2])
    header = f"{'model':<5} {'batch':>5}  " + "  ".join(f"{n:>13}" for n in names)
    lines = [
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; "
        "speed-up vs eager (eager median latency / runtime median latency)",
        header,
    ]
    for name, batch, times in rows:
        eager = times["eager"]
        lines.append(
            f"{name:<5} {batch:>5}  " + "  ".join(f"{eager / times[n]:>12.2f}x" for n in names)
        )
        lines.append(
            f"{'':<5} {'':>5}  eager: {eager * 1e6:.0f} us/batch, {batch / eager:.0f} samples/s"
        )
    sys.stdout.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
