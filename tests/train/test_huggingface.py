"""Hugging Face models trained as they are: ModelOutput outputs, dict batches, their own loss, LM metrics.

The models are built offline from tiny configs with random weights (nothing is downloaded).
"""

from __future__ import annotations

import math

import pytest
import torch
from torch.utils.data import DataLoader

import ember

transformers = pytest.importorskip("transformers")


def _trainer(**kwargs):
    kwargs.setdefault("enable_progress_bar", False)
    return ember.Trainer(seed=0, logger=False, enable_checkpointing=False, **kwargs)


def _bert():
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=40,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=16,
        num_labels=2,
    )
    return transformers.BertForSequenceClassification(config)


def _gpt2():
    torch.manual_seed(0)
    config = transformers.GPT2Config(
        vocab_size=24, n_embd=16, n_layer=1, n_head=2, n_positions=16, pad_token_id=0
    )
    return transformers.GPT2LMHeadModel(config)


def _sentences(n: int = 64, length: int = 10):
    """Token ids with right padding (attention_mask 0) on every other row; label: token 7 appears."""
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1, 20, (n, length), generator=g)
    mask = torch.ones_like(ids)
    mask[::2, 7:] = 0
    ids = ids.masked_fill(mask == 0, 0)
    labels = (ids == 7).any(dim=1).long()
    return ids, mask, labels


def _classification_batches():
    ids, mask, labels = _sentences()
    rows = [
        {"input_ids": i, "attention_mask": m, "labels": t} for i, m, t in zip(ids, mask, labels)
    ]
    return DataLoader(rows, batch_size=16)


def _lm_batches():
    ids, mask, _ = _sentences()
    # Causal LM: labels are the input ids; padded positions are masked from the attention mask.
    rows = [{"input_ids": i, "attention_mask": m, "labels": i} for i, m in zip(ids, mask)]
    return DataLoader(rows, batch_size=16)


def test_bert_sequence_classification_trains_with_a_compiled_loss():
    model = ember.compile(_bert(), "adam", "cross_entropy", ["accuracy", "f1"], lr=3e-3)
    history = _trainer(max_epochs=4).fit(
        model, _classification_batches(), _classification_batches()
    )
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert {"val_accuracy", "val_f1"} <= set(history.history)
    logits = _trainer().predict(model, _classification_batches())
    assert logits.shape == (64, 2)  # ModelOutput.logits


def test_bert_uses_its_own_loss_when_none_is_compiled():
    model = ember.compile(_bert(), "adam", metrics=["accuracy"])
    batch = next(iter(_classification_batches()))
    model.eval()  # no dropout: the two forward passes compare exactly
    logs = ember.train.steps.default_train_step(model, batch)
    expected = model(**batch).loss
    assert float(logs["loss"].detach()) == pytest.approx(float(expected), rel=1e-6)
    model.train()
    history = _trainer(max_epochs=1).fit(model, _classification_batches())
    assert "accuracy" in history.history


def test_gpt2_causal_lm_loss_masks_padding_and_matches_the_models_own():
    batches = _lm_batches()
    batch = next(iter(batches))
    ours = ember.compile(_gpt2(), "adam", "causal_lm", ["perplexity", "token_accuracy"])
    own = ember.compile(_gpt2(), "adam", metrics=["perplexity", "token_accuracy"])
    assert own._ember_compile.shift_labels  # a *LMHeadModel: next-token targets
    ours.eval(), own.eval()  # no dropout: the forward passes compare exactly
    # Hugging Face's own loss with padding set to -100 by hand: what ember does from the mask.
    labels = batch["labels"].masked_fill(batch["attention_mask"] == 0, -100)
    expected = float(own(**{**batch, "labels": labels}).loss)
    unmasked = float(own(**batch).loss)
    assert unmasked != pytest.approx(expected)  # padding would count without the mask
    for model in (ours, own):
        loss = ember.train.steps.default_train_step(model, batch)["loss"]
        assert float(loss.detach()) == pytest.approx(expected, rel=1e-5)


def test_gpt2_trains_and_reports_perplexity_and_token_accuracy():
    model = ember.compile(_gpt2(), "adam", "causal_lm", ["perplexity", "token_accuracy"], lr=1e-2)
    history = _trainer(max_epochs=3).fit(model, _lm_batches(), _lm_batches())
    h = history.history
    assert h["val_loss"][-1] < h["val_loss"][0]
    assert 1 < h["val_perplexity"][-1] < 24  # better than uniform over the vocabulary
    # Perplexity is exp(mean token loss): close to exp(val_loss) (a mean over batches).
    assert math.log(h["val_perplexity"][-1]) == pytest.approx(h["val_loss"][-1], rel=0.05)
    assert 0 < h["val_token_accuracy"][-1] <= 1


def test_default_features_run_with_dict_batches():
    # TensorBoard graph, report and checkpoint with named inputs: no crash, a trained model.
    model = ember.compile(_bert(), "adam", "cross_entropy", ["accuracy"])
    history = ember.Trainer(max_epochs=1, seed=0, enable_progress_bar=False).fit(
        model, _classification_batches(), _classification_batches()
    )
    assert "val_accuracy" in history.history
