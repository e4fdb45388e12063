"""Every script in examples/ runs end to end with tiny settings."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

from ember import package as ember_package

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"examples_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_digits_cnn(tmp_path: Path) -> None:
    out = tmp_path / "pkg"
    metrics = _load("digits_cnn").main(
        ["--epochs", "1", "--root", str(tmp_path / "runs"), "--out", str(out)]
    )
    assert 0.0 <= metrics["accuracy"] <= 1.0 and metrics["loss"] > 0
    assert (out / "ember.json").is_file() and (out / "weights.safetensors").is_file()
    assert list((tmp_path / "runs" / "digits_cnn").glob("version_*/history.json"))


def test_tabular_classification_learns_breast_cancer(tmp_path: Path) -> None:
    metrics = _load("tabular_classification").main(["--epochs", "3", "--root", str(tmp_path)])
    assert metrics["accuracy"] > 0.8  # standardised features: an easy problem


def test_regression_on_diabetes(tmp_path: Path) -> None:
    metrics = _load("regression").main(["--epochs", "2", "--root", str(tmp_path)])
    assert set(metrics) >= {"loss", "mae", "mae_units"} and metrics["mae_units"] > 0


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_sequence(tmp_path: Path, cell: str) -> None:
    module = _load("sequence")
    x, y = module.make_data(16, steps=5)
    assert x.shape == (16, 5, 2) and set(y.tolist()) <= {0, 1}
    metrics = module.main(
        ["--epochs", "1", "--cell", cell, "--samples", "128", "--root", str(tmp_path)]
    )
    assert 0.0 <= metrics["accuracy"] <= 1.0


@pytest.mark.e2e
def test_plain_torch_trained_exported_and_served(tmp_path: Path) -> None:
    result = _load("plain_torch").main(
        ["--epochs", "1", "--root", str(tmp_path / "runs"), "--models", str(tmp_path / "models")]
    )
    assert result["served_top1_agreement"] == 1.0
    assert result["served_max_abs_diff"] < 1e-4
    assert (tmp_path / "models" / "digits" / "1" / "model.onnx").is_file()
    report = next((tmp_path / "runs").glob("plain_torch/version_*/report.html")).read_text()
    assert "Export parity" in report and "top1_agreement" in report


@pytest.mark.e2e
def test_hf_text_classifier(tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    out = tmp_path / "bert"
    result = _load("hf_text_classifier").main(["--steps", "3", "--out", str(out)])
    assert result["onnx_max_abs_diff"] < 1e-4 and result["served_max_abs_diff"] < 1e-4
    signature = ember_package.read_manifest(out)["signature"]
    assert [s["dtype"] for s in signature["inputs"]] == ["int64", "int64"]
