"""ember's torch-only metrics give torchmetrics' values, batch by batch accumulated."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
import torchmetrics as tm

from ember import metrics

N, C = 300, 4


def _batches(preds: torch.Tensor, target: torch.Tensor, size: int = 64):
    for i in range(0, len(target), size):
        yield preds[i : i + size], target[i : i + size]


def _both(ours, theirs, preds, target) -> tuple[float, float]:
    for p, t in _batches(preds, target):
        ours.update(p, t)
        theirs.update(p, t)
    return float(ours.compute()), float(theirs.compute())


@pytest.fixture
def multiclass():
    g = torch.Generator().manual_seed(0)
    target = torch.randint(0, C, (N,), generator=g)
    # Skewed, partly right logits: classes differ in precision and recall, so macro != micro.
    logits = torch.randn(N, C, generator=g) + 1.5 * torch.nn.functional.one_hot(target, C)
    logits[:, 0] += 0.8
    return logits, target


@pytest.fixture
def binary():
    g = torch.Generator().manual_seed(1)
    target = torch.randint(0, 2, (N,), generator=g)
    logits = torch.randn(N, generator=g) + (target * 2 - 1) * 0.7
    return logits, target


@pytest.mark.parametrize(
    "name, reference",
    [
        ("accuracy", lambda: tm.Accuracy(task="multiclass", num_classes=C)),
        ("top2_accuracy", lambda: tm.Accuracy(task="multiclass", num_classes=C, top_k=2)),
        ("f1", lambda: tm.F1Score(task="multiclass", num_classes=C, average="macro")),
        ("f1_micro", lambda: tm.F1Score(task="multiclass", num_classes=C, average="micro")),
        ("f1_weighted", lambda: tm.F1Score(task="multiclass", num_classes=C, average="weighted")),
        ("precision", lambda: tm.Precision(task="multiclass", num_classes=C, average="macro")),
        (
            "precision_weighted",
            lambda: tm.Precision("multiclass", num_classes=C, average="weighted"),
        ),
        ("recall", lambda: tm.Recall(task="multiclass", num_classes=C, average="macro")),
        ("recall_micro", lambda: tm.Recall(task="multiclass", num_classes=C, average="micro")),
        ("auroc", lambda: tm.AUROC(task="multiclass", num_classes=C, average="macro")),
        ("auroc_weighted", lambda: tm.AUROC(task="multiclass", num_classes=C, average="weighted")),
    ],
)
def test_multiclass_metrics_match_torchmetrics(multiclass, name, reference):
    ours, theirs = _both(metrics.get(name, num_classes=C), reference(), *multiclass)
    assert ours == pytest.approx(theirs, abs=1e-6)


def test_macro_f1_differs_from_accuracy(multiclass):
    # The old default (micro) made f1, precision and recall all equal accuracy.
    values = {
        n: _both(metrics.get(n, num_classes=C), metrics.get(n, num_classes=C), *multiclass)[0]
        for n in ("accuracy", "f1", "precision", "recall")
    }
    assert len({round(v, 6) for v in values.values()}) == 4
    f1_micro = metrics.get("f1_micro", num_classes=C)
    assert _both(f1_micro, metrics.get("accuracy", num_classes=C), *multiclass)[0] == pytest.approx(
        values["accuracy"]
    )


@pytest.mark.parametrize("from_logits", [True, False])
@pytest.mark.parametrize(
    "name, reference",
    [
        ("accuracy", tm.classification.BinaryAccuracy),
        ("f1", tm.classification.BinaryF1Score),
        ("precision", tm.classification.BinaryPrecision),
        ("recall", tm.classification.BinaryRecall),
        ("auroc", tm.classification.BinaryAUROC),
    ],
)
def test_binary_metrics_match_torchmetrics_on_logits_and_probabilities(
    binary, name, reference, from_logits
):
    logits, target = binary
    preds = logits if from_logits else logits.sigmoid()
    ours = metrics.get(name, num_classes=1, from_logits=from_logits)
    a, b = _both(ours, reference(), preds.unsqueeze(1), target.unsqueeze(1))
    assert a == pytest.approx(b, abs=1e-6)


def test_binary_logits_inside_0_1_follow_from_logits():
    # Logits 0.3 mean p = 0.57 (positive); as probabilities 0.3 < 0.5 (negative).
    preds, target = torch.full((4, 1), 0.3), torch.ones(4, 1)
    as_logits = metrics.get("accuracy", num_classes=1, from_logits=True)
    as_probs = metrics.get("accuracy", num_classes=1, from_logits=False)
    as_logits.update(preds, target)
    as_probs.update(preds, target)
    assert float(as_logits.compute()) == 1.0 and float(as_probs.compute()) == 0.0


@pytest.mark.parametrize(
    "name, reference",
    [
        ("mae", tm.MeanAbsoluteError),
        ("mse", tm.MeanSquaredError),
        ("rmse", lambda: tm.MeanSquaredError(squared=False)),
        ("r2", tm.R2Score),
    ],
)
def test_regression_metrics_match_torchmetrics(name, reference):
    g = torch.Generator().manual_seed(2)
    target = torch.randn(N, generator=g)
    preds = target + 0.3 * torch.randn(N, generator=g)
    ours, theirs = _both(metrics.get(name), reference(), preds, target)
    assert ours == pytest.approx(theirs, rel=1e-5)


def test_r2_of_several_outputs_is_their_uniform_average():
    g = torch.Generator().manual_seed(3)
    target = torch.randn(N, 3, generator=g)
    preds = target + torch.tensor([0.1, 0.5, 1.0]) * torch.randn(N, 3, generator=g)
    ours, theirs = _both(
        metrics.get("r2"), tm.R2Score(multioutput="uniform_average"), preds, target
    )
    assert ours == pytest.approx(theirs, rel=1e-5)


def test_token_metrics_skip_ignored_targets_like_torchmetrics():
    g = torch.Generator().manual_seed(4)
    logits = torch.randn(4, 7, 11, generator=g)  # (B, T, V)
    target = torch.randint(0, 11, (4, 7), generator=g)
    target[:, 5:] = -100  # padding
    ppl = metrics.get("perplexity")
    ppl.update(logits, target)
    ref = tm.text.Perplexity(ignore_index=-100)
    ref.update(logits, target)
    assert float(ppl.compute()) == pytest.approx(float(ref.compute()), rel=1e-5)
    acc = metrics.get("token_accuracy", num_classes=11)
    acc.update(logits, target)
    ref_acc = tm.Accuracy(task="multiclass", num_classes=11, ignore_index=-100)
    ref_acc.update(logits.permute(0, 2, 1), target)  # torchmetrics wants (B, C, T)
    assert float(acc.compute()) == pytest.approx(float(ref_acc.compute()), abs=1e-6)


def test_one_hot_targets_count_as_their_class(multiclass):
    logits, target = multiclass
    one_hot = torch.nn.functional.one_hot(target, C).float()
    for name in ("accuracy", "f1_weighted"):
        a, b = metrics.get(name, num_classes=C), metrics.get(name, num_classes=C)
        a.update(logits, one_hot)
        b.update(logits, target)
        assert float(a.compute()) == float(b.compute())


def test_reset_and_update_count():
    acc = metrics.get("accuracy", num_classes=3)
    acc.update(torch.eye(3), torch.tensor([0, 1, 2]))
    assert acc.update_count == 1 and float(acc.compute()) == 1.0
    acc.reset()
    acc.update(torch.eye(3), torch.tensor([1, 1, 1]))
    assert acc.update_count == 1 and float(acc.compute()) == pytest.approx(1 / 3)


def test_a_torchmetrics_object_is_used_as_given():
    metric = tm.Accuracy(task="multiclass", num_classes=3)
    assert metrics.get(metric) is metric


@pytest.mark.parametrize(
    "args, error, match",
    [
        (("f1_average",), ValueError, "Unknown metric 'f1_average'. Choose one of: accuracy"),
        (("f1",), ValueError, "needs the number of classes"),
        ((42,), TypeError, "update\\(\\), compute\\(\\) and reset\\(\\).*Received: 42"),
    ],
)
def test_bad_metrics_are_refused(args, error, match):
    with pytest.raises(error, match=match):
        metrics.get(*args)


def test_named_metrics_and_a_fit_import_no_torchmetrics():
    code = (
        "import sys, torch, ember\n"
        "m = ember.metrics.get('accuracy', num_classes=10)\n"
        "net = ember.compile(torch.nn.Linear(4, 3), 'adam', 'cross_entropy',"
        " ['accuracy', 'f1', 'auroc'])\n"
        "x, y = torch.randn(64, 4), torch.randint(0, 3, (64,))\n"
        "loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=16)\n"
        "ember.Trainer(max_epochs=1, logger=False, enable_progress_bar=False,"
        " enable_checkpointing=False, enable_report=False).fit(net, loader, loader)\n"
        "print('torchmetrics' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "False"


def test_sums_are_float64_except_on_mps_and_compute_reads_them_on_the_cpu():
    from ember.metrics.base import accumulator_dtype

    assert accumulator_dtype("cpu") == torch.float64
    assert accumulator_dtype("mps") == torch.float32
    mae = metrics.get("mae").to("meta")  # any device: compute() copies the sums to the CPU first
    assert mae.total.device.type == "meta"
