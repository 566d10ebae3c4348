"""`mnist-edge serve`: the model behind the Open Inference Protocol (KServe V2 / Triton REST),
with dynamic batching, and the web page beside it; one ASGI app (Starlette), served by uvicorn
here and by Ray Serve's ingress on a cluster.

    GET  /v2                                  server metadata (name, version, extensions)
    GET  /v2/health/live | /v2/health/ready   200, or 503 while the model loads or the server drains
    GET  /v2/models/{m}[/versions/{v}]        model metadata (inputs, outputs, the contract)
    GET  /v2/models/{m}[/versions/{v}]/ready
    GET  /v2/models/{m}[/versions/{v}]/config Triton's model configuration, as JSON
    POST /v2/models/{m}[/versions/{v}]/infer  FP32 (N, 1, 28, 28) or BYTES image files -> log_probs
    GET  /metrics                             Prometheus text (prometheus-client)
    GET  /...                                 the web export, when there is one

The model is loaded after the server listens (readiness says when it is there). The batcher
(batching.py) gathers requests into model calls. On SIGTERM or Ctrl-C the server drains:
readiness turns false, every request that comes is still answered (with `Connection: close`),
and once none has been in flight for DRAIN_QUIET_S (at most DRAIN_MAX_S after the signal) it
stops listening, finishes what it holds, and exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import re
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from . import grpc_api, http_limits, policy, protocol, spec
from . import threads as pools
from .batching import BatchConfig, Batcher, QueueFull
from .errors import ConfigError, InputError, MnistEdgeError, missing_dependency
from .images import MAX_IMAGE_PIXELS, prepare_image
from .machine import check_threads, has_module
from .predict import resolve_model
from .runtime import Predictor
from .web import ISOLATION_HEADERS, MIME, check_web_folder, static_file

PLATFORM = "onnxruntime_onnx"
DRAIN_QUIET_S = 0.3  # draining ends once no request has been in flight this long
DRAIN_MAX_S = 10.0  # or after this long, whatever comes
RETRY_AFTER_S = "1"


@dataclass(frozen=True)
class ServeConfig:
    """What to serve, where, and the limits."""

    model: str | None = None  # None: exports/mnist_cnn.onnx when it exists, else the packaged
    backend: str | None = None
    precision: str | None = None
    threads: int | None = None  # engine threads (default: threads.for_server)
    profile: str | None = None  # a deploy.json from tune
    web: str | None = None  # a web export to serve beside the API
    name: str = "mnist"  # the model's name in the protocol's URLs
    version: str = "1"
    host: str = "127.0.0.1"
    port: int = 8000  # 0: any free port
    grpc: bool = True  # the protocol's gRPC service beside REST
    grpc_port: int | None = None  # None: port + 1 (Triton's 8000/8001), any free one if port is 0
    batch: BatchConfig = field(default_factory=BatchConfig)
    max_body: int = policy.SERVE_MAX_BODY  # bytes
    max_request_images: int = policy.SERVE_MAX_REQUEST_IMAGES
    max_connections: int = policy.SERVE_MAX_CONNECTIONS
    timeout_s: float = policy.SERVE_TIMEOUT_S
    max_image_pixels: int = MAX_IMAGE_PIXELS
    verbose: bool = False  # log every request

    def __post_init__(self) -> None:
        check_threads(self.threads)
        checks = [
            (0 <= self.port <= 65535, f"--port must be 0..65535, got {self.port}"),
            (self.grpc_port is None or 0 <= self.grpc_port <= 65535,
             f"--grpc-port must be 0..65535, got {self.grpc_port}"),
            (not (self.grpc and self.port == 65535 and self.grpc_port is None),
             "--port 65535 leaves no port + 1 for gRPC: give --grpc-port or --no-grpc"),
            (self.max_body >= 1024, f"--max-body must be at least 1024 bytes, got "
                                    f"{self.max_body}"),
            (self.max_request_images >= 1, "--max-request-images must be at least 1"),
            (self.max_connections >= 1, "--max-connections must be at least 1"),
            (0 < self.timeout_s <= 3600 and math.isfinite(self.timeout_s),
             f"--timeout must be 0..3600 s, got {self.timeout_s}"),
            (bool(self.name) and "/" not in self.name, "--name must be a non-empty path part"),
        ]  # fmt: skip
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
        if self.grpc and self.port and self.grpc_target == self.port:
            raise ConfigError(f"--grpc-port {self.grpc_port} is the REST port too: give another")
        if self.profile is not None and (self.model or self.backend or self.precision):
            raise ConfigError("--profile names the model, backend and precision: drop --model, "
                              "--backend and --precision")  # fmt: skip

    @property
    def grpc_target(self) -> int:
        """The port gRPC asks for (0: any free one)."""
        if self.grpc_port is not None:
            return self.grpc_port
        return self.port + 1 if self.port else 0


class _Metrics:
    """The server's Prometheus metrics, in a registry of its own (several apps, one process)."""

    def __init__(self, depth: Callable[[], float], ready: Callable[[], float]) -> None:
        try:
            import prometheus_client as prom
        except ImportError:
            raise missing_dependency("prometheus_client", "mnist-edge serve") from None
        self.prom = prom
        self.registry = prom.CollectorRegistry()
        r = self.registry
        self.requests = prom.Counter("mnist_edge_requests", "HTTP requests by endpoint and "
                                     "status", ["endpoint", "status"], registry=r)  # fmt: skip
        self.latency = prom.Histogram(
            "mnist_edge_request_seconds", "Inference request latency, from the body read to "
            "the answer", registry=r,
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5),
        )  # fmt: skip
        self.batch = prom.Histogram(
            "mnist_edge_batch_images",
            "Images per model call",
            registry=r,
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
        )
        self.images = prom.Counter("mnist_edge_images", "Images answered", registry=r)
        queue = prom.Gauge("mnist_edge_queue_images", "Images waiting for or in a model call",
                           registry=r)  # fmt: skip
        queue.set_function(depth)
        ready_gauge = prom.Gauge("mnist_edge_ready", "1 when the model is loaded and the "
                                 "server is not draining", registry=r)  # fmt: skip
        ready_gauge.set_function(ready)

    def text(self) -> bytes:
        return self.prom.generate_latest(self.registry)


