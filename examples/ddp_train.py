"""Train a small digits classifier with DDP, one process per device.

Run it with torchrun (any number of processes; gloo on CPU, NCCL on GPUs):

    torchrun --nproc-per-node 2 examples/ddp_train.py --epochs 3

or let ember start the processes itself:

    python examples/ddp_train.py --devices 2

Every rank trains on its shard of the data; metrics are averaged over ranks, and only rank 0
prints, logs and writes checkpoints (under --root).
"""

from __future__ import annotations

import argparse
import logging

import ember
from ember import layers

log = logging.getLogger("ddp_train")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--devices", default="auto", help="processes per node, or 'auto'")
    parser.add_argument("--strategy", default="ddp", choices=["ddp", "fsdp"])
    parser.add_argument("--batch-size", type=int, default=64, help="per process")
    parser.add_argument("--root", default="runs", help="where runs and checkpoints go")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    devices = args.devices if args.devices == "auto" else int(args.devices)

    (x, y), (x_val, y_val) = ember.load_digits(images=False)
    model = ember.Sequential(
        [layers.Input((64,)), layers.Dense(128, activation="relu"), layers.Dense(10)]
    )
    model.compile("adam", "cross_entropy", ["accuracy"], lr=1e-3)
    history = model.fit(
        x,
        y,
        epochs=args.epochs,
        batch_size=args.batch_size,
        validation_data=(x_val, y_val),
        strategy=args.strategy,
        devices=devices,
        accelerator="auto",
        seed=0,
        default_root_dir=args.root,
        name="ddp_digits",
        verbose=False,
    )
    trainer = model.trainer
    if trainer.is_global_zero:  # every rank holds the same reduced metrics; one reports them
        log.info("world size %d, epochs %d", trainer.strategy.world_size, len(history.epochs))
        log.info("val_accuracy=%.4f", trainer.logged_metrics["val_accuracy"])
        log.info("checkpoints: %s", trainer.checkpoint_callback.dirpath)


if __name__ == "__main__":
    main()
