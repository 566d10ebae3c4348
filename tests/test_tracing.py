"""OpenTelemetry tracing (`serve --trace`, the tracing extra): each inference request gives the
spans infer > queue, batch > model call, with the batch's size, the client's W3C trace context
as the parent, over REST and gRPC. In one process with the SDK's in-memory exporter; as a user
runs it, with OTEL_TRACES_EXPORTER=console; and with a collector that is down (refusing, or
accepting connections and never answering), where every request must still be answered and the
server still exit 0 in bounded time."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import threading
import time

import numpy as np
import orjson
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from test_serve import Server

from mnist_edge.edge.errors import ConfigError, MissingDependency
from mnist_edge.edge.server import ServeConfig, app, tracing
from mnist_edge.edge.server.batcher import Times
from mnist_edge.edge.server.model_server import ModelServer

try:
    from opentelemetry import trace
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
except ImportError:  # pragma: no cover
    if os.environ.get("CI") == "true":  # CI installs the extra: a skip there would hide these
        raise
    pytest.skip("the tracing extra (pip install -e '.[tracing]')", allow_module_level=True)

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
PARENT = "b7ad6b7169203331"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT}-01"
TRACE_ENV = ("OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_PROTOCOL",
             "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_SDK_DISABLED")  # fmt: skip


@pytest.fixture
def clean_env(monkeypatch):
    for name in TRACE_ENV:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def body(n: int) -> bytes:
    x = np.zeros((n, 1, 28, 28), np.float32)
    tensor = {"name": "input", "datatype": "FP32", "shape": list(x.shape),
              "data": x.ravel().tolist()}  # fmt: skip
    return orjson.dumps({"inputs": [tensor]})


async def post(server: ModelServer, data: bytes, headers: dict[str, str]) -> int:
    async def chunks():
        yield data

    status, _, _ = await app.answer(server, {"model": "mnist"}, headers.get, chunks())
    return status


def tree(spans) -> dict[str, list]:
    """The finished spans by name."""
    out: dict[str, list] = {}
    for s in spans:
        out.setdefault(s.name, []).append(s)
    return out


def check_request(spans: dict[str, list], root) -> None:
    """One request's four spans: nested as documented, each inside its parent's time."""
    me = root.context.span_id
    kids = {n: [s for s in spans.get(n, []) if s.parent and s.parent.span_id == me]
            for n in ("queue", "batch")}  # fmt: skip
    (queue,), (batch,) = kids["queue"], kids["batch"]
    (call,) = [s for s in spans["model call"] if s.parent.span_id == batch.context.span_id]
    assert root.start_time <= queue.start_time <= queue.end_time <= batch.start_time
    assert batch.start_time <= call.start_time <= call.end_time <= batch.end_time
    assert batch.end_time <= root.end_time
    assert batch.attributes["mnist_edge.batch.images"] >= root.attributes["mnist_edge.images"]
    assert call.attributes["mnist_edge.batch.images"] == batch.attributes["mnist_edge.batch.images"]
    assert batch.attributes["mnist_edge.batch.requests"] >= 1
    assert {s.context.trace_id for s in (queue, batch, call)} == {root.context.trace_id}


def test_spans_in_memory(clean_env):
    exporter = InMemorySpanExporter()
    server = ModelServer(ServeConfig(grpc=False))
    server.tracing = tracing.Tracing([exporter], simple=True)
    server.load()
    try:

        async def main():
            sizes = [1, 2, 3, 4, 5, 6]
            statuses = await asyncio.gather(*(post(server, body(n), {"traceparent": TRACEPARENT})
                                              for n in sizes))  # fmt: skip
            bad = await post(server, b"{not json", {})
            await asyncio.sleep(0.01)  # the spans are made on the loop's next turns
            return statuses, bad

        statuses, bad = asyncio.run(main())
    finally:
        server.close()
    assert statuses == [200] * 6 and bad == 400
    spans = tree(exporter.get_finished_spans())
    roots = spans["infer"]
    assert len(roots) == 7
    ok = [r for r in roots if r.attributes["mnist_edge.status"] == "200"]
    assert sorted(r.attributes["mnist_edge.images"] for r in ok) == [1, 2, 3, 4, 5, 6]
    for root in ok:
        assert root.kind == trace.SpanKind.SERVER
        assert format(root.context.trace_id, "032x") == TRACE_ID  # the client's trace
        assert format(root.parent.span_id, "016x") == PARENT
        assert root.attributes["mnist_edge.model"] == "mnist"
        assert root.attributes["mnist_edge.model_version"] == "1"
        check_request(spans, root)
    (refused,) = [r for r in roots if r.attributes["mnist_edge.status"] == "400"]
    assert refused.parent is None  # no traceparent: a trace of its own
    assert len(spans["batch"]) == 6  # a refused request never reached a batch


def test_spans_of_rest_and_grpc_from_the_environment(tmp_path, clean_env):
    """As a user runs it: the standard variable picks the console exporter; the W3C context
    comes as a REST header and as gRPC metadata."""
    env = dict(os.environ, OTEL_TRACES_EXPORTER="console", OTEL_SERVICE_NAME="digits")
    s = Server("--workers", 1, "--trace", cwd=tmp_path, env=env)
    x = np.zeros((3, 1, 28, 28), np.float32)
    try:
        t = httpclient.InferInput("input", list(x.shape), "FP32")
        t.set_data_from_numpy(x)
        s.client.infer("mnist", [t], headers={"traceparent": TRACEPARENT})
        g = grpcclient.InferenceServerClient(s.grpc_address)
        t = grpcclient.InferInput("input", list(x.shape), "FP32")
        t.set_data_from_numpy(x)
        other = "1" * 32
        g.infer("mnist", [t], headers={"traceparent": f"00-{other}-{PARENT}-01"})
    finally:
        code, out = s.stop()
    assert code == 0, out
    spans, decoder, i = [], json.JSONDecoder(), out.find("{")
    while i != -1:
        span, end = decoder.raw_decode(out, i)
        spans.append(span)
        i = out.find("{", end)
    roots = {r["attributes"]["mnist_edge.protocol"]: r for r in spans if r["name"] == "infer"}
    assert roots["rest"]["context"]["trace_id"] == "0x" + TRACE_ID
    assert roots["grpc"]["context"]["trace_id"] == "0x" + other
    for root in roots.values():
        assert root["parent_id"] == "0x" + PARENT and root["attributes"]["mnist_edge.images"] == 3
        assert root["resource"]["attributes"]["service.name"] == "digits"
        names = sorted(s["name"] for s in spans
                       if s["context"]["trace_id"] == root["context"]["trace_id"])  # fmt: skip
        assert names == ["batch", "infer", "model call", "queue"]


class BlackHole:
    """A collector that accepts connections and never answers."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                self.held.append(self.sock.accept()[0])
            except OSError:
                return

    def close(self) -> None:
        self.sock.close()
        for c in self.held:
            c.close()


