"""The protocol's gRPC service, `inference.GRPCInferenceService`, served beside REST by the
same process, in the same event loop, on the same ModelServer: one batcher, one set of metrics,
one readiness, one drain.

    ServerLive, ServerReady, ModelReady, ServerMetadata, ModelMetadata, ModelConfig, ModelInfer

Messages are Triton's (proto/, a superset of the Open Inference Protocol's with the same field
numbers), so tritonclient's gRPC client and any client built from either proto file talk to it.
Methods not listed answer UNIMPLEMENTED. A tensor comes as `raw_input_contents` (FP32
little-endian; BYTES elements each a 4-byte little-endian length and the bytes) or as typed
`contents` (fp32_contents, bytes_contents); the answer comes as `raw_output_contents`, as
Triton's does. BYTES image files go through the same pipeline as over REST.

Errors keep the REST status's meaning in gRPC's codes: 400 INVALID_ARGUMENT, 404 NOT_FOUND,
a full queue RESOURCE_EXHAUSTED (as is a message over --max-body, refused by gRPC itself),
UNAVAILABLE while the model loads and once the server drains (a call in flight then still gets
its answer; a new one is not run, which UNAVAILABLE tells a client, so it may retry), and
DEADLINE_EXCEEDED past --timeout or the client's own deadline.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import numpy as np

from .. import __version__
from . import protocol
from .batching import QueueFull
from .errors import ConfigError, MnistEdgeError, missing_dependency
from .proto import grpc_service_pb2, model_config_pb2

# The ModelServer (serve.py, which imports this module) is passed in and typed as Any: a
# type-only import back would draw a loop between the two floors' modules.

SERVICE = "inference.GRPCInferenceService"
CALLER_WINDOW_S = 0.5  # a client connection that called this recently may call again soon
EXTENSIONS = ["binary_tensor_data", "model_configuration"]


def _grpc() -> Any:
    try:
        import grpc
    except ImportError:
        raise missing_dependency("grpcio", "mnist-edge serve's gRPC service") from None
    return grpc


def http_to_code(status: int) -> Any:
    """The gRPC status code for a REST status (the same refusal, said the gRPC way)."""
    code = _grpc().StatusCode
    codes = {400: code.INVALID_ARGUMENT, 404: code.NOT_FOUND, 413: code.RESOURCE_EXHAUSTED,
             503: code.UNAVAILABLE, 504: code.DEADLINE_EXCEEDED}  # fmt: skip
    return codes.get(status, code.INVALID_ARGUMENT)


def parse(request: Any, *, input_name: str, max_batch: int) -> protocol.Request:
    """A ModelInferRequest -> protocol.Request, by the same rules as a REST body."""
    if len(request.inputs) != 1:
        raise protocol.ProtocolError(protocol.one_input(input_name))
    tensor = request.inputs[0]
    raw_inputs = request.raw_input_contents
    if raw_inputs and len(raw_inputs) != len(request.inputs):
        raise protocol.ProtocolError(f"{len(raw_inputs)} raw_input_contents for "
                                     f"{len(request.inputs)} input")  # fmt: skip
    contents = tensor.contents if tensor.HasField("contents") else None
    if raw_inputs and contents is not None and contents.ListFields():
        raise protocol.ProtocolError(f"input {tensor.name!r}: both raw_input_contents and "
                                     "contents; send one")  # fmt: skip
    raw = bytes(raw_inputs[0]) if raw_inputs else None
    typed = contents if contents is not None and contents.ListFields() else None
    if raw is None and typed is None:
        raise protocol.ProtocolError(f"input {tensor.name!r}: no data (raw_input_contents or "
                                     "contents)")  # fmt: skip
    kind, data = protocol.parse_tensor(
        tensor.name, tensor.datatype, list(tensor.shape), raw=raw,
        data=None if typed is None else np.asarray(typed.fp32_contents, dtype=np.float32),
        elements=None if typed is None else list(typed.bytes_contents),
        input_name=input_name, max_batch=max_batch,
    )  # fmt: skip
    outputs = tuple(protocol.check_output(o.name) for o in request.outputs)
    return protocol.Request(request.id or None, kind, data, outputs, True, {})


def answer(request: Any, model: str, version: str, log_probs: np.ndarray) -> Any:
    """The ModelInferResponse: log_probs FP32 (N, 10) as raw_output_contents."""
    out = grpc_service_pb2.ModelInferResponse(
        model_name=model, model_version=version, id=request.id
    )
    out.outputs.add(name=protocol.spec.OUTPUT_NAME, datatype=protocol.FP32,
                    shape=list(log_probs.shape))  # fmt: skip
    out.raw_output_contents.append(np.ascontiguousarray(log_probs, dtype="<f4").tobytes())
    return out


class Service:
    """The RPCs, each an async function of (request, context) on the ModelServer's state."""

    def __init__(self, server: Any) -> None:
        self.server = server
        self._callers: dict[str, float] = {}  # peer (a client connection) -> its last call
        self._pruned = 0.0
        self.pb, self.mc = grpc_service_pb2, model_config_pb2
        self.grpc = _grpc()

    def callers(self) -> int:
        """Client connections that called ModelInfer in the last CALLER_WINDOW_S: how many
        calls may come soon. grpc.aio hands the event loop one call at a time, so calls still
        in gRPC's queue are not in flight yet; without this count the batcher, which waits for
        more only while more are expected, ran batches of ~4 at concurrency 64 (REST knows
        its open connections)."""
        now = time.monotonic()
        if now - self._pruned > CALLER_WINDOW_S / 4:
            self._pruned = now
            self._callers = {p: t for p, t in self._callers.items() if now - t < CALLER_WINDOW_S}
        return len(self._callers)

    def _count(self, method: str, code: Any) -> None:
        self.server.metrics.requests.labels(f"grpc.{method}", code.name).inc()

    async def _refuse(self, context: Any, method: str, code: Any, message: str) -> None:
        self._count(method, code)
        await context.abort(code, message)

    def _model(self, name: str, version: str) -> str | None:
        return self.server._model({"model": name} | ({"version": version} if version else {}))

    async def server_live(self, request: Any, context: Any) -> Any:
        self._count("ServerLive", self.grpc.StatusCode.OK)
        return self.pb.ServerLiveResponse(live=True)

    async def server_ready(self, request: Any, context: Any) -> Any:
        self._count("ServerReady", self.grpc.StatusCode.OK)
        return self.pb.ServerReadyResponse(ready=self.server.ready)

    async def model_ready(self, request: Any, context: Any) -> Any:
        if (problem := self._model(request.name, request.version)) is not None:
            await self._refuse(context, "ModelReady", self.grpc.StatusCode.NOT_FOUND, problem)
        self._count("ModelReady", self.grpc.StatusCode.OK)
        return self.pb.ModelReadyResponse(ready=self.server.ready)

    async def server_metadata(self, request: Any, context: Any) -> Any:
        self._count("ServerMetadata", self.grpc.StatusCode.OK)
        return self.pb.ServerMetadataResponse(name="mnist-edge", version=__version__,
                                              extensions=EXTENSIONS)  # fmt: skip

    async def model_metadata(self, request: Any, context: Any) -> Any:
        if (problem := self._model(request.name, request.version)) is not None:
            await self._refuse(context, "ModelMetadata", self.grpc.StatusCode.NOT_FOUND, problem)
        meta = self.server.metadata()
        tensor = self.pb.ModelMetadataResponse.TensorMetadata
        self._count("ModelMetadata", self.grpc.StatusCode.OK)
        return self.pb.ModelMetadataResponse(
            name=meta["name"], versions=meta["versions"], platform=meta["platform"],
            inputs=[tensor(name=t["name"], datatype=t["datatype"], shape=t["shape"])
                    for t in meta["inputs"]],
            outputs=[tensor(name=t["name"], datatype=t["datatype"], shape=t["shape"])
                     for t in meta["outputs"]],
        )  # fmt: skip

    async def model_config(self, request: Any, context: Any) -> Any:
        from google.protobuf import json_format

        if (problem := self._model(request.name, request.version)) is not None:
            await self._refuse(context, "ModelConfig", self.grpc.StatusCode.NOT_FOUND, problem)
        config = json_format.ParseDict(self.server.config(), self.mc.ModelConfig())
        self._count("ModelConfig", self.grpc.StatusCode.OK)
        return self.pb.ModelConfigResponse(config=config)

    async def model_infer(self, request: Any, context: Any) -> Any:
        server, code = self.server, self.grpc.StatusCode
        if (problem := self._model(request.model_name, request.model_version)) is not None:
            await self._refuse(context, "ModelInfer", code.NOT_FOUND, problem)
        if server.batcher is None:
            await self._refuse(context, "ModelInfer", code.UNAVAILABLE,
                               "not ready: the model is loading")  # fmt: skip
        if server.draining:  # gRPC's way: the call was not run, a client may retry elsewhere
            await self._refuse(context, "ModelInfer", code.UNAVAILABLE,
                               "the server is shutting down")  # fmt: skip
        self._callers[context.peer()] = time.monotonic()
        server.in_flight += 1
        t0 = time.perf_counter()
        failure: tuple[Any, str] | None = None
        try:
            async with asyncio.timeout(server.cfg.timeout_s):
                req = parse(request, input_name=server.predictor.contract.input_name,
                            max_batch=server.cfg.max_request_images)  # fmt: skip
                # always through the batcher's thread: a call run inline holds the event
                # loop, and grpc.aio hands over the calls behind it (from other connections
                # or the same one) only once it is done, so they could never join a batch
                out = await server.run(req, inline=False)
        except protocol.ProtocolError as exc:
            failure = http_to_code(exc.status), str(exc)
        except QueueFull as exc:
            failure = code.RESOURCE_EXHAUSTED, f"busy: {exc}"
        except TimeoutError:
            failure = (
                code.DEADLINE_EXCEEDED,
                f"no answer within {server.cfg.timeout_s:g} s (--timeout)",
            )
        except MnistEdgeError as exc:
            failure = code.INVALID_ARGUMENT, str(exc)
        finally:
            server.in_flight -= 1
            server.last_busy = time.monotonic()
        if failure is not None:
            await self._refuse(context, "ModelInfer", *failure)
        server.metrics.latency.observe(time.perf_counter() - t0)
        self._count("ModelInfer", code.OK)
        return answer(request, server.cfg.name, server.cfg.version, out)

    def handler(self) -> Any:
        grpc, pb = self.grpc, self.pb
        methods = {
            "ServerLive": (self.server_live, pb.ServerLiveRequest),
            "ServerReady": (self.server_ready, pb.ServerReadyRequest),
            "ModelReady": (self.model_ready, pb.ModelReadyRequest),
            "ServerMetadata": (self.server_metadata, pb.ServerMetadataRequest),
            "ModelMetadata": (self.model_metadata, pb.ModelMetadataRequest),
            "ModelConfig": (self.model_config, pb.ModelConfigRequest),
            "ModelInfer": (self.model_infer, pb.ModelInferRequest),
        }
        return grpc.method_handlers_generic_handler(SERVICE, {
            name: grpc.unary_unary_rpc_method_handler(
                fn, request_deserializer=req.FromString,
                response_serializer=lambda message: message.SerializeToString())
            for name, (fn, req) in methods.items()
        })  # fmt: skip


def address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def start(server: Any, host: str, port: int) -> tuple[Any, int]:
    """The gRPC server, started in the running event loop, and the port it listens on."""
    grpc = _grpc()
    cfg = server.cfg
    options = [
        ("grpc.so_reuseport", 0),  # a port already served is an error, not a silent share
        ("grpc.max_receive_message_length", cfg.max_body),
        ("grpc.max_send_message_length", -1),
    ]
    aio = grpc.aio.server(options=options, maximum_concurrent_rpcs=cfg.max_connections)
    service = Service(server)
    aio.add_generic_rpc_handlers((service.handler(),))
    server.grpc_callers = service.callers
    try:
        bound = aio.add_insecure_port(address(host, port))
    except RuntimeError as exc:
        bound, detail = 0, str(exc)
    else:
        detail = "the address is in use or cannot be bound"
    if not bound:
        raise ConfigError(f"cannot listen on {address(host, port)} (gRPC): {detail}")
    await aio.start()
    return aio, bound


__all__ = ["Service", "start", "parse", "answer", "http_to_code", "address", "SERVICE"]
