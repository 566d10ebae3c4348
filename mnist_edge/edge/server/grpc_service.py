"""The protocol's gRPC service, `inference.GRPCInferenceService`, served beside REST by the
same process, in the same event loop, on the same ModelServer: one batcher, one set of metrics,
one readiness, one drain.

    ServerLive, ServerReady, ModelReady, ServerMetadata, ModelMetadata, ModelConfig, ModelInfer,
    ModelStatistics, RepositoryIndex, RepositoryModelLoad, RepositoryModelUnload

Messages are Triton's (../proto/, a superset of the Open Inference Protocol's with the same
field numbers), so tritonclient's gRPC client and any client built from either proto file talk
to it; grpc_codec.py reads and writes them. Methods not listed answer UNIMPLEMENTED. BYTES
image files go through the same pipeline as over REST.

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

from ..errors import ConfigError, MnistEdgeError, missing_dependency
from ..proto import grpc_service_pb2, model_config_pb2
from . import auth, grpc_codec, tls
from .batcher import QueueFull, Times
from .model_server import ModelServer
from .tensors import ProtocolError

SERVICE = "inference.GRPCInferenceService"
TRACE_KEYS = ("traceparent", "tracestate", "baggage")  # W3C trace context (tracing.py)
# the codes that mark a span an error, as a 5xx does over REST (the rest are the client's)
SERVER_FAULTS = ("UNAVAILABLE", "RESOURCE_EXHAUSTED", "DEADLINE_EXCEEDED", "INTERNAL", "UNKNOWN")
CALLER_WINDOW_S = 0.5  # a client connection that called this recently may call again soon


def _grpc() -> Any:
    try:
        import grpc
    except ImportError:
        raise missing_dependency("grpcio", "mnist-edge serve's gRPC service") from None
    return grpc


def http_to_code(status: int) -> Any:
    """The gRPC status code for a REST status (the same refusal, said the gRPC way)."""
    code = _grpc().StatusCode
    codes = {400: code.INVALID_ARGUMENT, 401: code.UNAUTHENTICATED, 403: code.PERMISSION_DENIED,
             404: code.NOT_FOUND, 413: code.RESOURCE_EXHAUSTED, 503: code.UNAVAILABLE,
             504: code.DEADLINE_EXCEEDED}  # fmt: skip
    return codes.get(status, code.INVALID_ARGUMENT)


class Service:
    """The RPCs, each an async function of (request, context) on the ModelServer's state."""

    def __init__(self, server: ModelServer) -> None:
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

    def _count(self, model: str, method: str, code: Any) -> None:
        self.server.metrics.count(model, f"grpc.{method}", code.name)

    async def _refuse(self, context: Any, model: str, method: str, code: Any,
                      message: str) -> None:  # fmt: skip
        self._count(model, method, code)
        await context.abort(code, message)

    async def _known(self, context: Any, method: str, name: str, version: str) -> None:
        params = {"model": name} | ({"version": version} if version else {})
        if (problem := self.server.known(params)) is not None:
            await self._refuse(context, "", method, self.grpc.StatusCode.NOT_FOUND, problem)

    async def server_live(self, request: Any, context: Any) -> Any:
        self._count("", "ServerLive", self.grpc.StatusCode.OK)
        return self.pb.ServerLiveResponse(live=True)

    async def server_ready(self, request: Any, context: Any) -> Any:
        self._count("", "ServerReady", self.grpc.StatusCode.OK)
        return self.pb.ServerReadyResponse(ready=self.server.ready)

    async def model_ready(self, request: Any, context: Any) -> Any:
        await self._known(context, "ModelReady", request.name, request.version)
        self._count(request.name, "ModelReady", self.grpc.StatusCode.OK)
        return self.pb.ModelReadyResponse(ready=self.server.model_ready(request.name))

    async def server_metadata(self, request: Any, context: Any) -> Any:
        self._count("", "ServerMetadata", self.grpc.StatusCode.OK)
        return self.pb.ServerMetadataResponse(**self.server.server_metadata())

    async def model_metadata(self, request: Any, context: Any) -> Any:
        await self._known(context, "ModelMetadata", request.name, request.version)
        meta = self.server.metadata(request.name)
        tensor = self.pb.ModelMetadataResponse.TensorMetadata
        self._count(request.name, "ModelMetadata", self.grpc.StatusCode.OK)
        return self.pb.ModelMetadataResponse(
            name=meta["name"], versions=meta["versions"], platform=meta["platform"],
            inputs=[tensor(name=t["name"], datatype=t["datatype"], shape=t["shape"])
                    for t in meta["inputs"]],
            outputs=[tensor(name=t["name"], datatype=t["datatype"], shape=t["shape"])
                     for t in meta["outputs"]],
        )  # fmt: skip

    async def model_config(self, request: Any, context: Any) -> Any:
        from google.protobuf import json_format

        await self._known(context, "ModelConfig", request.name, request.version)
        config = json_format.ParseDict(self.server.config(request.name), self.mc.ModelConfig())
        self._count(request.name, "ModelConfig", self.grpc.StatusCode.OK)
        return self.pb.ModelConfigResponse(config=config)

    async def model_statistics(self, request: Any, context: Any) -> Any:
        from google.protobuf import json_format

        name, version = request.name, request.version or None
        if name:
            await self._known(context, "ModelStatistics", name, request.version)
        found = self.server.statistics(name or None, version)
        self._count(name, "ModelStatistics", self.grpc.StatusCode.OK)
        return json_format.ParseDict(found, self.pb.ModelStatisticsResponse())

    async def repository_index(self, request: Any, context: Any) -> Any:
        index = self.pb.RepositoryIndexResponse.ModelIndex
        rows = self.server.models.index(request.ready)
        self._count("", "RepositoryIndex", self.grpc.StatusCode.OK)
        return self.pb.RepositoryIndexResponse(models=[index(**row) for row in rows])

    async def _repository_call(self, action: str, request: Any, context: Any) -> None:
        method = f"RepositoryModel{action.title()}"
        unknown = sorted(k for k in request.parameters if k != "unload_dependents")
        failure = None
        if unknown:
            failure = (self.grpc.StatusCode.INVALID_ARGUMENT,
                       f"parameters {unknown!r} are not supported: this server loads a model "
                       "from its file or folder")  # fmt: skip
        else:
            try:
                await self.server.change(action, request.model_name)
            except ProtocolError as exc:
                failure = http_to_code(exc.status), str(exc)
        if failure is not None:
            await self._refuse(context, request.model_name, method, *failure)
        self._count(request.model_name, method, self.grpc.StatusCode.OK)

    async def repository_model_load(self, request: Any, context: Any) -> Any:
        await self._repository_call("load", request, context)
        return self.pb.RepositoryModelLoadResponse()

    async def repository_model_unload(self, request: Any, context: Any) -> Any:
        await self._repository_call("unload", request, context)
        return self.pb.RepositoryModelUnloadResponse()

    async def model_infer(self, request: Any, context: Any) -> Any:
        server, code = self.server, self.grpc.StatusCode
        name, version = request.model_name, request.model_version or None
        await self._known(context, "ModelInfer", name, request.model_version)
        if server.draining:  # gRPC's way: the call was not run, a client may retry elsewhere
            await self._refuse(context, name, "ModelInfer", code.UNAVAILABLE,
                               "the server is shutting down")  # fmt: skip
        self._callers[context.peer()] = time.monotonic()
        server.enter()
        t0 = time.perf_counter()
        failure: tuple[Any, str] | None = None
        served, ran, times = None, False, Times()
        try:
            async with asyncio.timeout(server.cfg.timeout_s):
                served = server.take(name, version)
                times.version = served.version
                req = grpc_codec.parse(request, input_name=served.predictor.contract.input_name,
                                       max_batch=server.cfg.max_request_images)  # fmt: skip
                times.input_s = time.perf_counter() - t0
                # always through the batcher's thread: a call run inline holds the event
                # loop, and grpc.aio hands over the calls behind it (from other connections
                # or the same one) only once it is done, so they could never join a batch
                out = await server.run(served, req, inline=False, times=times)
                ran = True
        except ProtocolError as exc:
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
            if served is not None:
                if not ran:
                    served.stats.failed(time.perf_counter() - t0)
                server.release(served)
            server.leave()
        if failure is not None:
            self._trace(name, t0, times, failure[0], context)
            await self._refuse(context, name, "ModelInfer", *failure)
        t_out = time.perf_counter()
        labels = served.predictor.contract.class_labels
        reply = grpc_codec.answer(request, name, served.version, out, labels, req.classification)
        t1 = time.perf_counter()
        times.output_s, times.images = t1 - t_out, len(out)
        served.stats.succeeded(times, t1 - t0, len(out))
        server.metrics.latency.labels(name).observe(t1 - t0)
        self._count(name, "ModelInfer", code.OK)
        self._trace(name, t0, times, code.OK, context)
        return reply

    def _trace(self, name: str, t0: float, times: Times, code: Any, context: Any) -> None:
        """The call's spans (tracing.py), its parent from the W3C trace context metadata."""
        tracing = self.server.tracing
        if tracing is None:
            return
        carrier = {k: v for k, v in context.invocation_metadata() or ()
                   if k in TRACE_KEYS and isinstance(v, str)}  # fmt: skip
        asyncio.get_running_loop().call_soon(
            tracing.record, "grpc", name, t0, time.perf_counter(), times, code.name,
            code.name not in SERVER_FAULTS, carrier)  # fmt: skip

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
            "ModelStatistics": (self.model_statistics, pb.ModelStatisticsRequest),
            "RepositoryIndex": (self.repository_index, pb.RepositoryIndexRequest),
            "RepositoryModelLoad": (self.repository_model_load, pb.RepositoryModelLoadRequest),
            "RepositoryModelUnload": (
                self.repository_model_unload,
                pb.RepositoryModelUnloadRequest,
            ),
        }
        return grpc.method_handlers_generic_handler(SERVICE, {
            name: grpc.unary_unary_rpc_method_handler(
                fn, request_deserializer=req.FromString,
                response_serializer=lambda message: message.SerializeToString())
            for name, (fn, req) in methods.items()
        })  # fmt: skip


