"""A plain `torch.nn.Module`, written without ember, trained with the Trainer, saved, exported to
ONNX and served: the module's code is never changed.

Run:
    python examples/plain_torch.py --epochs 10

The serving part runs the server in-process (no port): it loads the package from a model
repository (`models/digits/1/`) and answers a KServe v2 request.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import shutil
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import ember
import ember.report

log = logging.getLogger("examples.plain_torch")


class DigitsMLP(nn.Module):
    """Plain PyTorch: nothing here knows about ember."""

    def __init__(self, hidden: int = 64) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Flatten(), nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, 10)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 1, 8, 8) -> (B, 10)
        return self.net(x)


def train(epochs: int, root: str) -> tuple[nn.Module, Path, tuple[np.ndarray, np.ndarray]]:
    """Train `DigitsMLP` with `ember.Trainer`; returns the module, its run directory and the test split."""
    (x, y), test = ember.load_digits()
    n_val = len(x) // 5
    train_data = DataLoader(
        TensorDataset(torch.from_numpy(x[n_val:]), torch.from_numpy(y[n_val:])),
        batch_size=64,
        shuffle=True,
    )
    val_data = DataLoader(
        TensorDataset(torch.from_numpy(x[:n_val]), torch.from_numpy(y[:n_val])), batch_size=256
    )
    model = ember.compile(DigitsMLP(), "adam", "cross_entropy", ["accuracy"], lr=3e-3)
    trainer = ember.Trainer(
        max_epochs=epochs,
        default_root_dir=root,
        name="plain_torch",
        seed=0,
        enable_progress_bar=False,
    )
    trainer.fit(model, train_data, val_data)
    return model, trainer.log_dir, test


async def serve_once(repository: Path, x: np.ndarray) -> np.ndarray:
    """Start the server's app in-process and send one KServe v2 inference request."""
    import httpx

    from ember.serve import ModelRepository, build_app

    repo = ModelRepository(repository, poll_interval=None)
    await repo.start()
    try:
        transport = httpx.ASGITransport(app=build_app(repo))
        async with httpx.AsyncClient(transport=transport, base_url="http://ember") as client:
            request = {
                "inputs": [
                    {
                        "name": "input",
                        "datatype": "FP32",
                        "shape": list(x.shape),
                        "data": x.ravel().tolist(),
                    }
                ]
            }
            response = await client.post("/v2/models/digits/infer", json=request)
            response.raise_for_status()
            output = response.json()["outputs"][0]
            return np.asarray(output["data"], dtype=np.float32).reshape(output["shape"])
    finally:
        await repo.stop()


def main(argv: list[str] | None = None) -> dict[str, float]:
    """Train, save, export and serve; returns test accuracy and the served model's agreement."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--root", default="runs")
    parser.add_argument("--models", default="models", help="the model repository to write")
    args = parser.parse_args(argv)

    model, run_dir, (x_test, y_test) = train(args.epochs, args.root)
    package = Path(args.models) / "digits" / "1"
    shutil.rmtree(package, ignore_errors=True)
    ember.save(
        model,
        package,
        example_input=torch.from_numpy(x_test[:8]),
        task="classification",
        labels=[str(i) for i in range(10)],
    )
    figures = ember.export(package, ["onnx"])
    log.info("ONNX parity: %s", figures["onnx"])
    # fit wrote report.html already; write it again with the package's parity table.
    ember.report.write_report(run_dir, package_dir=package)

    with torch.no_grad():
        expected = model.eval()(torch.from_numpy(x_test)).numpy()
    served = asyncio.run(serve_once(Path(args.models), x_test))
    result = {
        "test_accuracy": float((expected.argmax(1) == y_test).mean()),
        "served_top1_agreement": float((served.argmax(1) == expected.argmax(1)).mean()),
        "served_max_abs_diff": float(np.abs(served - expected).max()),
    }
    log.info("%s", result)
    return result


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    main()
