"""Dynamic batching: merging along dim 0, splitting back, adaptive sizing, and the metrics."""

from __future__ import annotations

import asyncio
import re
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
import torch

from ember.serve.batching import Batcher, BatchingConfig
from tests.plugins.models import tiny_mlp


class FakeClock:
    """A clock the fake models move forward instead of sleeping: ``Batcher(clock=FakeClock())``."""

    def __init__(self) -> None:
        self.now = 0.0
        self._lock = threading.Lock()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.now += seconds


def _recording_run(calls: list, delay: float = 0.0, clock: FakeClock | None = None):
    def run(inputs: dict) -> dict:
        calls.append({k: v.shape for k, v in inputs.items()})
        if clock is not None:
            clock.advance(delay)  # the model "takes" `delay` seconds
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
            clock = FakeClock()
            batcher = Batcher(_recording_run(calls, 0.004, clock), pool, config, clock=clock)
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
    with pytest.raises(ValueError, match="inline_below_ms=-0.5"):
        BatchingConfig(inline_below_ms=-0.5)
    assert not BatchingConfig(max_batch_size=1).enabled


def test_concurrent_http_requests_are_batched_with_unchanged_results(server):
    rng = np.random.default_rng(1)
    xs = [rng.standard_normal((1 + i % 3, 4)).astype(np.float32) for i in range(24)]

    async def fire() -> list:
        # 24 connections at once: a generous timeout, so a loaded CI machine is not a failure.
        async with httpx.AsyncClient(base_url=server.url, timeout=60.0) as client:
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
        model = tiny_mlp(1)
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


def _thread_recording_run(threads: list, clock: FakeClock, delay: float = 0.0):
    def run(inputs: dict) -> dict:
        threads.append(threading.get_ident())
        clock.advance(delay)
        return {"y": inputs["x"] + 1.0}

    return run


def _submit_sequentially(run, config: BatchingConfig, n: int, clock: FakeClock) -> int:
    """Submits ``n`` requests one after another; returns the event loop's thread id."""

    async def main() -> int:
        with ThreadPoolExecutor(2) as pool:
            batcher = Batcher(run, pool, config, clock=clock)
            for i in range(n):
                out = await batcher.submit({"x": np.full((1, 4), float(i), np.float32)})
                np.testing.assert_array_equal(out["y"], np.full((1, 4), i + 1.0, np.float32))
            await batcher.close()
        return threading.get_ident()

    return asyncio.run(main())


def test_calls_shorter_than_a_thread_hand_off_run_on_the_event_loop():
    threads: list = []
    clock = FakeClock()
    config = BatchingConfig(8, inline_below_ms=5.0)
    loop_thread = _submit_sequentially(
        _thread_recording_run(threads, clock, 0.001), config, 5, clock
    )
    # The first call has no estimate yet and goes to the pool; the next ones are measured as
    # far under the limit and run inline.
    assert threads[0] != loop_thread
    assert threads[1:] == [loop_thread] * 4


def test_slow_calls_and_inline_off_stay_in_the_thread_pool():
    threads: list = []
    clock = FakeClock()
    run = _thread_recording_run(threads, clock, 0.02)
    loop_thread = _submit_sequentially(run, BatchingConfig(8), 4, clock)
    assert loop_thread not in threads  # 20 ms per call: the hand-off is worth it
    threads.clear()
    config = BatchingConfig(8, inline_below_ms=0)
    run = _thread_recording_run(threads, clock, 0.0001)
    loop_thread = _submit_sequentially(run, config, 4, clock)
    assert loop_thread not in threads


def test_one_slow_call_stops_inlining_at_once():
    threads: list = []
    clock = FakeClock()
    delays = iter([0.0001, 0.0001, 0.05, 0.0001, 0.0001])

    def run(inputs: dict) -> dict:
        threads.append(threading.get_ident())
        clock.advance(next(delays))
        return {"y": inputs["x"] + 1.0}

    loop_thread = _submit_sequentially(run, BatchingConfig(8, inline_below_ms=5.0), 5, clock)
    on_loop = [t == loop_thread for t in threads]
    # pool (no estimate), inline, inline (takes 50 ms), then the pool again (estimate moved up).
    assert on_loop == [False, True, True, False, False]