class ModelServer:
    """The protocol's state: the Predictor (loaded in the background), its batcher, the
    metrics, readiness and draining. `app` is the ASGI application."""

    def __init__(self, cfg: ServeConfig, predictor: Predictor | None = None) -> None:
        self.cfg = cfg
        self.web = None if cfg.web is None else check_web_folder(cfg.web)
        self.predictor = predictor
        self.batcher: Batcher | None = None
        self.load_error: MnistEdgeError | None = None
        self.draining = False
        self.drain_started = 0.0
        self.in_flight = 0
        self.open_connections: Callable[[], int] | None = None  # set by serve() (uvicorn)
        self.serve_grpc = False  # serve() turns it on: the gRPC service starts with the app
        self.grpc_callers: Callable[[], int] | None = None  # set by grpc_api.start
        self.grpc_address: str | None = None  # host:port, once it listens
        self.on_listen: Callable[[], None] | None = None  # once REST and gRPC both listen
        self.last_busy = time.monotonic()
        self.metrics = _Metrics(lambda: self.batcher.depth if self.batcher else 0.0,
                                lambda: float(self.ready))  # fmt: skip
        self.app = self._build()

    # --- state ----------------------------------------------------------------------------
    @property
    def ready(self) -> bool:
        return self.batcher is not None and not self.draining

    def load(self) -> None:
        """Load the model (unless given) and start the batcher; a failure is kept for the
        caller (the CLI reports it and exits 2)."""
        try:
            if self.predictor is None:
                self.predictor = open_predictor(self.cfg)
            runner = self.predictor.runner

            def on_batch(n: int, seconds: float) -> None:
                self.metrics.batch.observe(n)
                self.metrics.images.inc(n)

            self.batcher = Batcher(runner.run, self.cfg.batch, on_batch, expected=self.expected)
        except MnistEdgeError as exc:
            self.load_error = exc

    def expected(self) -> int:
        """Requests that may reach the batcher soon: those in the app, or, under uvicorn, the
        open connections (a request still unread in a socket is not in the app yet) and the
        gRPC clients calling lately (grpc_api.Service.callers)."""
        open_now = self.open_connections() if self.open_connections else 0
        callers = self.grpc_callers() if self.grpc_callers else 0
        return max(self.in_flight, open_now + callers)

    def close(self) -> None:
        if self.batcher is not None:
            self.batcher.close()

    def quiet(self) -> bool:
        """Time to stop: draining, and no request in flight for DRAIN_QUIET_S (or draining for
        DRAIN_MAX_S: a client that never pauses cannot hold the server up)."""
        if not self.draining:
            return False
        now = time.monotonic()
        if now - self.drain_started >= DRAIN_MAX_S:
            return True
        return not self.in_flight and now - self.last_busy >= DRAIN_QUIET_S

    # --- responses ------------------------------------------------------------------------
    def _respond(self, endpoint: str, status: int, body: bytes,
                 headers: dict[str, str] | None = None) -> Any:  # fmt: skip
        from starlette.responses import Response

        status, body, headers = self._counted(endpoint, status, body, headers)
        return Response(body, status_code=status, headers=headers)

    def _json(self, endpoint: str, obj: Any, status: int = 200) -> Any:
        return self._respond(endpoint, status, json.dumps(obj).encode())

    def _error(self, endpoint: str, message: str, status: int) -> Any:
        return self._respond(endpoint, status, protocol.error_body(message))

    # --- the protocol ---------------------------------------------------------------------
    def metadata(self) -> dict[str, Any]:
        contract = self.predictor.contract if self.predictor else spec.Contract()
        side = contract.image_size
        runner = self.predictor.runner if self.predictor else None
        return {
            "name": self.cfg.name, "versions": [self.cfg.version], "platform": PLATFORM,
            "inputs": [
                {"name": contract.input_name, "datatype": protocol.FP32,
                 "shape": [-1, spec.CHANNELS, side, side]},
                {"name": protocol.IMAGE_INPUT, "datatype": protocol.BYTES, "shape": [-1]},
            ],
            "outputs": [{"name": contract.output_name, "datatype": protocol.FP32,
                         "shape": [-1, spec.NUM_CLASSES]}],
            "parameters": {
                "mean": contract.mean, "std": contract.std, "pixel_scale": contract.pixel_scale,
                "labels": list(contract.class_labels),
                "inputs": f"send either {contract.input_name!r} (normalised pixels: "
                          "(pixel * pixel_scale - mean) / std) or "
                          f"{protocol.IMAGE_INPUT!r} (encoded image files)",
                "backend": runner.backend if runner else None,
                "precision": runner.precision if runner else None,
                "case": runner.name if runner else None,
            },
        }  # fmt: skip

    def config(self) -> dict[str, Any]:
        """Triton's model configuration for this model (what config.pbtxt says), as JSON."""
        contract = self.predictor.contract if self.predictor else spec.Contract()
        side = contract.image_size
        batch = self.cfg.batch
        out: dict[str, Any] = {
            "name": self.cfg.name, "platform": PLATFORM, "backend": "onnxruntime",
            "max_batch_size": batch.max_batch,
            "input": [{"name": contract.input_name, "data_type": "TYPE_FP32",
                       "dims": [spec.CHANNELS, side, side]}],
            "output": [{"name": contract.output_name, "data_type": "TYPE_FP32",
                        "dims": [spec.NUM_CLASSES]}],
            "instance_group": [{"count": 1, "kind": "KIND_CPU"}],
        }  # fmt: skip
        if batch.max_batch > 1:
            out["dynamic_batching"] = {"max_queue_delay_microseconds": batch.max_delay_us}
        return out

    def _model(self, params: dict[str, str]) -> str | None:
        """An error message when the URL names another model or version, else None."""
        if params.get("model") != self.cfg.name:
            return f"unknown model {params.get('model')!r}; this server serves {self.cfg.name!r}"
        version = params.get("version")
        if version is not None and version != self.cfg.version:
            return (f"unknown version {version!r} of {self.cfg.name!r}; it has "
                    f"{self.cfg.version!r}")  # fmt: skip
        return None

    async def _body(self, length: str | None, chunks: Any) -> bytes:
        if length is not None and length.isdigit() and int(length) > self.cfg.max_body:
            raise protocol.ProtocolError(f"the body of {int(length):,} bytes is over the limit "
                                         f"of {self.cfg.max_body:,} (--max-body)", 413)  # fmt: skip
        parts, size = [], 0
        async for chunk in chunks:
            size += len(chunk)
            if size > self.cfg.max_body:
                raise protocol.ProtocolError(
                    f"the body is over the limit of {self.cfg.max_body:,} bytes (--max-body)", 413
                )
            parts.append(chunk)
        return b"".join(parts)

    def _images(self, files: list[bytes]) -> np.ndarray:
        """Encoded image files -> normalised (N, 1, 28, 28), the way `predict` prepares them."""
        import io

        digits = []
        for i, raw in enumerate(files):
            try:
                from PIL import Image, UnidentifiedImageError

                with Image.open(io.BytesIO(raw)) as im:
                    w, h = im.size
                    if w * h > self.cfg.max_image_pixels:
                        raise InputError(f"{w}x{h} = {w * h:,} pixels, over the limit of "
                                         f"{self.cfg.max_image_pixels:,}")  # fmt: skip
                    im.load()
                    digits.append(prepare_image(im, max_pixels=self.cfg.max_image_pixels))
            except InputError as exc:
                raise protocol.ProtocolError(f"image {i}: {exc}") from None
            except Exception as exc:  # a decoder's every failure is the file's
                # Pillow's decoders raise many kinds for a malformed file (OSError, ValueError,
                # SyntaxError, struct.error, EOFError, DecompressionBombError...): each is a
                # file the client sent, never the server's fault
                kind = (
                    "not an image file Pillow can read"
                    if isinstance(exc, UnidentifiedImageError)
                    else f"not a readable image ({type(exc).__name__}: {exc})"[:160]
                )
                raise protocol.ProtocolError(f"image {i}: {kind}") from None  # fmt: skip
        return self.predictor.preprocess(np.stack(digits))

    def _counted(
        self, endpoint: str, status: int, body: bytes, headers: dict[str, str] | None = None
    ) -> tuple[int, bytes, dict[str, str]]:
        """(status, body, headers) of a response, counted, with the protocol's headers."""
        self.metrics.requests.labels(endpoint, str(status)).inc()
        headers = {"content-type": "application/json", **(headers or {})}
        if self.draining:
            headers["connection"] = "close"
        if status == 503:
            headers["retry-after"] = RETRY_AFTER_S
        return status, body, headers

    async def answer(self, params: dict[str, str], header: Callable[[str], str | None],
                     chunks: Any) -> tuple[int, bytes, dict[str, str]]:  # fmt: skip
        """An inference request -> (status, body, headers); `header(name)` reads a request
        header, `chunks` yields the body's parts."""
        if (problem := self._model(params)) is not None:
            return self._counted("infer", 404, protocol.error_body(problem))
        if self.batcher is None:  # while draining, requests are still answered
            return self._counted("infer", 503, protocol.error_body("not ready: the model is "
                                                                   "loading"))  # fmt: skip
        self.in_flight += 1
        t0 = time.perf_counter()
        reading = True
        try:
            async with asyncio.timeout(self.cfg.timeout_s):
                body = await self._body(header("content-length"), chunks)
                reading = False
                req = protocol.parse_request(body, header(protocol.HEADER_LENGTH),
                                             input_name=self.predictor.contract.input_name,
                                             max_batch=self.cfg.max_request_images)  # fmt: skip
                out = await self.run(req)
            payload, headers = protocol.response(self.cfg.name, self.cfg.version, req, out)
            self.metrics.latency.observe(time.perf_counter() - t0)
            return self._counted("infer", 200, payload, headers)
        except protocol.ProtocolError as exc:
            return self._counted("infer", exc.status, protocol.error_body(str(exc)))
        except QueueFull as exc:
            return self._counted("infer", 503, protocol.error_body(f"busy: {exc}"))
        except TimeoutError:
            if reading:  # the client's body did not come in time: its fault, 408
                return self._counted("infer", 408, protocol.error_body(
                    f"the body did not arrive within {self.cfg.timeout_s:g} s (--timeout)"),
                    {"connection": "close"})  # fmt: skip
            return self._counted("infer", 504, protocol.error_body(
                f"no answer within {self.cfg.timeout_s:g} s (--timeout)"))  # fmt: skip
        except MnistEdgeError as exc:
            return self._counted("infer", 400, protocol.error_body(str(exc)))
        finally:
            self.in_flight -= 1
            self.last_busy = time.monotonic()

    async def run(self, req: protocol.Request, inline: bool = True) -> np.ndarray:
        """A parsed request's (N, 10) answer: image files prepared as `predict` prepares
        them, then the batcher (Batcher.submit says what `inline` means). REST and gRPC both
        come here."""
        x = (await asyncio.to_thread(self._images, req.tensor)
             if req.kind == protocol.BYTES else req.tensor)  # fmt: skip
        return await self.batcher.submit(x, inline)

    async def infer(self, request: Any) -> Any:
        """The infer route, through Starlette (for a host that bypasses _FastInfer)."""
        from starlette.responses import Response

        status, body, headers = await self.answer(request.path_params, request.headers.get,
                                                  request.stream())  # fmt: skip
        return Response(body, status_code=status, headers=headers)

    def _build(self) -> Any:
        try:
            from starlette.applications import Starlette
            from starlette.routing import Route
        except ImportError:
            raise missing_dependency("starlette", "mnist-edge serve") from None

        async def server_meta(request: Any) -> Any:
            return self._json("metadata", {"name": "mnist-edge", "version": __version__,
                                           "extensions": ["binary_tensor_data",
                                                          "model_configuration"]})  # fmt: skip

        async def live(request: Any) -> Any:
            return self._json("health", {"live": True})

        async def ready(request: Any) -> Any:
            return self._json("health", {"ready": self.ready}, 200 if self.ready else 503)

        async def model_meta(request: Any) -> Any:
            if (problem := self._model(request.path_params)) is not None:
                return self._error("metadata", problem, 404)
            return self._json("metadata", self.metadata())

        async def model_ready(request: Any) -> Any:
            if (problem := self._model(request.path_params)) is not None:
                return self._error("health", problem, 404)
            return self._json("health", {"name": self.cfg.name, "ready": self.ready},
                              200 if self.ready else 503)  # fmt: skip

        async def model_config(request: Any) -> Any:
            if (problem := self._model(request.path_params)) is not None:
                return self._error("metadata", problem, 404)
            return self._json("metadata", self.config())

        async def metrics(request: Any) -> Any:
            from starlette.responses import Response

            return Response(self.metrics.text(), media_type="text/plain; version=0.0.4")

        async def page(request: Any) -> Any:
            from starlette.responses import Response

            if INFER_PATH.match(request.url.path):  # the API's, not a page: POST only
                return self._respond("infer", 405, protocol.error_body(
                    "inference takes POST"), {"allow": "POST"})  # fmt: skip
            target = None if self.web is None else static_file(self.web, request.url.path)
            if target is None:
                return Response(b"404 not found\n", 404, headers=ISOLATION_HEADERS,
                                media_type="text/plain; charset=utf-8")  # fmt: skip
            data = await asyncio.to_thread(target.read_bytes)
            mime = MIME.get(target.suffix.lower(), "application/octet-stream")
            body = b"" if request.method == "HEAD" else data
            return Response(body, headers={**ISOLATION_HEADERS, "content-length": str(len(data))},
                            media_type=mime)  # fmt: skip

        model = "/v2/models/{model}"
        versioned = "/v2/models/{model}/versions/{version}"
        routes = [
            Route("/v2", server_meta),
            Route("/v2/health/live", live),
            Route("/v2/health/ready", ready),
            Route("/metrics", metrics),
        ]
        for base in (model, versioned):
            routes += [
                Route(base, model_meta),
                Route(base + "/ready", model_ready),
                Route(base + "/config", model_config),
                Route(base + "/infer", self.infer, methods=["POST"]),
            ]
        routes.append(Route("/{path:path}", page, methods=["GET", "HEAD"]))

        @contextlib.asynccontextmanager
        async def lifespan(app: Any):
            rpc = None
            if self.serve_grpc:
                try:
                    rpc, port = await grpc_api.start(self, self.cfg.host, self.cfg.grpc_target)
                    self.grpc_address = grpc_api.address(self.cfg.host, port)
                except MnistEdgeError as exc:  # the server ends at its next tick, in one line
                    self.load_error = exc
            if self.load_error is None:
                if self.on_listen:
                    self.on_listen()
                if self.batcher is None:  # not loaded already (a Ray Serve replica loads first)
                    loader = threading.Thread(target=self.load, name="mnist-edge-load",
                                              daemon=True)  # fmt: skip
                    loader.start()
            try:
                yield
            finally:
                if rpc is not None:  # new calls now get UNAVAILABLE; calls in flight finish
                    await rpc.stop(self.cfg.timeout_s)
                self.close()

        return _FastInfer(Starlette(routes=routes, lifespan=lifespan), self)


