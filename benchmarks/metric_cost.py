"""What named metrics cost: building them (in a fresh process) and updating them per batch.

ember's named metrics are torch-only accumulators; before, `ember.metrics.get` built torchmetrics
objects, whose import (~2 s on a slow machine) landed in the first `fit`. Both sides run in this
script, alternating, and the ratios are printed (absolute times only for context).

    OMP_NUM_THREADS=1 python benchmarks/metric_cost.py --rounds 5
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

_BUILD = {
    "ember": "ember.metrics.get('accuracy', num_classes=10); ember.metrics.get('f1', num_classes=10)",
    "torchmetrics": "import torchmetrics as tm; tm.Accuracy(task='multiclass', num_classes=10); "
    "tm.F1Score(task='multiclass', num_classes=10, average='macro')",
}
_TIMED = (
    "import time, ember\nstart = time.perf_counter()\n{code}\nprint(time.perf_counter() - start)\n"
)


def _seconds(code: str) -> float:
    """Seconds `code` takes in a fresh interpreter right after `import ember` (timed inside)."""
    out = subprocess.run(
        [sys.executable, "-c", _TIMED.format(code=code)], check=True, capture_output=True, text=True
    )
    return float(out.stdout.split()[-1])


def build_times(rounds: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {side: [] for side in _BUILD}
    for _ in range(rounds):  # alternate, so drift hits both sides alike
        for side, code in _BUILD.items():
            times[side].append(_seconds(code))
    return times


def update_times(steps: int) -> dict[str, float]:
    import torch
    import torchmetrics as tm

    import ember

    preds, target = torch.randn(32, 10), torch.randint(0, 10, (32,))
    sides = {
        "ember": [ember.metrics.get(n, num_classes=10) for n in ("accuracy", "f1")],
        "torchmetrics": [
            tm.Accuracy(task="multiclass", num_classes=10),
            tm.F1Score(task="multiclass", num_classes=10, average="macro"),
        ],
    }
    totals = dict.fromkeys(sides, 0.0)
    for _ in range(steps // 100):  # alternate in blocks of 100 updates
        for side, ms in sides.items():
            start = time.perf_counter()
            for _ in range(100):
                for m in ms:
                    m.update(preds, target)
            totals[side] += time.perf_counter() - start
    return {side: t / steps for side, t in totals.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=3000)
    args = parser.parse_args()
    built = {k: statistics.median(v) for k, v in build_times(args.rounds).items()}
    for side, s in built.items():
        print(
            f"build accuracy and f1 after import ember, {side}: {s * 1e3:.1f} ms "
            f"(median of {args.rounds} fresh processes)"
        )
    print(f"build ratio torchmetrics / ember: {built['torchmetrics'] / built['ember']:.0f}x")
    u = update_times(args.steps)
    for side, s in u.items():
        print(f"update accuracy + f1, batch 32 x 10 classes, {side}: {s * 1e6:.1f} us")
    print(f"update ratio ember / torchmetrics: {u['ember'] / u['torchmetrics']:.2f}")


if __name__ == "__main__":
    main()
