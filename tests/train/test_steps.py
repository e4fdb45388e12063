"""The default steps: losses on probability heads, averaged metrics, dict batches, predict."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

import ember
from ember import layers


def _binary_data(n: int = 256):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 2)).astype(np.float32)
    return x, (x[:, 0] + x[:, 1] > 0).astype(np.float32)


def _quiet(**kwargs):
    return dict(logger=False, enable_checkpointing=False, enable_report=False, seed=0, **kwargs)


@pytest.mark.parametrize("activation", ["sigmoid", None])
def test_binary_cross_entropy_trains_a_sigmoid_head_and_a_logits_head(activation, caplog):
    x, y = _binary_data()
    model = ember.Sequential([layers.Input((2,)), layers.Dense(1, activation=activation)])
    model.compile("adam", "binary_cross_entropy", ["accuracy"], lr=0.1)
    with caplog.at_level(logging.INFO, logger="ember.train.steps"):
        history = model.fit(x, y, epochs=15, batch_size=64, verbose=False, **_quiet())
    # Logits-only BCE on a sigmoid output cannot go below log(1 + e^-1) = 0.31 (the old bug).
    assert history.history["loss"][-1] < 0.25
    assert history.history["accuracy"][-1] > 0.95
    assert model.trainer.hparams["from_logits"] is (activation is None)
    used = "from_logits=False" if activation else "from_logits=True"
    assert any(used in r.getMessage() and "Loss:" in r.getMessage() for r in caplog.records)


def test_from_logits_given_to_compile_overrides_the_inference():
    model = ember.Sequential([layers.Input((2,)), layers.Dense(1)])
    model.compile("adam", "binary_cross_entropy", from_logits=False)
    cfg = model._ember_compile
    assert cfg.loss_fn.from_logits is False and cfg.from_logits_reason == "given to compile"
    with pytest.raises(TypeError, match="from_logits must be True, False or None"):
        model.compile("adam", "binary_cross_entropy", from_logits="yes")


def test_cross_entropy_trains_a_softmax_head(blobs):
    x, y = blobs
    model = ember.Sequential([layers.Input((4,)), layers.Dense(3, activation="softmax")])
    model.compile("adam", "cross_entropy", ["accuracy", "f1", "f1_weighted"], lr=0.05)
    history = model.fit(x, y, epochs=10, verbose=False, **_quiet())
    assert history.history["accuracy"][-1] > 0.9
    assert "f1_weighted" in history.history
    probs = model.predict(x[:8])
    assert np.allclose(probs.sum(axis=1), 1, atol=1e-5)  # softmax outputs ...
    assert np.allclose(model.predict_proba(x[:8]), probs)  # ... are already probabilities


class _Named(torch.nn.Module):
    """A model taking named inputs, as Hugging Face models do."""

    def __init__(self):
        super().__init__()
        self.emb = torch.nn.EmbeddingBag(10, 8, mode="sum")
        self.head = torch.nn.Linear(8, 2)

    def forward(self, input_ids, attention_mask=None):
        weights = attention_mask.float() if attention_mask is not None else None
        return {"logits": self.head(self.emb(input_ids, per_sample_weights=weights))}


def _named_batches(label_key: str = "labels"):
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1, 10, (64, 6), generator=g)
    mask = torch.ones_like(ids)
    mask[::2, 4:] = 0
    labels = (ids == 3).any(dim=1).long()
    rows = [
        {"input_ids": i, "attention_mask": m, label_key: t} for i, m, t in zip(ids, mask, labels)
    ]
    return DataLoader(rows, batch_size=16)


@pytest.mark.parametrize("label_key, target_key", [("labels", None), ("answer", "answer")])
def test_dict_batches_pass_named_inputs_and_read_labels(label_key, target_key):
    net = ember.compile(
        _Named(), "adam", "cross_entropy", ["accuracy"], lr=0.05, target_key=target_key
    )
    history = ember.Trainer(max_epochs=3, **_quiet(enable_progress_bar=False)).fit(
        net, _named_batches(label_key), _named_batches(label_key)
    )
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert "val_accuracy" in history.history
    out = ember.Trainer(**_quiet(enable_progress_bar=False)).predict(net, _named_batches(label_key))
    assert out.shape == (64, 2)


def test_a_dict_batch_without_targets_lists_the_keys_looked_for():
    rows = [{"input_ids": torch.ones(6, dtype=torch.long), "mask": torch.ones(6)}] * 4
    net = ember.compile(_Named(), "adam", "cross_entropy")
    with pytest.raises(
        ValueError,
        match="'labels', 'label', 'y', 'target', 'targets'.*Received keys: input_ids, mask",
    ):
        ember.Trainer(max_epochs=1, **_quiet(enable_progress_bar=False)).fit(net, DataLoader(rows))


def test_a_dict_output_without_logits_names_its_keys():
    class TwoHeads(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = torch.nn.Linear(4, 2), torch.nn.Linear(4, 2)

        def forward(self, x):
            return {"start": self.a(x), "end": self.b(x)}

    net = ember.compile(TwoHeads(), "adam", "cross_entropy")
    data = [(torch.zeros(4), torch.tensor(0))] * 4
    with pytest.raises(ValueError, match="without 'logits'.*Received keys: start, end"):
        ember.Trainer(max_epochs=1, **_quiet(enable_progress_bar=False)).fit(net, DataLoader(data))


def test_compile_without_a_loss_needs_a_model_that_computes_its_own():
    with pytest.raises(ValueError, match="compile\\(\\) needs a loss.*forward takes `labels`"):
        ember.compile(torch.nn.Linear(4, 2), "adam")


def test_compile_refuses_a_metric_that_is_not_one():
    with pytest.raises(TypeError, match="update\\(\\), compute\\(\\) and reset\\(\\).*Received: 3"):
        ember.compile(torch.nn.Linear(4, 2), "adam", "cross_entropy", ["accuracy", 3])


def test_a_tuple_output_with_a_compiled_loss_says_what_to_return():
    class Pair(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a = torch.nn.Linear(4, 2)

        def forward(self, x):
            return self.a(x), self.a(x)

    net = ember.compile(Pair(), "adam", "cross_entropy")
    data = [(torch.zeros(4), torch.tensor(0))] * 4
    with pytest.raises(TypeError, match="returned a tuple, but the compiled loss takes one tensor"):
        ember.Trainer(max_epochs=1, **_quiet(enable_progress_bar=False)).fit(net, DataLoader(data))


def test_steps_use_a_models_own_steps_and_the_defaults_otherwise():
    from ember.train.steps import DefaultSteps, Steps

    class Own(ember.Model):
        def __init__(self):
            super().__init__()
            self.body = torch.nn.Linear(4, 2)

        def forward(self, x):
            return self.body(x)

        def validation_step(self, batch):
            return {"loss": torch.tensor(7.0)}

    model = Own()
    model.compile("adam", "cross_entropy")
    assert isinstance(model, DefaultSteps)
    steps = Steps(model)
    assert steps.train_step is None  # the inherited default: the Trainer binds it at fit
    assert steps.validation_step(None)["loss"].item() == 7.0
    batch = (torch.zeros(3, 4), torch.zeros(3, dtype=torch.long))
    assert steps.predict_step(batch).shape == (3, 2)
