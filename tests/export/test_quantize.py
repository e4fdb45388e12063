import numpy as np
import pytest

from ember import package
from ember.export import ExportError, export
from ember.export.onnx import run_onnx
from ember.export.quantize import _shrink, export_int8
from tests.plugins.digits import copy_package, digits_data


def test_int8_mlp_dynamic_size_and_accuracy(digits_mlp_package, digits_test_data, tmp_path):
    path = copy_package(digits_mlp_package, tmp_path)
    figures = export(path, ["onnx", "int8"], eval_data=digits_test_data)["int8"]
    assert figures["mode"] == "dynamic"
    assert figures["size_ratio"] < 0.28  # measured 0.264 (fp32 43 KB -> int8 11 KB)
    assert figures["top1_agreement"] >= 0.99
    assert figures["fp32_accuracy"] - figures["accuracy"] <= 0.01  # measured 0.0025
    assert package.read_manifest(path)["targets"]["int8"]["file"] == "model.int8.onnx"


def test_int8_cnn_static_meets_default_top1(digits_cnn_package, digits_test_data, tmp_path):
    path = copy_package(digits_cnn_package, tmp_path)
    x_train = digits_data()[0]
    figures = export(path, ["int8"], calibration_data=x_train[:512], eval_data=digits_test_data)[
        "int8"
    ]  # default min_top1=0.99
    assert figures["mode"] == "static"
    assert figures["reduce_range"] and figures["per_channel"]
    assert figures["calibration"] == {"method": "minmax", "samples": 512}
    assert figures["size_ratio"] < 0.30  # measured 0.277
    assert figures["top1_agreement"] == 1.0
    assert figures["fp32_accuracy"] - figures["accuracy"] <= 0.01  # measured 0.0
    assert "onnx" in package.read_manifest(path)["targets"]  # written first, on demand


def test_int8_entropy_calibration_drops_short_last_batch(digits_cnn_package, tmp_path):
    path = copy_package(digits_cnn_package, tmp_path)
    x_train = digits_data()[0]
    # 100 rows: six batches of 16 and a short one, which histogram calibrators cannot stack.
    figures = export_int8(path, calibration_data=x_train[:100], calibration_method="entropy")
    assert figures["calibration"] == {"method": "entropy", "samples": 96}
    assert figures["top1_agreement"] >= 0.99


def test_int8_failing_top1_is_removed(digits_mlp_package, tmp_path, monkeypatch):
    from ember.export import verify

    measured = verify.parity_on_samples

    def half_agree(*args, **kwargs):  # int8 that picks another class for half the rows
        return {**measured(*args, **kwargs), "top1_agreement": 0.5}

    monkeypatch.setattr(verify, "parity_on_samples", half_agree)
    path = copy_package(digits_mlp_package, tmp_path)
    with pytest.raises(ExportError, match=r"top1_agreement 0.5000 < min_top1 0.99.*size_ratio="):
        export(path, ["int8"], min_top1=0.99)
    assert not (path / "model.int8.onnx").exists()
    assert "int8" not in package.read_manifest(path)["targets"]


def test_int8_rejects_unknown_calibration_method(digits_mlp_package, tmp_path):
    path = copy_package(digits_mlp_package, tmp_path)
    with pytest.raises(ValueError, match=r"'kl'.*minmax, entropy, percentile"):
        export_int8(path, calibration_method="kl")
    assert not (path / "model.onnx").exists()  # failed before writing anything


def test_int8_rejects_misshapen_calibration_data(digits_cnn_package, tmp_path):
    path = copy_package(digits_cnn_package, tmp_path)
    with pytest.raises(ValueError, match=r"shaped \(1, 8, 8\).*Received: shape \(10, 64\)"):
        export(path, ["int8"], calibration_data=np.zeros((10, 64), np.float32))
    assert not (path / "model.onnx").exists()


def test_shrink_keeps_outputs_and_io_names(digits_cnn_package, tmp_path):
    import onnx

    path = copy_package(digits_cnn_package, tmp_path)
    export(path, ["onnx"])
    shrunk = tmp_path / "shrunk.onnx"
    shrunk.write_bytes((path / "model.onnx").read_bytes())
    _shrink(shrunk)
    assert shrunk.stat().st_size < 0.95 * (path / "model.onnx").stat().st_size
    x = digits_data()[2][:8].numpy()
    np.testing.assert_array_equal(run_onnx(shrunk, x), run_onnx(path / "model.onnx", x))
    before, after = onnx.load(str(path / "model.onnx")), onnx.load(str(shrunk))
    assert [i.name for i in after.graph.input] == [i.name for i in before.graph.input]
    assert [o.name for o in after.graph.output] == [o.name for o in before.graph.output]
    assert not after.graph.value_info and not any(n.metadata_props for n in after.graph.node)