@pytest.mark.parametrize("collector", ["refusing", "silent"])
@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
def test_a_collector_that_is_down_fails_no_request(tmp_path, clean_env, collector, protocol):
    hole = BlackHole()
    if collector == "refusing":
        hole.close()  # the port is free again: connections are refused
    env = dict(
        os.environ,
        OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{hole.port}",
        OTEL_EXPORTER_OTLP_PROTOCOL=protocol,
        OTEL_BSP_SCHEDULE_DELAY="20",
        OTEL_BSP_MAX_QUEUE_SIZE="64",  # a short queue: it fills, and spans are dropped
        OTEL_BSP_MAX_EXPORT_BATCH_SIZE="16",
    )  # a short queue: it fills, spans are dropped
    s = Server("--workers", 1, "--trace", cwd=tmp_path, env=env)
    x = np.zeros((1, 1, 28, 28), np.float32)
    try:
        g = grpcclient.InferenceServerClient(s.grpc_address)
        for i in range(150):  # more spans than the queue holds, across both protocols
            module, c = (httpclient, s.client) if i % 2 else (grpcclient, g)
            t = module.InferInput("input", list(x.shape), "FP32")
            t.set_data_from_numpy(x)
            assert c.infer("mnist", [t]).as_numpy("log_probs").shape == (1, 10)
    finally:
        code, out = s.stop()
        hole.close()
    assert code == 0, out  # and stop() bounds the exit (60 s; tracing gives up after 3 s)
    assert "Traceback" not in out


def test_bad_tracing_settings_are_one_line_at_start(clean_env, monkeypatch):
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "zipkin")
    with pytest.raises(ConfigError, match="OTEL_TRACES_EXPORTER='zipkin'"):
        ServeConfig(trace=True)
    ServeConfig(trace=False)  # not asked for: not looked at
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "otlp")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")
    with pytest.raises(ConfigError, match="http/json"):
        ServeConfig(trace=True)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_PROTOCOL")
    monkeypatch.setenv("OTEL_BSP_MAX_QUEUE_SIZE", "8")  # under the export batch's 512
    with pytest.raises(ConfigError, match="OTEL_BSP_"):
        ServeConfig(trace=True)
    monkeypatch.delenv("OTEL_BSP_MAX_QUEUE_SIZE")
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")  # the standard off switch wins
    assert tracing.start(ServeConfig(trace=True).trace) is None
    monkeypatch.delenv("OTEL_SDK_DISABLED")
    import importlib.util

    real = importlib.util.find_spec

    def find_spec(name, *args):  # as on an install without the extra
        return None if name.startswith("opentelemetry") else real(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    with pytest.raises(MissingDependency, match=r"mnist-edge\[tracing\]"):
        ServeConfig(trace=True)


def test_the_cli_refuses_bad_settings_in_one_line(tmp_path, clean_env):
    import subprocess
    import sys

    env = dict(os.environ, OTEL_TRACES_EXPORTER="jaeger")
    command = [sys.executable, "-m", "mnist_edge", "serve", "--trace", "--port", "0"]
    r = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "OTEL_TRACES_EXPORTER='jaeger'" in r.stdout + r.stderr


def test_a_request_sampled_out_makes_no_span(clean_env):
    clean_env.setenv("OTEL_TRACES_SAMPLER", "always_off")
    exporter = InMemorySpanExporter()
    t = tracing.Tracing([exporter], simple=True)
    now = time.perf_counter()
    times = Times(submitted=now, batch_start=now, call_start=now, call_end=now, batch_end=now,
                  batch_images=1, batch_requests=1, version="1", images=1)  # fmt: skip
    t.record("rest", "mnist", now, now, times, 200, True, {})
    clean_env.setenv("OTEL_TRACES_SAMPLER", "always_on")
    on = tracing.Tracing([exporter], simple=True)
    on.record("rest", "mnist", now, now, times, 200, True, {})
    assert sorted(s.name for s in exporter.get_finished_spans()) == [
        "batch", "infer", "model call", "queue"]  # fmt: skip
