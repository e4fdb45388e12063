"""Losses: from_logits as in Keras, inferred from the model's last layer; per-token cross-entropy."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import ember
from ember import layers, losses


def test_binary_cross_entropy_on_probabilities_and_logits_agree():
    logits, target = torch.tensor([[-2.0], [0.5], [3.0]]), torch.tensor([0, 1, 1])
    on_logits = losses.BinaryCrossEntropy(from_logits=True)(logits, target)
    on_probs = losses.BinaryCrossEntropy(from_logits=False)(logits.sigmoid(), target)
    assert float(on_probs) == pytest.approx(float(on_logits), rel=1e-5)


def test_binary_cross_entropy_on_probabilities_runs_under_autocast():
    p = torch.tensor([[0.2], [0.9]], requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = losses.BinaryCrossEntropy(from_logits=False)(p, torch.tensor([0, 1]))
    loss.backward()
    assert p.grad is not None and loss.dtype == torch.float32


def test_cross_entropy_on_probabilities_and_logits_agree():
    logits, target = torch.randn(5, 4), torch.tensor([0, 3, 1, 2, 0])
    ref = F.cross_entropy(logits, target)
    assert float(losses.get("cross_entropy")(logits, target)) == pytest.approx(float(ref))
    on_probs = losses.CrossEntropy(from_logits=False)(logits.softmax(-1), target)
    assert float(on_probs) == pytest.approx(float(ref), rel=1e-5)
    one_hot = F.one_hot(target, 4).float()
    soft = losses.CrossEntropy(from_logits=False)(logits.softmax(-1), one_hot)
    assert float(soft) == pytest.approx(float(ref), rel=1e-5)


def test_token_cross_entropy_ignores_padding_and_causal_lm_shifts():
    logits, target = torch.randn(2, 5, 7), torch.randint(0, 7, (2, 5))
    target[1, 3:] = -100
    keep = target != -100
    ref = F.cross_entropy(logits[keep], target[keep])
    assert float(losses.get("token_cross_entropy")(logits, target)) == pytest.approx(float(ref))
    shifted = losses.get("causal_lm")(logits, target)
    t = target[:, 1:]
    ref = F.cross_entropy(logits[:, :-1][t != -100], t[t != -100])
    assert float(shifted) == pytest.approx(float(ref))


def test_channels_first_targets_still_go_to_f_cross_entropy():
    logits, target = torch.randn(2, 3, 4, 4), torch.randint(0, 3, (2, 4, 4))
    assert float(losses.get("cross_entropy")(logits, target)) == pytest.approx(
        float(F.cross_entropy(logits, target))
    )


@pytest.mark.parametrize(
    "model, from_logits, reason",
    [
        (
            ember.Sequential([layers.Dense(4), layers.Dense(1, activation="sigmoid")]),
            False,
            "Sigmoid",
        ),
        (ember.Sequential([layers.Dense(3, activation="softmax")]), False, "Softmax"),
        (ember.Sequential([layers.Dense(3), layers.Activation("softmax")]), False, "Softmax"),
        (
            ember.Sequential([layers.Dense(3, activation="relu"), layers.Dense(3)]),
            True,
            "LazyLinear",
        ),
        (
            torch.nn.Sequential(torch.nn.Linear(2, 1), torch.nn.Sigmoid(), torch.nn.Dropout()),
            False,
            "",
        ),
        (torch.nn.Linear(2, 2), True, "Linear"),
    ],
)
def test_infer_from_logits_reads_the_last_layer(model, from_logits, reason):
    got, why = losses.infer_from_logits(model)
    assert got is from_logits and reason in why


def test_unknown_loss_lists_the_names():
    with pytest.raises(
        ValueError, match="Unknown loss 'bce'. Choose one of: cross_entropy.*causal_lm"
    ):
        losses.get("bce")


def test_cross_entropy_on_probabilities_rescales_rows_as_keras_does():
    scores, target = torch.tensor([[0.2, 0.6], [0.9, 0.3]]), torch.tensor([1, 0])
    loss = losses.CrossEntropy(from_logits=False)
    assert float(loss(scores, target)) == pytest.approx(
        float(loss(scores / scores.sum(1, keepdim=True), target))
    )


@pytest.mark.parametrize(
    "target, match",
    [
        (torch.tensor([0, 8]), "A target label is 8, but the model has 3 outputs.*Dense\\(9\\)"),
        (torch.tensor([0.0, 1.0]), "integer class labels, but the targets are torch.float32"),
    ],
)
def test_cross_entropy_explains_bad_targets(target, match):
    with pytest.raises(ValueError, match=match):
        losses.get("cross_entropy")(torch.randn(2, 3), target)


def test_a_label_beyond_the_outputs_is_explained_in_fit():
    model = ember.Sequential([layers.Input((4,)), layers.Dense(3)])
    model.compile("adam", "cross_entropy")
    x, y = torch.randn(8, 4).numpy(), torch.full((8,), 8).numpy()
    with pytest.raises(ValueError, match="labels must be 0..2"):
        model.fit(
            x, y, verbose=False, logger=False, enable_checkpointing=False, enable_report=False
        )
