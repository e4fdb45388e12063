"""Dynamic batching: concurrent requests for one model version merge along dim 0 and split back.

One queue and one worker task per model version. The worker takes what is queued (waiting at most
``max_queue_delay_ms`` for more), concatenates each input along dimension 0, runs the model once in
a thread (ONNX Runtime releases the GIL) and hands every request its own rows of each output.
A call predicted (from the model's measured time per input byte) to be shorter than the thread
hand-off itself (about 0.1 ms) runs on the event loop instead, after one loop iteration so that
the requests already parsed by then join its batch (no added delay, no thread hop). In adaptive
mode the batch size limit follows measured latency to keep p99 under a target.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass

import numpy as np

from ember.serve.errors import ServeError

__all__ = ["BatchingConfig", "Batcher"]

logger = logging.getLogger(__name__)

# Model calls longer than this run one at a time (see BatchingConfig.max_concurrent_batches).
_OVERLAP_BELOW_S = 0.001

RunFn = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]
# observe(batch_rows, queue_seconds_per_request, compute_seconds)
ObserveFn = Callable[[int, list[float], float], None]


@dataclass
class BatchingConfig:
    """Dynamic batching settings shared by every model of a repository.

    Args:
        max_batch_size: most rows (sum of the requests' dim 0) in one model call; 1 turns
            batching off.
        max_queue_delay_ms: how long the first request of a batch may wait for more to arrive.
            0 takes only what is already queued (requests still pile up while a batch computes).
        adaptive: size batches from measured latency to keep p99 under ``target_p99_ms``.
        target_p99_ms: the latency target of adaptive mode.
        max_concurrent_batches: model calls in flight at once per version. More than one hides
            the thread hand-off (the GIL) of each call; the next batch forms meanwhile. Calls
            measured over 1 ms run one at a time whatever this says: they keep the cores busy
            already, and overlapping them would split both the cores and the batches (requests
            returning one by one start small batches beside a large one: an unfair p99).
        inline_below_ms: a model call predicted to take less than this runs on the event loop
            thread, not in the thread pool: handing it to a thread and back costs more (about
            0.1 ms) than such a call. The prediction is the measured time per input byte of
            earlier calls (a slow call stops inlining at once). 0 always uses the thread pool.

    Example:
        >>> BatchingConfig(max_batch_size=64, max_queue_delay_ms=2.0).enabled
        True
    """

    max_batch_size: int = 32
    max_queue_delay_ms: float = 0.0
    adaptive: bool = False
    target_p99_ms: float = 50.0
    max_concurrent_batches: int = 2
    inline_below_ms: float = 0.2

    def __post_init__(self) -> None:
        if not isinstance(self.max_batch_size, int) or self.max_batch_size < 1:
            raise ValueError(
                "Received an invalid value for `max_batch_size`, expected an integer >= 1. "
                f"Received: max_batch_size={self.max_batch_size!r}"
            )
        if self.max_queue_delay_ms < 0:
            raise ValueError(
                "Received an invalid value for `max_queue_delay_ms`, expected >= 0. "
                f"Received: max_queue_delay_ms={self.max_queue_delay_ms!r}"
            )
        if not isinstance(self.max_concurrent_batches, int) or self.max_concurrent_batches < 1:
            raise ValueError(
                "Received an invalid value for `max_concurrent_batches`, expected an integer >= 1. "
                f"Received: max_concurrent_batches={self.max_concurrent_batches!r}"
            )
        if not isinstance(self.inline_below_ms, (int, float)) or self.inline_below_ms < 0:
            raise ValueError(
                "Received an invalid value for `inline_below_ms`, expected a number >= 0. "
                f"Received: inline_below_ms={self.inline_below_ms!r}"
            )
        if self.target_p99_ms <= 0:
            raise ValueError(
                "Received an invalid value for `target_p99_ms`, expected > 0. "
                f"Received: target_p99_ms={self.target_p99_ms!r}"
            )

    @property
    def enabled(self) -> bool:
        """Whether requests are merged at all."""
        return self.max_batch_size > 1


class _Request:
    __slots__ = ("inputs", "rows", "key", "future", "enqueued")

    def __init__(
        self, inputs: dict[str, np.ndarray], future: asyncio.Future, enqueued: float
    ) -> None:
        self.inputs = inputs
        first = next(iter(inputs.values()))
        self.rows = first.shape[0] if first.ndim else 1
        # Requests merge only when every input agrees on dtype and the dims after the first.
        self.key = tuple((n, a.dtype.str, a.shape[1:]) for n, a in inputs.items())
        self.future = future
        self.enqueued = enqueued


class Batcher:
    """The batching queue of one model version.

    Args:
        run: the model call, ``dict[str, ndarray] -> dict[str, ndarray]`` (blocking; runs in
            ``executor``).
        executor: the thread pool that runs ``run``.
        config: batching settings.
        observe: called after each batch with (rows, queue seconds of each request,
            compute seconds).
        clock: seconds as a float (``time.perf_counter``); the queue delay, the model-time
            estimates that choose inline calls and the adaptive limit read it. Tests pass a fake.

    Example:
        >>> batcher = Batcher(run, pool, BatchingConfig(max_batch_size=8))  # doctest: +SKIP
        >>> outputs = await batcher.submit({"input": x})  # doctest: +SKIP
    """

    def __init__(
        self,
        run: RunFn,
        executor: Executor,
        config: BatchingConfig,
        observe: ObserveFn | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self._run = run
        self._clock = clock
        self._executor = executor
        self.config = config
        self._observe = observe
        self._queue: deque[_Request] = deque()
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._latencies: deque[float] = deque(maxlen=200)
        self.limit = config.max_batch_size  # current batch size limit (moves in adaptive mode)
        self._batches: set[asyncio.Task] = set()
        self._running = 0  # model calls in flight (at most self._slots)
        self._slots = config.max_concurrent_batches
        self._per_byte: float | None = None  # model seconds per input byte (fast up, slow down)
        self._inline_s = config.inline_below_ms / 1000.0

    async def submit(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Queues one request and returns its outputs once its batch has run."""
        loop = asyncio.get_running_loop()
        if self._task is None:
            self._wakeup = asyncio.Event()
            self._task = loop.create_task(self._loop())
        idle = self._running < self._slots and not self._queue
        if idle and self.config.max_queue_delay_ms == 0:
            if not self._fits_inline(inputs):
                return await self._run_now(loop, inputs)  # idle: no hand-off to the worker
            # Inline-sized: the requests already ready on the loop join it before it runs.
            future = loop.create_future()
            self._queue.append(_Request(inputs, future, self._clock()))
            loop.call_soon(self._flush, loop)
            return await future
        future = loop.create_future()
        self._queue.append(_Request(inputs, future, self._clock()))
        self._wakeup.set()
        return await future

    def _fits_inline(self, inputs: dict[str, np.ndarray]) -> bool:
        size = sum(a.nbytes for a in inputs.values()) or 1
        return self._per_byte is not None and self._per_byte * size < self._inline_s

    def _flush(self, loop: asyncio.AbstractEventLoop) -> None:
        """Runs what queued up during one loop iteration as one batch (unless the worker did)."""
        if not self._queue or self._running >= self._slots:
            return
        batch = self._take(self._queue[0].key)
        if batch:
            self._running += 1
            task = loop.create_task(self._execute(loop, batch))
            self._batches.add(task)
            task.add_done_callback(self._batches.discard)

    async def _run_now(
        self, loop: asyncio.AbstractEventLoop, inputs: dict[str, np.ndarray]
    ) -> dict[str, np.ndarray]:
        self._running += 1
        try:
            outputs, compute = await self._call(loop, inputs)
        except Exception as exc:
            raise failure(exc) from None
        finally:
            self._running -= 1
            if self._queue:  # a request queued meanwhile waits for this slot
                self._wakeup.set()
        first = next(iter(inputs.values()))
        self._done(first.shape[0] if first.ndim else 1, [0.0], compute)
        return outputs

    async def _call(
        self, loop: asyncio.AbstractEventLoop, inputs: dict[str, np.ndarray]
    ) -> tuple[dict[str, np.ndarray], float]:
        """Runs the model inline or in the pool; returns (outputs, model seconds)."""
        if self._fits_inline(inputs):
            outputs, seconds = self._timed(inputs)  # shorter than a thread hand-off
        else:
            outputs, seconds = await loop.run_in_executor(self._executor, self._timed, inputs)
        self._slots = 1 if seconds > _OVERLAP_BELOW_S else self.config.max_concurrent_batches
        per_byte = seconds / (sum(a.nbytes for a in inputs.values()) or 1)
        if self._per_byte is None or per_byte > self._per_byte:
            self._per_byte = per_byte  # a slow call moves the estimate up at once
        else:
            self._per_byte = 0.9 * self._per_byte + 0.1 * per_byte
        return outputs, seconds

    async def close(self) -> None:
        """Stops the worker; requests still queued fail with 503."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        while self._queue:
            request = self._queue.popleft()
            if not request.future.done():
                request.future.set_exception(ServeError(503, "Model version is unloading."))

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._queue or self._running >= self._slots:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            batch = await self._collect()
            if batch:
                self._running += 1
                task = loop.create_task(self._execute(loop, batch))
                self._batches.add(task)  # keep a reference until it is done
                task.add_done_callback(self._batches.discard)

    async def _collect(self) -> list[_Request]:
        delay = self.config.max_queue_delay_ms / 1000.0
        first = self._queue[0]
        deadline = first.enqueued + delay
        while delay > 0 and self._rows_ready(first.key) < self.limit:
            remaining = deadline - self._clock()
            if remaining <= 0:
                break
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), remaining)
            except asyncio.TimeoutError:
                break
        return self._take(first.key)

    def _rows_ready(self, key: tuple) -> int:
        return sum(r.rows for r in self._queue if r.key == key)

    def _take(self, key: tuple) -> list[_Request]:
        batch: list[_Request] = []
        rows = 0
        kept: deque[_Request] = deque()
        while self._queue:
            request = self._queue.popleft()
            fits = not batch or rows + request.rows <= self.limit
            if request.key == key and fits and not request.future.done():
                batch.append(request)
                rows += request.rows
            elif not request.future.done():
                kept.append(request)
        self._queue = kept
        return batch

    async def _execute(self, loop: asyncio.AbstractEventLoop, batch: list[_Request]) -> None:
        start = self._clock()
        queued = [start - r.enqueued for r in batch]
        if len(batch) == 1:
            merged = batch[0].inputs
        else:
            names = list(batch[0].inputs)
            merged = {n: np.concatenate([r.inputs[n] for r in batch]) for n in names}
        try:
            outputs, compute = await self._call(loop, merged)
        except Exception as exc:
            error = failure(exc)
            if error.status == 400 and len(batch) > 1:  # one bad request: only it gets the 400
                await self._one_by_one(loop, batch)
                return
            for r in batch:  # the model failed: every request of the batch gets the error
                if not r.future.done():
                    r.future.set_exception(error)
            return
        finally:
            self._running -= 1
            if self._queue:
                self._wakeup.set()
        self._deliver(batch, outputs)
        self._done(sum(r.rows for r in batch), queued, compute)

    async def _one_by_one(self, loop: asyncio.AbstractEventLoop, batch: list[_Request]) -> None:
        for r in batch:
            try:
                outputs, _ = await self._call(loop, r.inputs)
            except Exception as exc:
                if not r.future.done():
                    r.future.set_exception(failure(exc))
                continue
            self._deliver([r], outputs)

    def _done(self, rows: int, queued: list[float], compute: float) -> None:
        if self._observe is not None:
            self._observe(rows, queued, compute)
        if self.config.adaptive:
            self._adapt(max(queued) + compute)

    def _deliver(self, batch: list[_Request], outputs: dict[str, np.ndarray]) -> None:
        if len(batch) == 1:
            if not batch[0].future.done():
                batch[0].future.set_result(outputs)
            return
        total = sum(r.rows for r in batch)
        offset = 0
        for r in batch:
            part = {}
            for name, array in outputs.items():
                # Outputs without a batch dimension (rare) are shared by every request.
                part[name] = (
                    array[offset : offset + r.rows] if array.shape[:1] == (total,) else array
                )
            offset += r.rows
            if not r.future.done():
                r.future.set_result(part)

    def _adapt(self, latency: float) -> None:
        """Shrinks the batch limit when p99 passes the target, grows it when well under."""
        self._latencies.append(latency)
        if len(self._latencies) < 20:
            return
        ordered = sorted(self._latencies)
        p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] * 1000.0
        target = self.config.target_p99_ms
        if p99 > target and self.limit > 1:
            self.limit = max(1, int(self.limit * 0.75))
            self._latencies.clear()
        elif p99 < 0.6 * target and self.limit < self.config.max_batch_size:
            self.limit = min(self.config.max_batch_size, self.limit + max(1, self.limit // 4))

    def _timed(self, inputs: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], float]:
        start = self._clock()
        outputs = self._run(inputs)
        return outputs, self._clock() - start


# What runtimes raise for an input the model cannot take (a token id past the vocabulary, a
# sequence past the positions it was built for): ONNX Runtime's InvalidArgument, torch's IndexError.
_CLIENT_ERRORS = ("InvalidArgument", "IndexError")


def failure(exc: Exception) -> ServeError:
    """The answer for a failed model call: 400 when the input was at fault, else 500 (logged).

    Example:
        >>> failure(IndexError("index out of range in self")).status
        400
    """
    if isinstance(exc, ServeError):
        return exc
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if any(cls.__name__ in _CLIENT_ERRORS for cls in type(exc).__mro__):
        return ServeError(400, f"The model cannot take this input: {first[:300]}")
    logger.error("Inference failed", exc_info=exc)
    return ServeError(500, f"Inference failed: {first}")
