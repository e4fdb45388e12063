import sys

import numpy as np
import pytest
import torch
from torch import nn

from ember import package
from ember.export import ExportError, MissingDependencyError, export
from ember.export import onnx as onnx_target
from ember.export.onnx import run_onnx
from tests.plugins.digits import copy_package


def test_onnx_parity_figures_recorded(digits_mlp_package, tmp_path):
    path = copy_package(digits_mlp_package, tmp_path)
    figures = export(path, "onnx")["onnx"]
    record = package.read_manifest(path)["targets"]["onnx"]
    assert record == figures
    assert record["opset"] == 18 and record["file"] == "model.onnx"
    assert record["max_abs_diff"] < 1e-4 and record["top1_agreement"] == 1.0
    assert record["tolerance"] == {"rtol": 1e-4, "min_top1": None}
    package.verify_files(path, package.read_manifest(path), names=["model.onnx"])
    assert "max_abs_diff=" in package.inspect_text(path)


def test_onnx_dynamic_batch(digits_mlp_package, tmp_path):
    path = copy_package(digits_mlp_package, tmp_path)
    export(path, ["onnx"])
    inputs, expected = package.load_sample(path)
    for n in (1, 7):
        out = run_onnx(path / "model.onnx", inputs[:n].numpy())
        np.testing.assert_allclose(out, expected[:n].numpy(), rtol=1e-4, atol=1e-5)


class _Branchy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(x) if x.sum() > 0 else -self.fc(x)


def test_non_exportable_model_message(tmp_path):
    path = package.save(_Branchy(), tmp_path / "b", example_input=torch.randn(3, 4))
    with pytest.raises(ExportError, match="torch.export failed.*Way out.*torch.cond"):
        export(path, ["onnx"])
    assert not (path / "model.onnx").exists()


def test_failed_parity_removes_file_and_shows_figures(digits_mlp_package, tmp_path, monkeypatch):
    path = copy_package(digits_mlp_package, tmp_path)

    def zeros(model_path):
        return lambda feed: [np.zeros((len(next(iter(feed.values()))), 10), np.float32)]

    monkeypatch.setattr(onnx_target, "onnx_runner", zeros)
    with pytest.raises(
        ExportError, match=r"'onnx' failed parity.*max_rel_diff 1 > rtol.*max_abs_diff="
    ):
        export(path, ["onnx"])
    assert not (path / "model.onnx").exists()
    manifest = package.read_manifest(path)
    assert "onnx" not in manifest["targets"] and "model.onnx" not in manifest["files"]


def test_rtol_zero_fails_when_outputs_differ(digits_mlp_package, tmp_path):
    path = copy_package(digits_mlp_package, tmp_path)
    try:
        figures = export(path, ["onnx"], rtol=0.0)["onnx"]
    except ExportError as exc:
        assert "rtol 0" in str(exc) and not (path / "model.onnx").exists()
    else:  # onnxruntime reproduced torch bit for bit: rtol=0 passes legitimately
        assert figures["max_abs_diff"] == 0.0


def test_unknown_target():
    with pytest.raises(
        ValueError, match=r"Unknown export target\(s\) \['tflite'\]. Choose from: onnx"
    ):
        export("unused", ["onnx", "tflite"])


def test_all_means_every_target_and_the_cli_passes_static(monkeypatch, tmp_path):
    import ember.export as export_package
    from ember import cli

    assert export_package._parse_targets("all") == list(export_package.TARGETS)
    calls = []
    monkeypatch.setattr(export_package, "export", lambda *a, **k: calls.append((a, k)))
    monkeypatch.setattr("ember.package.inspect_text", lambda path: "")
    cli.main(["export", str(tmp_path), "--to", "all", "--static"])
    ((args, kwargs),) = calls
    assert args[1] == ["all"] and kwargs["static"] is True


def test_missing_extra_message(digits_mlp_package, tmp_path, monkeypatch):
    path = copy_package(digits_mlp_package, tmp_path)
    monkeypatch.setitem(sys.modules, "onnxscript", None)
    with pytest.raises(MissingDependencyError, match=r"pip install 'ember\[export\]'"):
        export(path, ["onnx"])
