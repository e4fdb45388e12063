"""Batch-1 and batch-64 latency of eager torch, torch.compile, ONNX Runtime and ExecuTorch.

Run: ``python benchmarks/runtimes.py`` (under a minute on 2 CPU cores). Prints, per model and batch
size, each runtime's speed-up over eager torch: eager median latency / runtime median latency.

Runtimes are timed side by side: every round times a block of calls of each runtime in turn, and a
runtime's latency is the median over rounds of its mean call time in a block. Every call starts
from the same torch tensor ``x``: the ONNX Runtime calls include building their feed
``{"input": x.numpy()}`` (about 1 us), so they are not flattered against eager.

Columns: ``eager`` is ``model(x)`` under ``torch.no_grad()`` (the baseline), ``inf.mode`` the same
under ``torch.inference_mode()``, ``compile`` is ``torch.compile(model)``; ``ORT run`` is the plain
``session.run(None, feed)`` on the session ``ember serve`` builds (``ort_session``); ``ORT ember``
and ``ember int8`` time the runtime object ``ember serve`` calls (``_OrtRuntime.run``) on
model.onnx and model.int8.onnx; ``ExecuTorch`` runs mobile/model.pte (XNNPACK).
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
ROUNDS = 25
CALLS_PER_BLOCK = {1: 20, 64: 4}


def _median_seconds(runners: dict[str, Callable[[], object]], calls: int) -> dict[str, float]:
    """Median over ``ROUNDS`` of each runner's mean call time in a block, runners alternating."""
    for run in runners.values():
        for _ in range(10):  # warm up: torch.compile compiles, ORT plans its memory
            run()
    blocks: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(ROUNDS):
        for name, run in runners.items():
            for _ in range(3):  # untimed: let the previous runtime's worker threads settle
                run()
            start = time.perf_counter()
            for _ in range(calls):
                run()
            blocks[name].append((time.perf_counter() - start) / calls)
    return {name: statistics.median(times) for name, times in blocks.items()}


def _runners(model: torch.nn.Module, path: Path, x: torch.Tensor) -> dict[str, Callable]:
    """One zero-argument callable per runtime, each running the model on batch ``x``."""
    from executorch.runtime import Runtime

    from ember.serve.runtime import _OrtRuntime, ort_session

    session = ort_session(path / "model.onnx")  # configured as `ember serve` runs it
    fp32, int8 = _OrtRuntime(path / "model.onnx"), _OrtRuntime(path / "model.int8.onnx")
    method = Runtime.get().load_program(path / "mobile/model.pte").load_method("forward")
    compiled = torch.compile(model)

    def inference_mode() -> torch.Tensor:
        with torch.inference_mode():
            return model(x)

    return {
        "eager": lambda: model(x),
        "inf.mode": inference_mode,
        "compile": lambda: compiled(x),
        "ORT run": lambda: session.run(None, {"input": x.numpy()}),
        "ORT ember": lambda: fp32.run({"input": x.numpy()}),
        "ember int8": lambda: int8.run({"input": x.numpy()}),
        "ExecuTorch": lambda: method.execute([x]),
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
            for batch in (1, 64):
                x = x_test[:batch].contiguous()
                runners = _runners(model, path, x)
                with torch.no_grad():  # the eager baseline's mode (inference_mode sets its own)
                    rows.append((name, batch, _median_seconds(runners, CALLS_PER_BLOCK[batch])))
    _print_table(rows)


def _print_table(rows: list) -> None:
    names = list(rows[0][2])
    width = max(len(n) for n in names) + 1
    header = f"{'model':<5} {'batch':>5}  " + "  ".join(f"{n:>{width}}" for n in names)
    lines = [
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; "
        "speed-up vs eager (eager median latency / runtime median latency)",
        header,
    ]
    for name, batch, times in rows:
        eager = times["eager"]
        ratios = "  ".join(f"{eager / times[n]:>{width - 1}.2f}x" for n in names)
        lines.append(f"{name:<5} {batch:>5}  {ratios}")
        lines.append(
            f"{'':<5} {'':>5}  eager: {eager * 1e6:.0f} us/batch, {batch / eager:.0f} samples/s"
        )
    sys.stdout.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
