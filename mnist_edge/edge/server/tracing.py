"""Optional OpenTelemetry tracing of inference requests (`serve --trace`, the `tracing` extra).

Each inference request, REST or gRPC, gives a trace of four spans:

    infer (SERVER)        arrival -> reply made; model, version, images, protocol, status
      queue               waiting for its model call
      batch               its batch: from the batcher taking it to the answers handed back;
                          mnist_edge.batch.images and mnist_edge.batch.requests
        model call        the engine's run on the batch; its images again

A batch serves several requests: each request's trace holds its own copy of the batch's spans
(with the same times and size), so that one trace tells one request's whole story. A client's
W3C `traceparent` (REST header, gRPC metadata) makes `infer` a child of the client's span.

The spans are made on the event loop's turn after the request's reply was handed to the
transport (for REST, written to its socket), from the times the batcher and the transport
noted (batcher.Times). Making spans is most of what tracing costs (the SDK's Python, per span:
benchmarks/serve_tracing.py), so a request its sampler leaves out
(OTEL_TRACES_SAMPLER, e.g. parentbased_traceidratio) makes nothing past its root's sampling
decision. Spans go to the SDK's BatchSpanProcessor, which queues them and
exports them from a thread of its own: a collector that is down, slow or refusing costs the
request nothing but that hand-over, and spans over the queue's size are dropped. Off unless
asked for; nothing of OpenTelemetry is imported then.

Configured by the standard variables: OTEL_TRACES_EXPORTER (`otlp`, the default, `console`,
`none`, or several separated by commas), OTEL_EXPORTER_OTLP_[TRACES_]PROTOCOL (`http/protobuf`,
the default, or `grpc`), OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT, _HEADERS, _TIMEOUT and
_COMPRESSION, OTEL_SERVICE_NAME (default `mnist-edge`), OTEL_RESOURCE_ATTRIBUTES,
OTEL_TRACES_SAMPLER[_ARG], OTEL_PROPAGATORS, OTEL_BSP_* (the processor's queue and delays),
and OTEL_SDK_DISABLED=true to turn it off again.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from ... import __version__
from ..errors import ConfigError, missing_dependency
from .batcher import Times

SHUTDOWN_S = 3.0  # at exit, spans still queued get this long to leave; then they are dropped
_PERF0, _EPOCH0 = time.perf_counter(), time.time_ns()  # perf_counter -> ns since the epoch


def _ns(perf: float) -> int:
    return _EPOCH0 + int((perf - _PERF0) * 1e9)


def disabled_by_env() -> bool:
    return os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true"


# the exporters OTEL_TRACES_EXPORTER may name -> their module (None: no exporter)
OTLP_MODULES = {"http/protobuf": "opentelemetry.exporter.otlp.proto.http.trace_exporter",
                "grpc": "opentelemetry.exporter.otlp.proto.grpc.trace_exporter"}  # fmt: skip


def _wanted() -> list[str]:
    """The modules of the exporters the environment asks for (OTLP over HTTP by default);
    ConfigError for a name or protocol this server does not export to."""
    names = [n.strip().lower() for n in os.environ.get("OTEL_TRACES_EXPORTER", "otlp").split(",")]
    out = []
    for name in filter(None, names):
        if name == "none":
            continue
        if name == "console":
            out.append("opentelemetry.sdk.trace.export")
        elif name == "otlp":
            protocol = (os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
                        or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
                        or "http/protobuf").strip().lower()  # fmt: skip
            if protocol not in OTLP_MODULES:
                raise ConfigError(f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r}: this server "
                                  "exports over 'http/protobuf' or 'grpc'")  # fmt: skip
            out.append(OTLP_MODULES[protocol])
        else:
            raise ConfigError(f"OTEL_TRACES_EXPORTER={name!r}: this server exports to 'otlp', "
                              "'console' or 'none'")  # fmt: skip
    return out


def check() -> None:
    """At start, before anything listens: the environment's exporters exist and are installed
    (one line otherwise: ConfigError, or MissingDependency naming the extra)."""
    import importlib.util

    for module in ["opentelemetry.sdk.trace", *_wanted()]:
        try:
            found = importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:
            found = False
        if not found:
            raise missing_dependency("opentelemetry", "serve --trace")
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter

    try:  # OTEL_BSP_*, checked the SDK's way
        BatchSpanProcessor(SpanExporter()).shutdown()
    except ValueError as exc:
        raise ConfigError(f"the OTEL_BSP_* settings: {exc}") from None


def exporters_from_env() -> list[Any]:
    """The exporters OTEL_TRACES_EXPORTER names, made as OTEL_EXPORTER_OTLP_* say."""
    import importlib

    out = []
    for module in _wanted():
        found = importlib.import_module(module)
        make = getattr(found, "OTLPSpanExporter", None) or found.ConsoleSpanExporter
        out.append(make())
    return out


class Tracing:
    """The tracer of one server process and what it records."""

    def __init__(self, exporters: list[Any] | None = None, simple: bool = False) -> None:
        """`exporters` (default: from the environment); `simple` exports each span as it ends,
        in the caller's thread (for tests: the in-memory exporter sees spans at once)."""
        try:
            from opentelemetry import propagate, trace
            from opentelemetry.sdk.resources import Resource
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
        except ImportError:
            raise missing_dependency("opentelemetry", "serve --trace") from None
        attributes = {"service.version": __version__}
        given = os.environ.get("OTEL_RESOURCE_ATTRIBUTES", "")
        if not os.environ.get("OTEL_SERVICE_NAME") and "service.name=" not in given:
            attributes["service.name"] = "mnist-edge"
        self.provider = TracerProvider(resource=Resource.create(attributes))
        for exporter in exporters_from_env() if exporters is None else exporters:
            processor = SimpleSpanProcessor if simple else BatchSpanProcessor
            self.provider.add_span_processor(processor(exporter))
        self.tracer = self.provider.get_tracer("mnist_edge.server", __version__)
        self._trace, self._propagate = trace, propagate
        self._server_kind = trace.SpanKind.SERVER

    def record(self, protocol: str, model: str, t0: float, t1: float, times: Times,
               status: int | str, ok: bool, carrier: Mapping[str, str]) -> None:  # fmt: skip
        """The spans of one request that ended at `t1` (perf_counter), begun at `t0`."""
        parent = self._propagate.extract(carrier) if carrier else None
        attrs: dict[str, Any] = {"mnist_edge.model": model, "mnist_edge.protocol": protocol,
                                 "mnist_edge.status": str(status)}  # fmt: skip
        if times.version:
            attrs["mnist_edge.model_version"] = times.version
        if times.images:
            attrs["mnist_edge.images"] = times.images
        start = self.tracer.start_span
        root = start("infer", context=parent, kind=self._server_kind, start_time=_ns(t0),
                     attributes=attrs)  # fmt: skip
        if not root.is_recording():  # sampled out (OTEL_TRACES_SAMPLER): nothing more to make
            return
        if not ok:
            root.set_status(self._trace.Status(self._trace.StatusCode.ERROR, str(status)))
        if times.batch_end:
            inside = self._trace.set_span_in_context(root)
            start("queue", context=inside, start_time=_ns(times.submitted)).end(
                end_time=_ns(times.batch_start)
            )
            size = {"mnist_edge.batch.images": times.batch_images,
                    "mnist_edge.batch.requests": times.batch_requests}  # fmt: skip
            batch = start("batch", context=inside, start_time=_ns(times.batch_start),
                          attributes=size)  # fmt: skip
            start("model call", context=self._trace.set_span_in_context(batch),
                  start_time=_ns(times.call_start),
                  attributes={"mnist_edge.batch.images": times.batch_images}).end(
                end_time=_ns(times.call_end))  # fmt: skip
            batch.end(end_time=_ns(times.batch_end))
        root.end(end_time=_ns(t1))

    def close(self, timeout_s: float = SHUTDOWN_S) -> None:
        """Flush what is queued, waiting at most `timeout_s` (a collector that is down must
        not hold the server's exit up)."""
        done = threading.Thread(target=self.provider.shutdown, daemon=True)
        done.start()
        done.join(timeout_s)


def start(enabled: bool, make: Callable[[], Tracing] = Tracing) -> Tracing | None:
    """The server's tracing: None when off (not asked for, or OTEL_SDK_DISABLED=true)."""
    if not enabled or disabled_by_env():
        return None
    return make()


__all__ = ["Tracing", "start", "check", "exporters_from_env", "SHUTDOWN_S"]
