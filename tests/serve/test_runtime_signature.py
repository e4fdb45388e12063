"""The server's runtimes take packages with several named int64 inputs and dynamic sequence axes."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

from ember import export, package
from ember.serve.errors import ServeError
from ember.serve.runtime import load_version
from tests.plugins.models import TwoHeads

SEQ = {"input_ids": {1: "sequence"}, "attention_mask": {1: "sequence"}}


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    torch.manual_seed(0)
    model = TwoHeads().eval()
    ids = torch.randint(0, 50, (4, 10))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    path = package.save(model, tmp_path_factory.mktemp("p") / "two", example_input=batch,
                        dynamic_shapes=SEQ)  # fmt: skip
    return model, path


@pytest.mark.parametrize("runtime", ["torch", "onnxruntime"])
def test_named_int64_inputs_at_another_length(saved, tmp_path, runtime):
    model, path = saved
    if runtime == "onnxruntime":
        export.export(path, ["onnx"])
    with ThreadPoolExecutor(1) as executor:
        mv = load_version("two", 1, path, executor, runtime=runtime)  # warms up on both samples
        assert [(s.name, s.datatype, s.shape) for s in mv.inputs] == [
            ("input_ids", "INT64", [-1, -1]),
            ("attention_mask", "INT64", [-1, -1]),
        ]
        assert [s.name for s in mv.outputs] == ["logits", "score"]
        ids = np.random.default_rng(0).integers(0, 50, (2, 23))
        inputs = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
        outputs = asyncio.run(mv.infer(inputs))
    with torch.no_grad():
        want = model(**{k: torch.from_numpy(v) for k, v in inputs.items()})
    np.testing.assert_allclose(outputs["logits"], want["logits"].numpy(), atol=1e-5)
    np.testing.assert_allclose(outputs["score"], want["score"].numpy(), atol=1e-5)


def test_a_runtime_that_lost_the_sequence_axis_fails_warm_up(saved, tmp_path):
    """A model.onnx fixed at the stored length fails on the varied sample when loading."""
    import shutil

    model, path = saved
    broken = shutil.copytree(path, tmp_path / "broken")
    flat = package.load(broken).flat
    inputs, _ = package.load_named_sample(broken)
    torch.onnx.export(flat, tuple(inputs.values()), str(broken / "model.onnx"), dynamo=True,
                      input_names=list(inputs), output_names=["logits", "score"])  # fmt: skip
    package.record_target(broken, "onnx", {"file": "model.onnx"}, ["model.onnx"])  # its hash
    with (
        ThreadPoolExecutor(1) as executor,
        pytest.raises(ServeError, match=r"cannot run the package's varied sample .*\[4, 7\]"),
    ):
        load_version("two", 1, broken, executor, runtime="onnxruntime")
