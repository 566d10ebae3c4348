"""Dynamic batching: requests' images gathered into one model call, answers split back.

A request hands its (n, 1, 28, 28) batch to `Batcher.submit` and awaits its (n, 10) answer.
One thread of the batcher's own takes the first waiting request, then gathers whatever else
arrives within `max_delay_us` microseconds, up to `max_batch` images, runs the model once on all
of them and hands every request its rows. A request larger than `max_batch` runs alone (it is
never split); `max_batch` 1 turns batching off (every request is its own call). At most
`max_queue` images wait at once: beyond that `submit` raises QueueFull at once (the server
answers 503 with Retry-After), so a burst never piles up unbounded latency or memory.

On CPU the model's arithmetic per image hardly changes with the batch (conv3 is a GEMM 484
rows tall even at batch 1): what batching saves is the per-call cost of Python and of a runtime
call, which is why the default delay is short (policy.SERVE_MAX_DELAY_US).
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .. import policy
from ..errors import ConfigError


class QueueFull(Exception):
    """More images wait than the queue holds: try again later."""


@dataclass(frozen=True)
class BatchConfig:
    """How requests are gathered into model calls."""

    max_batch: int = policy.SERVE_MAX_BATCH  # images per model call (1: no batching)
    max_delay_us: int = policy.SERVE_MAX_DELAY_US  # how long the first request waits for more
    max_queue: int = policy.SERVE_MAX_QUEUE  # images waiting at most

    def __post_init__(self) -> None:
        if not 1 <= self.max_batch <= 65536:
            raise ConfigError(f"--max-batch must be 1..65536, got {self.max_batch}")
        if not 0 <= self.max_delay_us <= 10_000_000:
            raise ConfigError(f"--max-delay must be 0..10,000,000 us, got {self.max_delay_us}")
        if self.max_queue < 1:
            raise ConfigError(f"--max-queue must be at least 1, got {self.max_queue}")


@dataclass(slots=True)
class Times:
    """Where one request's time went, in seconds (the statistics extension's split): waiting
    for its model call, preparing the model's input (parsing, image decoding, joining the
    batch), the model call of its batch, and turning the answer into the reply. The batcher
    also notes when its batch began, called the model and ended (time.perf_counter), and the
    batch's size, for the spans of tracing.py; the transport notes the version and images."""

    queue_s: float = 0.0
    input_s: float = 0.0
    infer_s: float = 0.0
    output_s: float = 0.0
    submitted: float = 0.0
    batch_start: float = 0.0
    call_start: float = 0.0
    call_end: float = 0.0
    batch_end: float = 0.0
    batch_images: int = 0
    batch_requests: int = 0
    version: str = ""
    images: int = 0


# the batcher's callback after each model call: (images, seconds joining the batch's input,
# seconds in the model, seconds handing the answers back)
OnBatch = Callable[[int, float, float, float], None]


@dataclass
class _Item:
    x: np.ndarray
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future
    times: Times | None = None

    @property
    def n(self) -> int:
        return len(self.x)


