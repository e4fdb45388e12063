"""Under torch.distributed, compute() reports the metric of every rank's data (gloo, 2 processes)."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from ember import metrics
from ember.train.launch import free_port

NAMES = ("accuracy", "f1", "f1_weighted", "auroc", "mae", "r2", "perplexity")


def _data(rank: int | None):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(40, 3, generator=g)
    target = torch.randint(0, 3, (40,), generator=g)
    if rank is None:
        return logits, target
    part = slice(0, 20) if rank == 0 else slice(21, 40)  # sizes differ; sample 20 nowhere
    return logits[part], target[part]


def _update(metric, name, logits, target):
    if name in ("mae", "r2"):
        metric.update(logits[:, 0], target.float())
    else:
        metric.update(logits, target)


def _worker(rank: int, port: int, queue) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        out = {}
        for name in NAMES:
            metric = metrics.get(name, num_classes=3)
            _update(metric, name, *_data(rank))
            local = {
                k: v.clone() if isinstance(v, torch.Tensor) else list(v)
                for k, v in ((k, getattr(metric, k)) for k in metric._defaults)
            }
            out[name] = float(metric.compute())
            # compute() synced a copy: this rank's own state is unchanged.
            for k, v in local.items():
                now = getattr(metric, k)
                assert torch.equal(v, now) if isinstance(v, torch.Tensor) else len(v) == len(now)
        queue.put((rank, out))
    finally:
        dist.destroy_process_group()


@pytest.mark.e2e
def test_compute_reduces_the_states_of_every_rank():
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    port = free_port()
    procs = [ctx.Process(target=_worker, args=(r, port, queue)) for r in range(2)]
    for p in procs:
        p.start()
    results = dict(queue.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    # Rank 0 has samples 0-19, rank 1 samples 21-40: together all but sample 20.
    logits, target = _data(None)
    keep = torch.arange(40) != 20
    for name in NAMES:
        whole = metrics.get(name, num_classes=3)
        _update(whole, name, logits[keep], target[keep])
        expected = float(whole.compute())
        assert results[0][name] == pytest.approx(expected, rel=1e-6), name
        assert results[1][name] == pytest.approx(expected, rel=1e-6), name
