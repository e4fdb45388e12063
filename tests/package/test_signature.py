"""Packages with several named inputs and outputs of any dtype, and dynamic axes beyond the batch."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from ember import package
from ember.package import PackageError
from tests.plugins.models import TinyTagger, TwoHeads


def _batch(rows=4, length=10):
    torch.manual_seed(0)
    ids = torch.randint(0, 50, (rows, length))
    mask = torch.ones(rows, length, dtype=torch.int64)
    mask[:, length - 3 :] = 0
    return {"input_ids": ids, "attention_mask": mask}


def test_int64_ids_keep_their_dtype(tmp_path):
    torch.manual_seed(0)
    model = TinyTagger().eval()
    ids = torch.randint(0, 50, (4, 7))
    path = package.save(model, tmp_path / "tagger", example_input=ids)
    manifest = package.read_manifest(path)
    assert manifest["export_error"] is None
    assert manifest["signature"]["inputs"] == [
        {"name": "input", "dtype": "int64", "shape": [-1, 7]}
    ]
    inputs, _ = package.load_sample(path)
    assert inputs.dtype == torch.int64
    torch.testing.assert_close(package.load(path)(ids[:2]), model(ids[:2]))


def test_numpy_int_ids_are_accepted(tmp_path):
    ids = np.random.default_rng(0).integers(0, 50, (3, 5))
    path = package.save(TinyTagger(), tmp_path / "np", example_input=ids)
    assert package.read_manifest(path)["signature"]["inputs"][0]["dtype"] == "int64"


def test_dict_inputs_and_dict_outputs_are_named(tmp_path):
    torch.manual_seed(0)
    model = TwoHeads().eval()
    batch = _batch()
    path = package.save(model, tmp_path / "two", example_input=batch, task="classification")
    signature = package.read_manifest(path)["signature"]
    assert [s["name"] for s in signature["inputs"]] == ["input_ids", "attention_mask"]
    assert [s["dtype"] for s in signature["inputs"]] == ["int64", "int64"]
    assert [(s["name"], s["shape"]) for s in signature["outputs"]] == [
        ("logits", [-1, 3]),
        ("score", [-1, 1]),
    ]
    assert signature["call"] == "keyword"
    loaded = package.load(path)
    logits, score = loaded(**batch)
    torch.testing.assert_close(logits, model(**batch)["logits"])
    inputs, outputs = package.load_named_sample(path)
    assert list(outputs) == ["logits", "score"] and inputs["attention_mask"].dtype == torch.int64
    with pytest.raises(PackageError, match="load_named_sample"):
        package.load_sample(path)


def test_tuple_input_takes_forward_parameter_names(tmp_path):
    batch = _batch()
    path = package.save(
        TwoHeads(), tmp_path / "t", example_input=(batch["input_ids"], batch["attention_mask"])
    )
    signature = package.read_manifest(path)["signature"]
    assert package.input_names(signature) == ["input_ids", "attention_mask"]
    assert signature["call"] == "positional"


def test_dynamic_sequence_axis_is_recorded_and_runs_at_other_lengths(tmp_path):
    torch.manual_seed(0)
    model = TwoHeads().eval()
    seq = {"input_ids": {1: "sequence"}, "attention_mask": {1: "sequence"}}
    path = package.save(model, tmp_path / "d", example_input=_batch(), dynamic_shapes=seq)
    signature = package.read_manifest(path)["signature"]
    assert signature["inputs"][0]["shape"] == [-1, -1]
    assert signature["dynamic_axes"] == {
        "input_ids": {"1": "sequence"},
        "attention_mask": {"1": "sequence"},
    }
    samples = package.load_samples(path)
    stored, varied = samples["stored"][0], samples["varied"][0]
    assert varied["input_ids"].shape[1] != stored["input_ids"].shape[1]
    other = _batch(rows=1, length=23)
    torch.testing.assert_close(package.load(path)(**other)[0], model(**other)["logits"])
    text = package.inspect_text(path)
    assert "dynamic input_ids: 1=sequence" in text
    assert "(task: not set," in text and "None" not in text  # saved without task=


def test_auto_infers_dynamic_axes(tmp_path):
    path = package.save(TwoHeads(), tmp_path / "a", example_input=_batch(), dynamic_shapes="auto")
    axes = package.read_manifest(path)["signature"]["dynamic_axes"]
    assert axes["input_ids"] == {"1": "sequence"}
    # torch.export unrolls the LSTM over the sample's length: auto leaves that axis static
    lstm = package.save(
        TinyTagger(),
        tmp_path / "l",
        example_input=torch.randint(0, 50, (3, 6)),
        dynamic_shapes="auto",
    )
    assert package.read_manifest(lstm)["signature"]["dynamic_axes"] == {}


def test_a_dynamic_axis_the_model_fixes_gives_a_cause_and_advice(tmp_path, caplog):
    path = package.save(
        TinyTagger(),
        tmp_path / "f",
        example_input=torch.randint(0, 50, (3, 6)),
        dynamic_shapes={"input": {1: "sequence"}},
    )
    error = package.read_manifest(path)["export_error"]
    assert error and "\x1b[" not in error
    assert "dynamic_shapes" in caplog.text or "static" in caplog.text


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"ids": {1: "s"}}, r"unknown input\(s\) \['ids'\]"),
        ({"input_ids": [1]}, r"must be \{axis: name\}"),
        ({"input_ids": {"x": "s"}}, "must map axis numbers to names"),
        ([{1: "s"}], "has 1 entries but the model has 2 inputs"),
        (3, "must be None, 'auto' or"),
    ],
)
def test_bad_dynamic_shapes_are_rejected(tmp_path, value, message):
    with pytest.raises(ValueError, match=message):
        package.save(TwoHeads(), tmp_path / "b", example_input=_batch(), dynamic_shapes=value)


def test_sample_inputs_must_have_the_same_names(tmp_path):
    with pytest.raises(ValueError, match=r"sample_inputs.*\['input_ids', 'attention_mask'\]"):
        package.save(
            TwoHeads(), tmp_path / "s", example_input=_batch(), sample_inputs={"x": torch.ones(2)}
        )


def test_format_1_package_still_loads(tmp_path):
    """A package written by the previous ember: one input, sample keys inputs/outputs, v1."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3)).eval()
    x = torch.randn(5, 4)
    path = tmp_path / "old"
    path.mkdir()
    batch = torch.export.Dim("batch", min=1)
    program = torch.export.export(model, (x,), dynamic_shapes=({0: batch},))
    torch.export.save(program, str(path / "model.pt2"))
    save_file(
        {k: v.contiguous() for k, v in model.state_dict().items()},
        str(path / "weights.safetensors"),
    )
    save_file({"inputs": x, "outputs": model(x).detach()}, str(path / "sample.safetensors"))
    files = ["weights.safetensors", "sample.safetensors", "model.pt2"]
    manifest = {
        "format": "ember.package",
        "format_version": 1,
        "name": "old",
        "task": None,
        "signature": {
            "inputs": [{"name": "input", "dtype": "float32", "shape": [-1, 4]}],
            "outputs": [{"name": "output", "dtype": "float32", "shape": [-1, 3]}],
        },
        "files": {f: package.sha256_file(path / f) for f in files},
        "targets": {},
    }
    (path / "ember.json").write_text(json.dumps(manifest))
    torch.testing.assert_close(package.load(path)(x[:1]), model(x[:1]))
    inputs, outputs = package.load_sample(path)
    assert inputs.shape == (5, 4) and outputs.shape == (5, 3)
    assert list(package.load_samples(path)) == ["stored"]


class _BoolMasked(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, features, mask):
        return self.fc(features.masked_fill(~mask, 0.0))


def test_bool_mask_and_float_features_keep_their_dtypes_through_onnx(tmp_path):
    from ember.export import export
    from ember.export.onnx import onnx_runner

    torch.manual_seed(0)
    model = _BoolMasked().eval()
    x, mask = torch.randn(3, 4), torch.rand(3, 4) > 0.3
    path = package.save(model, tmp_path / "m", example_input=(x, mask))
    signature = package.read_manifest(path)["signature"]
    assert [(s["name"], s["dtype"]) for s in signature["inputs"]] == [
        ("features", "float32"),
        ("mask", "bool"),
    ]
    export(path, ["onnx"])
    (out,) = onnx_runner(path / "model.onnx")({"features": x.numpy(), "mask": mask.numpy()})
    np.testing.assert_allclose(out, model(x, mask).detach().numpy(), atol=1e-6)