INFER_PATH = re.compile(r"^/v2/models/([^/]+)(?:/versions/([^/]+))?/infer$")


class _FastInfer:
    """The ASGI app: inference requests go straight to ModelServer.answer, everything else to
    Starlette, whose request and response objects and middleware took ~17% of the server's
    samples at 1,100 requests/s (py-spy)."""

    def __init__(self, app: Any, server: ModelServer) -> None:
        self.app, self.server = app, server

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        match = INFER_PATH.match(scope.get("path", "")) if scope["type"] == "http" else None
        if match is None or scope.get("method") != "POST":
            return await self.app(scope, receive, send)
        model, version = match.groups()
        params = {"model": model} | ({"version": version} if version else {})
        headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                   for k, v in scope.get("headers", [])}  # fmt: skip

        async def chunks() -> Any:
            more = True
            while more:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise protocol.ProtocolError("the client went away", 400)
                more = message.get("more_body", False)
                yield message.get("body", b"")

        status, body, out = await self.server.answer(params, headers.get, chunks())
        out["content-length"] = str(len(body))
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(k.encode(), v.encode()) for k, v in out.items()],
            }
        )
        await send({"type": "http.response.body", "body": body})


def open_predictor(cfg: ServeConfig) -> Predictor:
    """The Predictor the config names, with the engine threads threads.for_server gives it."""
    if cfg.profile is not None:
        extra = {"threads": cfg.threads} if cfg.threads else {}
        return Predictor.from_profile(cfg.profile, **extra)
    path, _ = resolve_model(cfg.model)
    plan = pools.for_server(cfg.threads)
    return Predictor(path, threads=plan.intra_op, backend=cfg.backend, precision=cfg.precision,
                     spin=plan.spin)  # fmt: skip


def listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket (port 0: any free one), refused in one line when it cannot be."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP named, so that asyncio sets TCP_NODELAY on every accepted connection (it
    # checks the protocol); set on the listener too, which Linux passes on. Without it a
    # response's second write waits for the client's delayed ACK: 44 ms a request, measured.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.set_inheritable(True)
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


def serve(cfg: ServeConfig, on_start: Callable[[str, ModelServer], None] | None = None,
          on_ready: Callable[[ModelServer], None] | None = None) -> ModelServer:  # fmt: skip
    """Serve until SIGTERM or Ctrl-C, then drain (every request that comes is answered) and
    return. A model that cannot be loaded ends the server and raises its error."""
    try:
        import uvicorn
    except ImportError:
        raise missing_dependency("uvicorn", "mnist-edge serve") from None
    server = ModelServer(cfg)
    sock = listen(cfg.host, cfg.port)
    http = http_limits.protocol_class() if has_module("httptools") else "h11"
    config = uvicorn.Config(server.app, log_level="info" if cfg.verbose else "error",
                            access_log=cfg.verbose, lifespan="on",
                            http=http, limit_concurrency=cfg.max_connections,
                            timeout_keep_alive=5, timeout_graceful_shutdown=cfg.timeout_s,
                            server_header=False, date_header=False,
                            loop="asyncio" if cfg.grpc else "auto")  # fmt: skip
    runner = _Uvicorn(config, server, on_ready)
    server.open_connections = lambda: len(runner.server_state.connections)
    server.serve_grpc = cfg.grpc
    url = url_of(sock)
    if on_start:
        server.on_listen = lambda: on_start(url, server)
    try:
        runner.run(sockets=[sock])
    finally:
        sock.close()
    if server.load_error is not None:
        raise server.load_error
    return server