class Batcher:
    """Runs `fn` (normalised float32 (N, 1, 28, 28) -> (N, 10)) on batches gathered from
    concurrent requests, on one thread of its own (the engine's threads do the arithmetic)."""

    def __init__(self, fn: Callable[[np.ndarray], np.ndarray], cfg: BatchConfig = BatchConfig(),
                 on_batch: OnBatch | None = None,
                 expected: Callable[[], int] = lambda: 0) -> None:  # fmt: skip
        self.fn, self.cfg, self.on_batch = fn, cfg, on_batch
        self.expected = expected  # requests the server holds (a batch waits only for those)
        self._q: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._waiting = 0  # images submitted and not yet answered
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="mnist-edge-batcher", daemon=True)
        self._thread.start()

    @property
    def depth(self) -> int:
        """Images waiting for, or in, a model call."""
        return self._waiting

    async def submit(self, x: np.ndarray, inline: bool = True,
                     times: Times | None = None) -> np.ndarray:  # fmt: skip
        """The model's (n, 10) answer for `x`, once its batch has run; `times` hears how long
        it waited and how long its batch took. A request alone in the
        server (nothing waiting, no other request held) runs at once in the caller's thread:
        there is nobody to batch with, and the hand-over to the batcher's thread and back
        costs more than the model call at batch 1. `inline=False` always hands over: for a
        caller that cannot tell whether others are coming (gRPC: see grpc_service.py)."""
        with self._lock:
            alone = inline and self._waiting == 0 and self.expected() <= 1
            if self._waiting + len(x) > self.cfg.max_queue and self._waiting:
                raise QueueFull(f"{self._waiting} images are waiting (at most "
                                f"{self.cfg.max_queue}); try again shortly")  # fmt: skip
            self._waiting += len(x)
        if alone:
            t0 = time.perf_counter()
            try:
                return self.fn(x)
            finally:
                t1 = time.perf_counter()
                if times is not None:
                    times.infer_s = t1 - t0
                    times.submitted = times.batch_start = times.call_start = t0
                    times.call_end = times.batch_end = t1
                    times.batch_images, times.batch_requests = len(x), 1
                if self.on_batch:
                    self.on_batch(len(x), 0.0, t1 - t0, 0.0)
                with self._lock:
                    self._waiting -= len(x)
        loop = asyncio.get_running_loop()
        item = _Item(x, loop, loop.create_future(), times)
        if times is not None:
            times.submitted = time.perf_counter()
        self._q.put(item)
        return await item.future

    def close(self) -> None:
        """Stop the thread once the queue is empty (every submitted request is answered)."""
        self._q.put(None)
        self._thread.join(timeout=60)

    def _gather(self, first: _Item) -> tuple[list[_Item], _Item | None, bool]:
        """(the batch, a request left for the next one, whether to stop after it)."""
        batch, count = [first], first.n
        deadline = time.perf_counter() + self.cfg.max_delay_us / 1e6
        while count < self.cfg.max_batch:
            # wait for more only while the server holds requests not yet in this batch
            waiting = len(batch) < self.expected()
            remaining = deadline - time.perf_counter() if waiting else 0.0
            try:
                item = self._q.get(timeout=remaining) if remaining > 0 else self._q.get_nowait()
            except queue.Empty:
                break
            if item is None:
                return batch, None, True
            if count + item.n > self.cfg.max_batch:
                return batch, item, False
            batch.append(item)
            count += item.n
        return batch, None, False

    def _run(self) -> None:
        carry: _Item | None = None
        while True:
            first = carry if carry is not None else self._q.get()
            if first is None:
                break
            batch, carry, stop = self._gather(first)
            self._answer(batch)
            if stop:
                break
        if carry is not None:
            self._answer([carry])
        while True:  # anything submitted after close() is answered too, one by one
            try:
                item = self._q.get_nowait()
            except queue.Empty:
                return
            if item is not None:
                self._answer([item])

    def _answer(self, batch: list[_Item]) -> None:
        """One model call for the batch, and each request's rows back to its event loop."""
        t_start = time.perf_counter()
        x = batch[0].x if len(batch) == 1 else np.concatenate([b.x for b in batch])
        t0 = time.perf_counter()
        try:
            out, error = self.fn(x), None
        except Exception as exc:  # the engine failed: every request of the batch hears it
            out, error = None, exc
        t1 = time.perf_counter()
        joining, infer = t0 - t_start, t1 - t0
        # one hand-over per event loop, not per request: each call_soon_threadsafe writes to
        # the loop's wake-up pipe, a system call that took 5% of a gRPC server's samples at
        # concurrency 64 when made for each of a batch's ~16 requests (py-spy)
        answers: dict[asyncio.AbstractEventLoop, list] = {}
        start = 0
        timed = []
        for b in batch:
            result = None if out is None else out[start : start + b.n]
            start += b.n
            if b.times is not None:
                timed.append(b.times)
            answers.setdefault(b.loop, []).append((b.future, result))
        for t in timed:  # before the hand-over: a request reads its times once answered
            t.queue_s, t.infer_s = t_start - t.submitted, infer
            t.input_s += joining
            t.batch_start, t.call_start, t.call_end = t_start, t0, t1
            t.batch_images, t.batch_requests = len(x), len(batch)
        t_end = time.perf_counter()
        for t in timed:
            t.batch_end = t_end
        for loop, settled in answers.items():
            loop.call_soon_threadsafe(_settle_all, settled, error)
        if self.on_batch:
            self.on_batch(len(x), joining, infer, time.perf_counter() - t1)
        with self._lock:
            self._waiting -= len(x)


def _settle_all(settled: list, error: Exception | None) -> None:
    for future, result in settled:
        _settle(future, result, error)


def _settle(future: asyncio.Future, result: np.ndarray | None, error: Exception | None) -> None:
    if future.done():  # the request gave up (its client left, or it timed out)
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
