import pytest
from conftest import copy_package

from ember import package
from ember.export import ExportError, export


def test_int8_mlp_dynamic_size_and_accuracy(digits_mlp_package, digits_test_data, tmp_path):
    path = copy_package(digits_mlp_package, tmp_path)
    figures = export(path, ["onnx", "int8"], eval_data=digits_test_data)["int8"]
    assert figures["mode"] == "dynamic"
    assert figures["size_ratio"] < 0.32  # measured 0.30 (fp32 43 KB -> int8 13 KB)
    assert figures["top1_agreement"] >= 0.99
    assert figures["fp32_accuracy"] - figures["accuracy"] <= 0.01
    assert package.read_manifest(path)["targets"]["int8"]["file"] == "model.int8.onnx"


def test_int8_cnn_static_calibration(digits_cnn_package, digits_test_data, tmp_path):
    path = copy_package(digits_cnn_package, tmp_path)
    x, _ = digits_test_data
    figures = export(
        path, ["int8"], min_top1=0.95, calibration_data=x[:128], eval_data=digits_test_data
    )["int8"]
    assert figures["mode"] == "static"
    assert figures["size_ratio"] < 0.35  # measured 0.32
    assert figures["top1_agreement"] >= 0.95
    assert figures["fp32_accuracy"] - figures["accuracy"] <= 0.02
    assert "onnx" in package.read_manifest(path)["targets"]  # written first, on demand


def test_int8_failing_top1_is_removed(digits_mlp_package, tmp_path):
    path = copy_package(digits_mlp_package, tmp_path)
    with pytest.raises(ExportError, match=r"top1_agreement 1.0000 < min_top1 1.01.*size_ratio="):
        export(path, ["int8"], min_top1=1.01)
    assert not (path / "model.int8.onnx").exists()
    assert "int8" not in package.read_manifest(path)["targets"]