def test_inline_sized_requests_ready_together_merge_into_one_call():
    calls: list = []
    threads: list = []

    def run(inputs: dict) -> dict:
        calls.append(inputs["x"].shape[0])
        threads.append(threading.get_ident())
        return {"y": inputs["x"] * 3.0}

    async def main() -> list:
        with ThreadPoolExecutor(2) as pool:
            batcher = Batcher(run, pool, BatchingConfig(64, inline_below_ms=5.0))
            await batcher.submit({"x": np.zeros((1, 2), np.float32)})  # measures the model
            xs = [np.full((1, 2), float(i), np.float32) for i in range(10)]
            outs = await asyncio.gather(*(batcher.submit({"x": x}) for x in xs))
            await batcher.close()
            assert threads[1:] == [threading.get_ident()]  # one call, on the event loop
            return list(zip(xs, outs))

    for x, out in asyncio.run(main()):
        np.testing.assert_array_equal(out["y"], x * 3.0)
    assert calls == [1, 10]


def test_long_calls_run_one_at_a_time_and_short_ones_overlap():
    def peak_in_flight(long: bool) -> int:
        state = {"now": 0, "peak": 0, "calls": 0}
        lock, pair, clock = threading.Lock(), threading.Event(), FakeClock()

        def run(inputs: dict) -> dict:
            with lock:
                state["now"] += 1
                state["calls"] += 1
                state["peak"] = max(state["peak"], state["now"])
                first = state["calls"] == 1
                if state["now"] == 2:
                    pair.set()
            clock.advance(0.02 if long else 0.0001)  # what the batcher measures for this call
            if long and state["calls"] == 2:  # were a second slot open, a call would join now
                pair.wait(0.3)
            elif not long and not first:  # a short call: wait (bounded) for a second one
                pair.wait(2.0)
            with lock:
                state["now"] -= 1
            return {"y": inputs["x"]}

        async def main() -> None:
            with ThreadPoolExecutor(4) as pool:
                config = BatchingConfig(2, inline_below_ms=0, max_concurrent_batches=2)
                batcher = Batcher(run, pool, config, clock=clock)
                x = np.zeros((1, 2), np.float32)
                await batcher.submit({"x": x})  # the first call measures the model
                await asyncio.gather(*(batcher.submit({"x": x}) for _ in range(12)))
                await batcher.close()

        asyncio.run(main())
        return state["peak"]

    assert peak_in_flight(long=True) == 1  # 20 ms calls: one at a time, in batches of 2
    assert peak_in_flight(long=False) == 2  # sub-ms calls: two overlap


def test_an_input_the_model_rejects_is_a_400_for_that_request_only():
    class InvalidArgument(
        Exception
    ):  # what ONNX Runtime raises, e.g. for a token id past the vocab
        pass

    def run(inputs: dict) -> dict:
        if (inputs["x"] < 0).any():
            raise InvalidArgument("[ONNXRuntimeError] : 2 : INVALID_ARGUMENT : idx=-1\nmore")
        if (inputs["x"] > 100).any():
            raise RuntimeError("the model broke")
        return {"y": inputs["x"] * 2.0}

    async def main() -> list:
        with ThreadPoolExecutor(2) as pool:
            batcher = Batcher(run, pool, BatchingConfig(8, max_queue_delay_ms=50))
            xs = [np.full((1, 2), v, np.float32) for v in (1.0, -1.0, 2.0)]
            results = await asyncio.gather(
                *(batcher.submit({"x": x}) for x in xs), return_exceptions=True
            )
            broken = await asyncio.gather(
                batcher.submit({"x": np.full((1, 2), 500.0, np.float32)}), return_exceptions=True
            )
            await batcher.close()
            return results + broken

    good, bad, good2, broken = asyncio.run(main())
    np.testing.assert_array_equal(good["y"], np.full((1, 2), 2.0, np.float32))
    np.testing.assert_array_equal(good2["y"], np.full((1, 2), 4.0, np.float32))
    assert bad.status == 400 and "cannot take this input" in str(bad) and "more" not in str(bad)
    assert broken.status == 500 and "the model broke" in str(broken)
