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
from typing import Any

from ..errors import missing_dependency

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


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

    def count(self, model: str, endpoint: str, status: int | str) -> None:
        self.requests.labels(model, endpoint, str(status)).inc()

    def on_batch(self, model: str) -> Any:
        """The batcher's callback for one model: (images, seconds) of each model call."""
        batch, images = self.batch.labels(model), self.images.labels(model)

        def observe(n: int, seconds: float) -> None:
            batch.observe(n)
            images.inc(n)

        return observe

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


__all__ = ["ServerMetrics", "MULTIPROC_ENV"]
