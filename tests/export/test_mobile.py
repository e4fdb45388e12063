import sys

import numpy as np
import pytest

from ember import package
from ember.export import MissingDependencyError, export
from ember.export.mobile import run_pte
from ember.export.onnx import run_onnx
from tests.plugins.digits import copy_package


@pytest.mark.e2e
def test_mobile_pte_and_ort(digits_mlp_package, tmp_path):
    path = copy_package(digits_mlp_package, tmp_path)
    figures = export(path, ["mobile"])["mobile"]
    assert figures["file"] == "mobile/model.pte" and figures["ort_file"] == "mobile/model.ort"
    assert figures["pte"]["max_rel_diff"] < 1e-4 and figures["ort"]["max_rel_diff"] < 1e-4
    assert figures["top1_agreement"] == 1.0
    inputs, expected = package.load_sample(path)
    for n in (1, 64):  # dynamic batch up to MAX_BATCH
        out = run_pte(path / "mobile/model.pte", inputs[:n])
        np.testing.assert_allclose(out, expected[:n].numpy(), rtol=1e-4, atol=1e-5)
    assert run_onnx(path / "mobile/model.ort", inputs[:3].numpy()).shape == (3, 10)
    manifest = package.read_manifest(path)
    assert {"mobile/model.pte", "mobile/model.ort"} <= set(manifest["files"])


def test_mobile_missing_extra_message(digits_mlp_package, tmp_path, monkeypatch):
    path = copy_package(digits_mlp_package, tmp_path)
    monkeypatch.setitem(sys.modules, "executorch.runtime", None)
    with pytest.raises(MissingDependencyError, match=r"pip install 'ember\[mobile\]'"):
        export(path, ["mobile"])
