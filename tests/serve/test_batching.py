"""Dynamic batching: merging along dim 0, splitting back, adaptive sizing, and the metrics."""

from __future__ import annotations

import asyncio
import re
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
import torch

from ember.serve.batching import Batcher, BatchingConfig
from tests.serve.conftest import mlp


def _recording_run(calls: list, delay: float = 0.0):
    def run(inputs: dict) -> dict:
        calls.append({k: v.shape for k, v in inputs.items()})
        time.sleep(delay)
        return {"y": inputs["x"] * 2.0, "total": inputs["x"].sum(axis=1)}

    return run


def test_requests_of_different_sizes_merge_and_split_back():
    calls: list = []

    async def main() -> list:
        with ThreadPoolExecutor(2) as pool:
            batcher = Batcher(
                _recording_run(calls), pool, BatchingConfig(16, max_queue_delay_ms=50)
            )
            xs = [np.full((n, 3), float(i), np.float32) for i, n in enumerate([1, 2, 3, 1, 4])]
            outs = await asyncio.gather(*(batcher.submit({"x": x}) for x in xs))
            await batcher.close()
            return list(zip(xs, outs))

    for x, out in asyncio.run(main()):
        np.testing.assert_array_equal(out["y"], x * 2.0)
        np.testing.assert_array_equal(out["total"], x.sum(axis=1))
    assert calls == [{"x": (11, 3)}]


def test_batches_respect_the_limit_and_trailing_shapes():
    calls: list = []

    async def main() -> None:
        with ThreadPoolExecutor(2) as pool:
            batcher = Batcher(_recording_run(calls), pool, BatchingConfig(4, max_queue_delay_ms=30))
            xs = [np.ones((2, 3), np.float32)] * 3 + [np.ones((1, 5), np.float32)]
            outs = await asyncio.gather(*(batcher.submit({"x": x}) for x in xs))
            assert [o["y"].shape for o in outs] == [(2, 3), (2, 3), (2, 3), (1, 5)]
            await batcher.close()

    asyncio.run(main())
    assert sorted(c["x"][0] for c in calls) == [1, 2, 4]  # 4-row limit; the (1, 5) alone


def test_adaptive_mode_shrinks_batches_over_the_latency_target():
    calls: list = []

    async def main() -> Batcher:
        with ThreadPoolExecutor(1) as pool:
            config = BatchingConfig(64, adaptive=True, target_p99_ms=1.0)
            batcher = Batcher(_recording_run(calls, delay=0.004), pool, config)
            for _ in range(30):
                await asyncio.gather(
                    *(batcher.submit({"x": np.ones((1, 3), np.float32)}) for _ in range(4))
                )
            await batcher.close()
            return batcher

    batcher = asyncio.run(main())
    assert batcher.limit < 64


def test_failing_model_fails_every_request_of_its_batch_only():
    def run(inputs: dict) -> dict:
        raise RuntimeError("boom")

    async def main() -> None:
        with ThreadPoolExecutor(1) as pool:
            batcher = Batcher(run, pool, BatchingConfig(8, max_queue_delay_ms=10))
            results = await asyncio.gather(
                *(batcher.submit({"x": np.ones((1, 2), np.float32)}) for _ in range(3)),
                return_exceptions=True,
            )
            assert all("Inference failed: boom" in str(r) for r in results)
            await batcher.close()

    asyncio.run(main())


def test_config_validation_messages():
    with pytest.raises(ValueError, match="max_batch_size=0"):
        BatchingConfig(max_batch_size=0)
    with pytest.raises(ValueError, match="max_queue_delay_ms=-1"):
        BatchingConfig(max_queue_delay_ms=-1)
    assert not BatchingConfig(max_batch_size=1).enabled


def test_concurrent_http_requests_are_batched_with_unchanged_results(server):
    rng = np.random.default_rng(1)
    xs = [rng.standard_normal((1 + i % 3, 4)).astype(np.float32) for i in range(24)]

    async def fire() -> list:
        async with httpx.AsyncClient(base_url=server.url) as client:
            bodies = [
                {
                    "inputs": [
                        {
                            "name": "input",
                            "shape": list(x.shape),
                            "datatype": "FP32",
                            "data": x.ravel().tolist(),
                        }
                    ]
                }
                for x in xs
            ]
            return await asyncio.gather(
                *(client.post("/v2/models/mlp/infer", json=b) for b in bodies)
            )

    responses = asyncio.run(fire())
    with torch.no_grad():
        model = mlp(1)
        for x, r in zip(xs, responses):
            out = r.json()["outputs"][0]
            assert out["shape"] == [x.shape[0], 3]
            np.testing.assert_allclose(
                np.reshape(out["data"], out["shape"]), model(torch.from_numpy(x)).numpy(), atol=1e-5
            )
    text = httpx.get(server.url + "/metrics").text
    count = float(
        re.search(r'ember_batch_size_count\{model="mlp",version="2"\} (\S+)', text).group(1)
    )
    rows = float(re.search(r'ember_batch_size_sum\{model="mlp",version="2"\} (\S+)', text).group(1))
    assert rows == sum(x.shape[0] for x in xs)
    assert count < len(xs)  # fewer model calls than requests: they were batched
