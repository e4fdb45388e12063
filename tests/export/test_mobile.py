import sys

import numpy as np
import pytest
import torch

from ember import package
from ember.export import ExportError, MissingDependencyError, export
from ember.export.mobile import run_pte
from ember.export.onnx import run_onnx
from tests.plugins.digits import copy_package

PTE = "mobile/model.pte"


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


class _SplitGate(torch.nn.Module):
    """``Tensor[]``-returning ops (split) with a dynamic batch: ExecuTorch's verifier fixed it."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = torch.nn.Linear(4, 6)

    def forward(self, x):
        a, b = self.proj(x).split(3, dim=-1)  # (B, 3) each
        return a * torch.sigmoid(b)


@pytest.mark.e2e
def test_mobile_split_keeps_the_batch_dynamic(tmp_path):
    pytest.importorskip("executorch")
    torch.manual_seed(0)
    model = _SplitGate().eval()
    path = package.save(model, tmp_path / "split", example_input=torch.randn(8, 4))
    figures = export(path, ["mobile"])["mobile"]
    assert figures["pte"]["max_rel_diff"] < 1e-4 and not figures["static"]
    for rows in (3, 64):  # not the sample's 8 rows, nor only the traced 64
        x = torch.randn(rows, 4)
        want = model(x).detach().numpy()
        np.testing.assert_allclose(run_pte(path / PTE, x), want, rtol=1e-4, atol=1e-6)


def test_a_dynamic_axis_fixed_while_lowering_is_named():
    from ember.export.mobile import _check_still_dynamic

    program = torch.export.export(_SplitGate().eval(), (torch.randn(8, 4),))  # batch fixed at 8
    signature = {"inputs": [{"name": "x"}], "dynamic_axes": {}}
    with pytest.raises(ExportError, match=r"fixed the dynamic axis 'batch' of input 'x' at 8"):
        _check_still_dynamic(program, signature, ["x"])


def _tiny_gpt2() -> torch.nn.Module:
    transformers = pytest.importorskip("transformers")
    config = transformers.GPT2Config(vocab_size=50, n_embd=16, n_layer=1, n_head=2, n_positions=64)
    return transformers.GPT2LMHeadModel(config).eval()


@pytest.mark.e2e
def test_gpt2_with_fused_attention_dynamic_and_static(tmp_path):
    """GPT-2's default attention (SDPA) lowers, and the .pte runs other batch sizes and lengths."""
    pytest.importorskip("executorch")
    torch.manual_seed(0)
    model = _tiny_gpt2()
    assert model.config._attn_implementation == "sdpa"
    ids = torch.randint(0, 50, (4, 12))
    mask = torch.ones_like(ids)
    mask[0, 9:] = 0
    seq = {"input_ids": {1: "sequence"}, "attention_mask": {1: "sequence"}}
    path = package.save(
        model, tmp_path / "gpt2", example_input={"input_ids": ids, "attention_mask": mask},
        dynamic_shapes=seq,
    )  # fmt: skip
    figures = export(path, ["mobile"])["mobile"]
    assert figures["pte"]["max_rel_diff"] < 1e-4 and not figures["static"]
    assert figures["pte"]["checked_shapes"]["varied"]["input_ids"][1] != 12
    feed = {"input_ids": ids[:3, :5].numpy(), "attention_mask": mask[:3, :5].numpy()}
    with torch.no_grad():
        want = model(**{k: torch.from_numpy(v) for k, v in feed.items()}).logits.numpy()
    np.testing.assert_allclose(run_pte(path / PTE, feed)[0], want, rtol=1e-4, atol=1e-5)
    fixed = export(path, ["mobile"], static=True)["mobile"]
    assert fixed["static"] and fixed["pte"]["max_rel_diff"] < 1e-4
    assert list(fixed["pte"]["checked_shapes"]) == ["stored"]