def _uvicorn_server() -> type:
    import uvicorn

    return uvicorn.Server


class _Uvicorn:
    """uvicorn's Server, draining on a signal instead of stopping at once (see the module
    docstring), and ending when the model cannot be loaded."""

    def __new__(cls, config: Any, model: ModelServer, on_ready: Any) -> Any:
        base = _uvicorn_server()

        class Server(base):  # type: ignore[misc, valid-type]
            announced = False

            def handle_exit(self, sig: int, frame: Any) -> None:
                if model.draining:  # a second signal: stop now
                    self.force_exit = self.should_exit = True
                    return
                model.drain_started = model.last_busy = time.monotonic()
                model.draining = True

            async def on_tick(self, counter: int) -> bool:
                if model.load_error is not None:
                    return True
                if model.ready and not self.announced:
                    self.announced = True
                    if on_ready:
                        on_ready(model)
                if model.quiet():
                    return True
                return await super().on_tick(counter)

        return Server(config)


def default_web(folder: str | None) -> str | None:
    """The web export to serve: `folder` when given, else exports/web when it is one."""
    if folder is not None:
        return folder
    here = Path("exports") / "web"
    return str(here) if (here / "index.html").is_file() else None


__all__ = ["ServeConfig", "ModelServer", "serve", "listen", "url_of", "default_web",
           "open_predictor"]  # fmt: skip
