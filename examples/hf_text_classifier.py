"""Train, export and serve a Hugging Face model: a tiny BERT learns whether a token appears.

The model is built offline from a config (random weights, no download), trained a few steps on
synthetic token ids with a plain loss on ``outputs.logits``, saved as an ember package with two
int64 inputs (``input_ids``, ``attention_mask``) and a dynamic sequence axis, exported to ONNX and
int8 (each checked on the stored sample and on the same rows at another length), and finally run
by ONNX Runtime on a batch longer than anything it was traced with, as ``ember serve`` runs it.

Run:
    python examples/hf_text_classifier.py --steps 60 --out bert_pkg
    ember serve bert_pkg            # KServe v2 / TF Serving / TorchServe, two INT64 inputs
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np
import torch

import ember
from ember import package

log = logging.getLogger("examples.hf_text_classifier")

VOCAB, MARK = 64, 7  # label 1: token MARK appears among the unpadded tokens


def make_data(n: int, length: int = 16, seed: int = 0) -> dict[str, torch.Tensor]:
    """``input_ids`` and ``attention_mask`` (int64, right-padded) and ``labels`` ``(n,)``."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(8, VOCAB, (n, length), generator=g)
    lengths = torch.randint(length // 2, length + 1, (n,), generator=g)
    mask = (torch.arange(length)[None, :] < lengths[:, None]).long()
    labels = torch.randint(0, 2, (n,), generator=g)
    where = (torch.rand(n, generator=g) * (lengths - 1)).long()
    ids[labels == 1, where[labels == 1]] = MARK
    ids = ids * mask  # 0 = padding
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def build_model() -> torch.nn.Module:
    """A two-layer BERT classifier from a tiny config (no download)."""
    from transformers import BertConfig, BertForSequenceClassification

    config = BertConfig(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=64, num_labels=2,
    )  # fmt: skip
    return BertForSequenceClassification(config)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--out", type=Path, default=Path("bert_pkg"))
    args = p.parse_args(argv)
    torch.manual_seed(0)
    model = build_model()
    data = make_data(512)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(args.steps):  # the loss is on outputs.logits: a plain custom loss
        rows = torch.randint(0, 512, (32,))
        out = model(input_ids=data["input_ids"][rows], attention_mask=data["attention_mask"][rows])
        loss = torch.nn.functional.cross_entropy(out.logits, data["labels"][rows])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    test = make_data(128, seed=1)
    with torch.no_grad():
        logits = model(input_ids=test["input_ids"], attention_mask=test["attention_mask"]).logits
    accuracy = float((logits.argmax(1) == test["labels"]).float().mean())
    log.info("trained %d steps: loss %.3f, test accuracy %.3f", args.steps, float(loss), accuracy)

    inputs = {k: test[k][:32] for k in ("input_ids", "attention_mask")}
    package.save(
        model, args.out, example_input=inputs, task="classification", labels=["absent", "present"],
        dynamic_shapes={"input_ids": {1: "sequence"}, "attention_mask": {1: "sequence"}},
        metrics={"test_accuracy": accuracy},
    )  # fmt: skip
    figures = ember.export.export(args.out, ["onnx", "int8"], min_top1=0.9)

    # What `ember serve` does with the package: ONNX Runtime, two INT64 inputs, any length <= 64.
    from ember.export.onnx import onnx_runner

    longer = make_data(4, length=40, seed=2)
    feed = {k: longer[k].numpy() for k in ("input_ids", "attention_mask")}
    (served,) = onnx_runner(args.out / "model.onnx")(feed)
    with torch.no_grad():
        eager = model(**{k: longer[k] for k in feed}).logits.numpy()
    return {
        "accuracy": accuracy,
        "onnx_max_abs_diff": figures["onnx"]["max_abs_diff"],
        "int8_top1": figures["int8"].get("top1_agreement"),
        "served_max_abs_diff": float(np.max(np.abs(served - eager))),
    }


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    print(main())