def key_check(keys: auth.Keys, service: Service) -> Any:
    """The keys (auth.py) over gRPC, as a server interceptor: a call without the key its method
    needs is refused UNAUTHENTICATED or PERMISSION_DENIED before its message is read. Installed
    only when keys are configured (an interceptor costs every call a little)."""
    grpc = service.grpc

    class KeyCheck(grpc.aio.ServerInterceptor):
        async def intercept_service(self, continuation: Any, details: Any) -> Any:
            metadata: dict[str, str] = {}
            for key, value in details.invocation_metadata or ():
                if isinstance(value, str):  # binary (-bin) entries carry no key
                    metadata.setdefault(key.lower(), value)
            needed = auth.grpc_scope(details.method)
            refusal = keys.refusal(needed, auth.presented_key(metadata.get))
            if refusal is None:
                return await continuation(details)
            code, message = http_to_code(refusal[0]), refusal[1]
            method = details.method.rsplit("/", 1)[-1]

            async def refuse(request: Any, context: Any) -> Any:
                await service._refuse(context, "", method, code, message)

            return grpc.unary_unary_rpc_method_handler(refuse)

    return KeyCheck()


def address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def start(server: ModelServer, host: str, port: int) -> tuple[Any, int]:
    """The gRPC server, started in the running event loop, and the port it listens on."""
    grpc = _grpc()
    cfg = server.cfg
    options = [
        # a port already served is an error, not a silent share, unless the workers share it
        ("grpc.so_reuseport", 1 if server.reuse_port else 0),
        ("grpc.max_receive_message_length", cfg.max_body),
        ("grpc.max_send_message_length", -1),
        # gRPC core's tuning for throughput over latency: in 8 alternating runs at concurrency
        # 64 (h2load, 2 workers, 2 cores) gRPC served 0.95x REST binary's requests/s on mean
        # against 0.88x with the default, better in 6 of the 8 pairs: a small gain, near the
        # noise of a shared machine; latency at concurrency 1 did not change measurably
        ("grpc.optimization_target", "throughput"),
    ]
    service = Service(server)
    keys = cfg.keys
    interceptors = [key_check(keys, service)] if keys.enabled else []
    aio = grpc.aio.server(options=options, maximum_concurrent_rpcs=cfg.max_connections,
                          interceptors=interceptors)  # fmt: skip
    aio.add_generic_rpc_handlers((service.handler(),))
    server.grpc_callers = service.callers
    try:
        if cfg.tls_cert:
            creds = tls.grpc_credentials(grpc, cfg.tls_cert, cfg.tls_key, cfg.tls_client_ca)
            bound = aio.add_secure_port(address(host, port), creds)
        else:
            bound = aio.add_insecure_port(address(host, port))
    except RuntimeError as exc:
        bound, detail = 0, str(exc)
    else:
        detail = "the address is in use or cannot be bound"
    if not bound:
        raise ConfigError(f"cannot listen on {address(host, port)} (gRPC): {detail}")
    await aio.start()
    return aio, bound


__all__ = ["Service", "key_check", "start", "http_to_code", "address", "SERVICE"]
