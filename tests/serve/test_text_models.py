"""Text models built offline from tiny configs: save -> export -> serve -> tritonclient, with parity.

BERT (sequence classification, ids + mask) and GPT-2 (causal LM) come from ``transformers``;
an Embedding + LSTM on int64 ids and a two-output model need torch only. Requests use another
sequence length than the stored sample wherever the sequence axis is dynamic.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from torch import nn

from ember import export, package
from tests.plugins.models import TinyTagger
from tests.plugins.waiting import free_port

pytestmark = pytest.mark.e2e

SEQ = {"input_ids": {1: "sequence"}, "attention_mask": {1: "sequence"}}


class _TwoHeads(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(50, 8)
        self.cls = nn.Linear(8, 3)
        self.reg = nn.Linear(8, 1)

    def forward(self, input_ids, attention_mask):
        mask = attention_mask.unsqueeze(-1).float()
        pooled = (self.embed(input_ids) * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        return self.cls(pooled), self.reg(pooled)


def _bert() -> nn.Module:
    transformers = pytest.importorskip("transformers")
    config = transformers.BertConfig(
        vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=64, num_labels=3,
    )  # fmt: skip
    return transformers.BertForSequenceClassification(config).eval()


def _gpt2() -> nn.Module:
    transformers = pytest.importorskip("transformers")
    config = transformers.GPT2Config(vocab_size=100, n_embd=32, n_layer=2, n_head=2, n_positions=64)
    return transformers.GPT2LMHeadModel(config).eval()


def _ids(rows: int, length: int, vocab: int = 50) -> dict[str, torch.Tensor]:
    ids = torch.randint(0, vocab, (rows, length))
    mask = torch.ones(rows, length, dtype=torch.int64)
    mask[0, length - 2 :] = 0
    return {"input_ids": ids, "attention_mask": mask}


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """models/{bert,gpt2,tagger,two}/1, each with onnx + int8, and the models themselves."""
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("text") / "models"
    models = {
        "bert": (_bert(), _ids(4, 16, 100), SEQ, "classification"),
        "gpt2": (_gpt2(), _ids(4, 16, 100), SEQ, None),
        "tagger": (TinyTagger().eval(), torch.randint(0, 50, (4, 7)), None, "classification"),
        "two": (_TwoHeads().eval(), _ids(4, 10), SEQ, "classification"),
    }
    for name, (model, example, dynamic, task) in models.items():
        path = package.save(
            model, root / name / "1", example_input=example, dynamic_shapes=dynamic,
            name=name, task=task,
        )  # fmt: skip
        figures = export.export(path, ["onnx", "int8"], min_top1=0.5)
        assert figures["onnx"]["max_rel_diff"] < 1e-4, (name, figures["onnx"])
        if dynamic:
            checked = figures["onnx"]["checked_shapes"]
            assert checked["varied"]["input_ids"][1] != checked["stored"]["input_ids"][1]
    return root, {name: spec[0] for name, spec in models.items()}


def _expected(model: nn.Module, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
    with torch.no_grad():
        out = model(**{k: torch.from_numpy(v) for k, v in inputs.items()})
    if hasattr(out, "logits"):
        return [out.logits.numpy()]
    return [t.numpy() for t in (out if isinstance(out, tuple) else (out,))]


def test_tritonclient_http_and_grpc_at_another_sequence_length(repo, start_server):
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient

    root, models = repo
    port = free_port()
    server = start_server(root, grpc_port=port)
    rng = np.random.default_rng(1)
    for name in ("bert", "gpt2", "two"):
        vocab = 100 if name != "two" else 50
        inputs = {
            "input_ids": rng.integers(0, vocab, (2, 9)).astype(np.int64),  # stored sample: 16/10
            "attention_mask": np.ones((2, 9), np.int64),
        }
        want = _expected(models[name], inputs)
        outputs = [
            s["name"] for s in package.read_manifest(root / name / "1")["signature"]["outputs"]
        ]
        for module, url in ((httpclient, server.url.removeprefix("http://")),
                            (grpcclient, f"127.0.0.1:{port}")):  # fmt: skip
            with module.InferenceServerClient(url) as client:
                tensors = []
                for key, value in inputs.items():
                    tensor = module.InferInput(key, list(value.shape), "INT64")
                    tensor.set_data_from_numpy(value)
                    tensors.append(tensor)
                result = client.infer(name, tensors)
                for output, expected in zip(outputs, want):
                    np.testing.assert_allclose(result.as_numpy(output), expected, atol=1e-4)


def test_tfserving_rows_columns_and_torchserve_objects(repo, start_server):
    root, models = repo
    server = start_server(root)
    ids = np.random.default_rng(2).integers(0, 50, (2, 6))
    mask = np.ones((2, 6), np.int64)
    want = _expected(models["two"], {"input_ids": ids, "attention_mask": mask})[0]
    rows = [{"input_ids": i.tolist(), "attention_mask": m.tolist()} for i, m in zip(ids, mask)]
    r = httpx.post(server.url + "/v1/models/two:predict", json={"instances": rows})
    assert r.status_code == 200, r.text
    np.testing.assert_allclose(
        np.array([p["output_0"] for p in r.json()["predictions"]]), want, atol=1e-4
    )
    columns = {"inputs": {"input_ids": ids.tolist(), "attention_mask": mask.tolist()}}
    r = httpx.post(server.url + "/v1/models/two:predict", json=columns)
    assert r.status_code == 200, r.text
    np.testing.assert_allclose(np.array(r.json()["outputs"]["output_0"]), want, atol=1e-4)
    r = httpx.post(server.url + "/predictions/two", json=rows[0])
    assert r.status_code == 200, r.text
    assert set(r.json()) <= {"0", "1", "2"}
    # the LSTM's sequence axis is static: another length is refused with the expected shape
    r = httpx.post(server.url + "/v1/models/tagger:predict", json={"instances": [[1, 2, 3]]})
    assert r.status_code == 400 and "7" in r.text


def _copy(repo, name: str, tmp_path: Path) -> Path:
    import shutil

    return Path(shutil.copytree(repo[0] / name / "1", tmp_path / name))


def test_cpp_runner_with_two_int64_inputs_and_two_outputs(repo, tmp_path):
    """AOTInductor with several inputs; the C++ runner reads int64 ids at another length."""
    from ember.export import cpp

    path = _copy(repo, "two", tmp_path)
    figures = export.export(path, ["cpp"])["cpp"]
    assert figures["max_rel_diff"] < 1e-4 and figures["dynamic_batch"]
    assert figures["checked_shapes"]["varied"]["input_ids"] == [4, 7]
    binary = cpp.build_cpp_runner(path)
    inputs = {k: v.numpy() for k, v in _ids(3, 5).items()}
    logits, score = cpp.run_cpp_runner(binary, path, inputs)
    want = _expected(repo[1]["two"], inputs)
    np.testing.assert_allclose(logits, want[0], atol=1e-5)
    np.testing.assert_allclose(score, want[1], atol=1e-5)


@pytest.mark.parametrize("name", ["bert", "two"])
def test_web_bundle_runs_int64_inputs_under_node(repo, tmp_path, name):
    from ember.export import web

    path = _copy(repo, name, tmp_path)
    figures = export.export(path, ["web"])["web"]
    assert figures["max_rel_diff"] < 1e-4 and "varied" in figures["checked_shapes"]
    inputs = {k: v.numpy() for k, v in _ids(2, 5).items()}
    outputs = [s["name"] for s in package.read_manifest(path)["signature"]["outputs"]]
    npm_dir = web.ensure_npm_runtime()
    actual = web.node_run(path / "web", inputs, outputs, npm_dir=npm_dir)
    for got, want in zip(actual, _expected(repo[1][name], inputs)):
        np.testing.assert_allclose(got, want, atol=1e-4)


def test_mobile_two_inputs_dynamic_and_static(repo, tmp_path):
    pytest.importorskip("executorch")
    path = _copy(repo, "two", tmp_path)
    figures = export.export(path, ["mobile"])["mobile"]
    assert figures["max_rel_diff"] < 1e-4 and not figures["static"]
    assert figures["pte"]["checked_shapes"]["varied"]["input_ids"] == [4, 7]
    fixed = export.export(path, ["mobile"], static=True)["mobile"]
    assert fixed["static"] and list(fixed["pte"]["checked_shapes"]) == ["stored"]
