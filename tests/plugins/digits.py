"""Small MLP and CNN packages trained on sklearn's digits (export tests): the fixtures
``digits_mlp_package``, ``digits_cnn_package``, ``digits_test_data``; helpers ``digits_data``,
``copy_package``."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from torch import nn

from ember import package

LABELS = [str(i) for i in range(10)]


def digits_data() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Digits as (x_train, y_train, x_test, y_test); x is (N, 1, 8, 8) float32 in [0, 1]."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(data.target, dtype=torch.long)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    x, y = x[perm], y[perm]
    return x[:1400], y[:1400], x[1400:], y[1400:]


def digits_mlp() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))


def digits_cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),  # (B, 8, 4, 4)
        nn.Conv2d(8, 16, 3, padding=1),
        nn.ReLU(),
        nn.Flatten(),  # (B, 256)
        nn.Linear(16 * 4 * 4, 64),
        nn.ReLU(),
        nn.Linear(64, 10),
    )


def train_digits(model: nn.Module, steps: int = 100) -> tuple[nn.Module, float]:
    """Full-batch Adam on digits for a second or two; returns the model and test accuracy."""
    torch.manual_seed(0)
    x, y, x_test, y_test = digits_data()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matmuls: more threads only contend on a loaded 2-core box
    try:
        model.train()
        for _ in range(steps):
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()
    finally:
        torch.set_num_threads(threads)
    model.eval()
    with torch.no_grad():
        accuracy = (model(x_test).argmax(1) == y_test).float().mean().item()
    return model, accuracy


def _package(tmp_path_factory: pytest.TempPathFactory, name: str, build):
    torch.manual_seed(0)  # before building: the initial weights must not depend on test order
    model, accuracy = train_digits(build())
    _, _, x_test, _ = digits_data()
    return package.save(
        model,
        tmp_path_factory.mktemp(name) / name,
        example_input=x_test[:2],
        name=name,
        task="classification",
        labels=LABELS,
        preprocessing={"scale": 1 / 16},
        metrics={"test_accuracy": accuracy},
        sample_inputs=x_test[:64],
    )


@pytest.fixture(scope="session")
def digits_test_data() -> tuple[torch.Tensor, torch.Tensor]:
    """Held-out digits ``(x, y)`` (x is (397, 1, 8, 8) float32)."""
    _, _, x_test, y_test = digits_data()
    return x_test, y_test


@pytest.fixture(scope="session")
def digits_mlp_package(tmp_path_factory: pytest.TempPathFactory):
    """A package dir holding a trained digits MLP (64-128-10), no targets exported yet."""
    return _package(tmp_path_factory, "digits_mlp", digits_mlp)


@pytest.fixture(scope="session")
def digits_cnn_package(tmp_path_factory: pytest.TempPathFactory):
    """A package dir holding a trained digits CNN (two convs + MLP head), no targets yet."""
    return _package(tmp_path_factory, "digits_cnn", digits_cnn)


def copy_package(source: Path, tmp_path: Path) -> Path:
    """A private copy of a session package, so a test may add or break targets."""
    return Path(shutil.copytree(source, tmp_path / source.name))
