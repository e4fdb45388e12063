"""ember.load gives a Model back (predict, evaluate, fit, save); save after fit; get/set_weights."""

import numpy as np
import pytest
import torch

import ember
from ember import layers
from ember.loading import LoadedModel

QUIET = dict(verbose=False, logger=False, enable_report=False, enable_checkpointing=False)


def _sequential():
    torch.manual_seed(0)
    model = ember.Sequential(
        [
            layers.Dense(16, activation="relu"),
            layers.BatchNorm(),
            layers.Dropout(0.1),
            layers.Dense(3),
        ]
    )
    model.compile("adam", "cross_entropy", ["accuracy"], lr=0.01)
    return model


def test_save_right_after_fit_needs_no_input_layer_or_example(blobs, tmp_path):
    x, y = blobs
    model = _sequential()
    model.fit(x, y, epochs=2, **QUIET)
    package = model.save(tmp_path / "pkg", task="classification")
    inputs, outputs = ember.package.load_sample(package)
    np.testing.assert_allclose(inputs.numpy(), x[:64])  # the real rows fit kept, not zeros
    np.testing.assert_allclose(outputs.numpy(), model.predict(x[:64]), atol=1e-5)


def test_save_before_fit_says_what_to_do():
    model = ember.Sequential([layers.Dense(3)])
    with pytest.raises(ValueError, match=r"call fit\(\) first.*example_input=x\[:1\].*Input"):
        model.save("pkg")


def test_a_loaded_sequential_predicts_numpy_evaluates_and_keeps_training(blobs, tmp_path):
    x, y = blobs
    model = _sequential()
    model.fit(x, y, epochs=3, **QUIET)
    restored = ember.load(
        model.save(tmp_path / "pkg", task="classification", labels=["a", "b", "c"])
    )
    assert isinstance(restored, ember.Sequential) and restored.labels == ["a", "b", "c"]
    np.testing.assert_allclose(restored.predict(x), model.predict(x), atol=1e-5)
    assert restored(x[:2]).shape == (2, 3)  # numpy straight into the model, as predict takes
    before = restored.evaluate(x, y)  # compiled for the package's task
    assert set(before) == {"loss", "accuracy"}
    restored.fit(x, y, epochs=3, **QUIET)
    assert restored.evaluate(x, y)["loss"] < before["loss"]
    again = ember.load(restored.save(tmp_path / "again"))  # no example_input needed
    np.testing.assert_allclose(again.predict(x), restored.predict(x), atol=1e-5)


def test_a_loaded_plain_module_predicts_evaluates_and_keeps_training(blobs, tmp_path):
    x, y = blobs
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    package = ember.save(
        net, tmp_path / "pkg", example_input=torch.zeros(2, 4), task="classification"
    )
    restored = ember.load(package)
    assert isinstance(restored, LoadedModel)
    with torch.no_grad():
        expected = net(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(restored.predict(x), expected, atol=1e-5)
    np.testing.assert_allclose(restored(x).detach().numpy(), expected, atol=1e-5)
    before = restored.evaluate(x, y)["loss"]
    restored.compile("adam", "cross_entropy", ["accuracy"], lr=0.01)
    restored.fit(x, y, epochs=5, **QUIET)
    assert restored.evaluate(x, y)["loss"] < before
    again = ember.load(restored.save(tmp_path / "again"))
    np.testing.assert_allclose(again.predict(x), restored.predict(x), atol=1e-5)


def test_load_without_a_task_is_not_compiled(blobs, tmp_path):
    x, y = blobs
    model = _sequential()
    model.fit(x, y, epochs=1, **QUIET)
    restored = ember.load(model.save(tmp_path / "pkg"))
    assert restored.predict(x).shape == (len(x), 3)
    with pytest.raises(RuntimeError, match="not compiled"):
        restored.evaluate(x, y)


def test_get_and_set_weights_copy_a_model_like_keras(blobs):
    x, y = blobs
    model = _sequential()
    model.fit(x, y, epochs=1, **QUIET)
    weights = model.get_weights()
    assert all(isinstance(w, np.ndarray) for w in weights)
    other = _sequential()
    other(x[:2])  # built, different initial weights
    other.eval(), model.eval()
    other.set_weights(weights)
    np.testing.assert_allclose(other.predict(x), model.predict(x), atol=1e-6)
    weights[0] += 1.0  # get_weights returns copies
    assert not np.allclose(model.get_weights()[0], weights[0])


def test_set_weights_names_the_mismatch(blobs):
    model = _sequential()
    model(blobs[0][:2])
    weights = model.get_weights()
    with pytest.raises(ValueError, match=r"expected \d+ arrays.*received 1"):
        model.set_weights(weights[:1])
    weights[0] = np.zeros((2, 2), np.float32)
    with pytest.raises(
        ValueError, match=r"layers.0.linear.weight has shape \(16, 4\), received \(2, 2\)"
    ):
        model.set_weights(weights)
    with pytest.raises(ValueError, match="not built yet"):
        ember.Sequential([layers.Dense(2)]).get_weights()


def test_load_a_package_with_two_int64_inputs_and_predict_by_name(tmp_path):
    """ember.load takes packages with several named inputs (token ids and a mask)."""
    from torch import nn

    class Pooler(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed, self.head = nn.Embedding(20, 4), nn.Linear(4, 2)

        def forward(self, input_ids, attention_mask):
            mask = attention_mask.unsqueeze(-1).float()
            return self.head((self.embed(input_ids) * mask).sum(1))

    torch.manual_seed(0)
    net = Pooler().eval()
    ids = torch.randint(0, 20, (3, 5))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    ember.save(net, tmp_path / "p", example_input=batch)
    model = ember.load(tmp_path / "p")
    torch.testing.assert_close(model(**batch), net(**batch))
    torch.testing.assert_close(model(ids.numpy(), batch["attention_mask"].numpy()), net(**batch))
