"""Export time and parity per architecture: BERT, GPT-2, Embedding+LSTM and a two-output model.

Run: ``python benchmarks/text_export.py --targets onnx,int8,web`` (about 2 minutes on 2 CPU
cores; add ``mobile``/``cpp`` for ExecuTorch and AOTInductor, several minutes each). Models are
built offline from tiny configs (random weights). For each model it prints the save time, then per
target its export time, the time's ratio to the model's ONNX export measured in the same run,
``max_abs_diff`` / ``max_rel_diff`` (worst over the stored sample and, where the sequence axis is
dynamic, the same rows at another length) and the shapes checked.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from ember import export, package

SEQ = {"input_ids": {1: "sequence"}, "attention_mask": {1: "sequence"}}


class Tagger(nn.Module):
    """Embedding + LSTM over int64 ids (its sequence axis stays static: torch.export unrolls it)."""

    def __init__(self) -> None:
        super().__init__()
        self.embed, self.lstm, self.head = (
            nn.Embedding(100, 32),
            nn.LSTM(32, 32, batch_first=True),
            nn.Linear(32, 3),
        )

    def forward(self, ids):
        hidden, _ = self.lstm(self.embed(ids))
        return self.head(hidden[:, -1])


class TwoHeads(nn.Module):
    """ids + mask in, (logits, score) out."""

    def __init__(self) -> None:
        super().__init__()
        self.embed, self.cls, self.reg = nn.Embedding(100, 32), nn.Linear(32, 3), nn.Linear(32, 1)

    def forward(self, input_ids, attention_mask):
        mask = attention_mask.unsqueeze(-1).float()
        pooled = (self.embed(input_ids) * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        return self.cls(pooled), self.reg(pooled)


def models() -> dict:
    from transformers import BertConfig, BertForSequenceClassification, GPT2Config, GPT2LMHeadModel

    bert = BertForSequenceClassification(BertConfig(
        vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=64, num_labels=3))  # fmt: skip
    gpt2_config = GPT2Config(vocab_size=100, n_embd=32, n_layer=2, n_head=2, n_positions=64)
    ids = torch.randint(0, 100, (8, 16))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    return {
        "bert (ids+mask, seq dynamic)": (bert, batch, SEQ, "classification"),
        "gpt2 (ids+mask, seq dynamic)": (GPT2LMHeadModel(gpt2_config), batch, SEQ, None),
        "embedding+lstm (ids, seq static)": (Tagger(), ids, None, "classification"),
        "two outputs (ids+mask, seq dynamic)": (TwoHeads(), batch, SEQ, "classification"),
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--targets", default="onnx,int8,web", help="comma-separated; mobile:static for --static"
    )
    p.add_argument("--models", default="", help="comma-separated name prefixes, e.g. gpt2")
    args = p.parse_args(argv)
    targets = [t for t in args.targets.split(",") if t]
    wanted = tuple(m for m in args.models.split(",") if m)
    torch.manual_seed(0)
    print(
        f"{'model':<38} {'target':<7} {'seconds':>8} {'x onnx':>7} {'max_abs':>9} {'max_rel':>9}  checked"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for name, (model, example, dynamic, task) in models().items():
            if wanted and not name.startswith(wanted):
                continue
            path = Path(tmp) / name.split()[0]
            start = time.perf_counter()
            package.save(
                model.eval(), path, example_input=example, dynamic_shapes=dynamic, task=task
            )
            save_seconds = time.perf_counter() - start
            print(f"{name:<38} {'save':<7} {save_seconds:>8.1f}")
            onnx_seconds = None
            for target in targets:
                start = time.perf_counter()
                kind, _, mode = target.partition(":")  # "mobile:static"
                try:
                    info = export.export(path, [kind], min_top1=0.5, static=mode == "static")[kind]
                except Exception as exc:  # report and go on: one failing target is a result
                    print(f"{'':<38} {target:<7} failed: {str(exc)[:150]}")
                    continue
                seconds = time.perf_counter() - start
                onnx_seconds = seconds if target == "onnx" else onnx_seconds
                ratio = f"{seconds / onnx_seconds:7.2f}" if onnx_seconds else f"{'':>7}"
                checked = {k: v[next(iter(v))] for k, v in info.get("checked_shapes", {}).items()}
                print(f"{'':<38} {target:<7} {seconds:>8.1f} {ratio} {info['max_abs_diff']:>9.2g} "
                      f"{info['max_rel_diff']:>9.2g}  {checked}")  # fmt: skip
            sys.stdout.flush()


if __name__ == "__main__":
    logging.basicConfig(level=logging.ERROR)
    main()
