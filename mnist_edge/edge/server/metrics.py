"""The server's Prometheus metrics, per model (prometheus-client).

One process: the metrics live in a registry of the server's own (several servers may share a
process, as tests and Ray replicas do). Several worker processes (workers.py): each writes its
values to files in PROMETHEUS_MULTIPROC_DIR, and /metrics, answered by whichever worker the
kernel hands the connection to, adds up every worker's files (prometheus-client's multiprocess
mode). Gauges say how they add up: the queue is summed over live workers, readiness is the
least of them (a model is ready only where every worker has it).
"""

from __future__ import annotations

import os
import time
from typing import Any

from ..errors import missing_dependency

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
# the statistics extension's durations (stats.py reads them back in Triton's shape)
REQUEST_STATS = ("success", "fail", "queue", "compute_input", "compute_infer", "compute_output")
BATCH_STATS = ("compute_input", "compute_infer", "compute_output")


def _prom() -> Any:
    try:
        import prometheus_client
    except ImportError:
        raise missing_dependency("prometheus_client", "mnist-edge serve") from None
    return prometheus_client


class ServerMetrics:
    """Requests by model, endpoint and status; latency, batch sizes, images, queue depth and
    readiness by model."""

    def __init__(self) -> None:
        prom = self.prom = _prom()
        self.shared = bool(os.environ.get(MULTIPROC_ENV))
        self.registry = r = prom.CollectorRegistry()
        self.requests = prom.Counter("mnist_edge_requests", "Requests by model, endpoint "
                                     "and status", ["model", "endpoint", "status"],
                                     registry=r)  # fmt: skip
        self.latency = prom.Histogram(
            "mnist_edge_request_seconds", "Inference request latency, from the body read to "
            "the answer", ["model"], registry=r, buckets=LATENCY_BUCKETS,
        )  # fmt: skip
        self.batch = prom.Histogram("mnist_edge_batch_images", "Images per model call",
                                    ["model"], registry=r, buckets=BATCH_BUCKETS)  # fmt: skip
        self.images = prom.Counter("mnist_edge_images", "Images answered", ["model"],
                                   registry=r)  # fmt: skip
        self.queue = prom.Gauge("mnist_edge_queue_images", "Images waiting for or in a model "
                                "call", ["model"], registry=r,
                                multiprocess_mode="livesum")  # fmt: skip
        self.ready = prom.Gauge("mnist_edge_ready", "1 when the model is loaded and the server "
                                "is not draining", ["model"], registry=r,
                                multiprocess_mode="livemin")  # fmt: skip
        # the statistics extension, by model and version (counters add up over workers)
        version = ["model", "version"]
        self.stat_seconds = prom.Counter(
            "mnist_edge_stat_seconds", "Cumulative seconds of successful requests (success), "
            "failed ones (fail), and of successful ones waiting (queue), preparing input "
            "(compute_input), in the model (compute_infer) and making the reply "
            "(compute_output)", [*version, "stat"], registry=r,
        )  # fmt: skip
        self.stat_requests = prom.Counter("mnist_edge_stat_requests", "Requests answered "
                                          "(success) or failed after reaching a model (fail)",
                                          [*version, "stat"], registry=r)  # fmt: skip
        self.inferences = prom.Counter("mnist_edge_stat_inferences", "Images answered "
                                       "successfully", version, registry=r)  # fmt: skip
        self.batch_calls = prom.Counter("mnist_edge_stat_batch_calls", "Model calls by batch "
                                        "size", [*version, "batch_size"], registry=r)  # fmt: skip
        self.batch_seconds = prom.Counter("mnist_edge_stat_batch_seconds", "Cumulative seconds "
                                          "of model calls by batch size: joining the input, "
                                          "in the model, handing answers back",
                                          [*version, "batch_size", "stat"],
                                          registry=r)  # fmt: skip
        self.last_inference = prom.Gauge("mnist_edge_stat_last_inference_ms", "When the last "
                                         "successful request was answered, in ms since the "
                                         "epoch", version, registry=r,
                                         multiprocess_mode="max")  # fmt: skip

    def model_stats(self, model: str, version: str) -> ModelStats:
        return ModelStats(self, model, version)

    def collect(self) -> Any:
        """Every metric family, added up over the workers when there are several."""
        if not self.shared:
            return self.registry.collect()
        from prometheus_client import multiprocess

        registry = self.prom.CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return registry.collect()

    def count(self, model: str, endpoint: str, status: int | str) -> None:
        self.requests.labels(model, endpoint, str(status)).inc()

    def forget(self, model: str) -> None:
        """An unloaded model's gauges go (its counters stay: they only ever add up)."""
        for gauge in (self.queue, self.ready):
            try:
                gauge.remove(model)
            except KeyError:
                pass

    def text(self) -> bytes:
        if not self.shared:
            return self.prom.generate_latest(self.registry)
        from prometheus_client import multiprocess

        registry = self.prom.CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return self.prom.generate_latest(registry)


class ModelStats:
    """What one version of a model records: per request (its Times, from the batcher and the
    transport) and per model call (the batcher's on_batch). Its series exist from the start,
    at zero, so a version that has answered nothing yet still shows in the statistics."""

    def __init__(self, metrics: ServerMetrics, model: str, version: str) -> None:
        m = self._m = metrics
        self.model, self.version = model, version
        self._seconds = {k: m.stat_seconds.labels(model, version, k) for k in REQUEST_STATS}
        self._ok = m.stat_requests.labels(model, version, "success")
        self._failed = m.stat_requests.labels(model, version, "fail")
        self._images = m.inferences.labels(model, version)
        self._last = m.last_inference.labels(model, version)
        self._batch_hist, self._images_all = m.batch.labels(model), m.images.labels(model)
        self._sizes: dict[int, tuple[Any, ...]] = {}

    def succeeded(self, times: Any, seconds: float, images: int) -> None:
        """A request answered: `times` (batcher.Times) and its whole duration."""
        s = self._seconds
        self._ok.inc()
        s["success"].inc(seconds)
        s["queue"].inc(times.queue_s)
        s["compute_input"].inc(times.input_s)
        s["compute_infer"].inc(times.infer_s)
        s["compute_output"].inc(times.output_s)
        self._images.inc(images)
        self._last.set(time.time() * 1000.0)

    def failed(self, seconds: float) -> None:
        """A request that reached this version and got no answer (its input was refused, the
        queue was full, it timed out, the engine failed)."""
        self._failed.inc()
        self._seconds["fail"].inc(seconds)

    def on_batch(self, n: int, input_s: float, infer_s: float, output_s: float) -> None:
        """The batcher's callback after each model call (batcher.OnBatch)."""
        self._batch_hist.observe(n)
        self._images_all.inc(n)
        series = self._sizes.get(n)
        if series is None:
            m, size = self._m, str(n)
            series = self._sizes[n] = (
                m.batch_calls.labels(self.model, self.version, size),
                *(m.batch_seconds.labels(self.model, self.version, size, k)
                  for k in BATCH_STATS),
            )  # fmt: skip
        calls, joining, infer, output = series
        calls.inc()
        joining.inc(input_s)
        infer.inc(infer_s)
        output.inc(output_s)


__all__ = ["ServerMetrics", "ModelStats", "MULTIPROC_ENV", "REQUEST_STATS", "BATCH_STATS"]
