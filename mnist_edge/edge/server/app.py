"""The REST side of the server: one ASGI app (Starlette) on a ModelServer, served by uvicorn here
(host.py) and by Ray Serve's ingress on a cluster.

    GET  /v2                                  server metadata (name, version, extensions)
    GET  /v2/health/live | /v2/health/ready   200, or 503 while models load or the server drains
    GET  /v2/models/{m}[/versions/{v}]        model metadata (inputs, outputs, the contract)
    GET  /v2/models/{m}[/versions/{v}]/ready  200, or 503 while it loads or once it is unloaded
    GET  /v2/models/{m}[/versions/{v}]/config Triton's model configuration, as JSON
    POST /v2/models/{m}[/versions/{v}]/infer  FP32 (N, 1, 28, 28) or BYTES image files -> log_probs
    GET  /v2/models[/{m}[/versions/{v}]]/stats counts and cumulative times, Triton's (stats.py)
    POST /v2/repository/index                 the models, their versions and states
    POST /v2/repository/models/{m}/load       load a model, or reload it (a changed file)
    POST /v2/repository/models/{m}/unload     stop serving it (requests in flight are answered)
    GET  /metrics                             Prometheus text, per model (metrics.py)
    GET  /...                                 the web export, when there is one

With keys configured (auth.py), everything but health, /metrics and the web export needs an
inference key, and load and unload an admin key (_Guard). Bodies are read and answered by
rest_codec.py; the models are the ModelServer's. The lifespan
starts the gRPC service beside REST, loads the models after the server listens (readiness says
when they are there) and reloads them on SIGHUP (models.py says how a reload keeps every
request).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import orjson

from ..errors import MnistEdgeError, missing_dependency
from ..web import ISOLATION_HEADERS, MIME, static_file
from . import auth, grpc_service, rest_codec
from .batcher import QueueFull, Times
from .model_server import ModelServer
from .tensors import ProtocolError

RETRY_AFTER_S = "1"
INFER_PATH = re.compile(r"^/v2/models/([^/]+)(?:/versions/([^/]+))?/infer$")
POST_ONLY = re.compile(r"^/v2/(?:models/[^/]+(?:/versions/[^/]+)?/infer|repository/index"
                       r"|repository/models/[^/]+/(?:load|unload))$")  # fmt: skip
Answer = tuple[int, bytes, dict[str, str]]


def counted(server: ModelServer, model: str, endpoint: str, status: int, body: bytes,
            headers: dict[str, str] | None = None) -> Answer:  # fmt: skip
    """(status, body, headers) of a response, counted, with the protocol's headers."""
    server.metrics.count(model, endpoint, status)
    headers = {"content-type": "application/json", **(headers or {})}
    if server.draining:
        headers["connection"] = "close"
    if status == 503:
        headers["retry-after"] = RETRY_AFTER_S
    return status, body, headers


async def read_body(server: ModelServer, length: str | None, chunks: Any) -> bytes:
    limit = server.cfg.max_body
    if length is not None and length.isdigit() and int(length) > limit:
        raise ProtocolError(f"the body of {int(length):,} bytes is over the limit of {limit:,} "
                            "(--max-body)", 413)  # fmt: skip
    parts, size = [], 0
    async for chunk in chunks:
        size += len(chunk)
        if size > limit:
            raise ProtocolError(f"the body is over the limit of {limit:,} bytes (--max-body)", 413)
        parts.append(chunk)
    return b"".join(parts)


TRACE_HEADERS = ("traceparent", "tracestate", "baggage")  # W3C trace context (tracing.py)


async def answer(server: ModelServer, params: dict[str, str], header: Callable[[str], str | None],
                 chunks: Any) -> Answer:  # fmt: skip
    """An inference request -> (status, body, headers); `header(name)` reads a request
    header, `chunks` yields the body's parts."""
    if server.tracing is None:
        return await _answer(server, params, header, chunks, Times())
    t0, times = time.perf_counter(), Times()
    out = await _answer(server, params, header, chunks, times)
    carrier = {k: v for k in TRACE_HEADERS if (v := header(k))}
    # made on the event loop's next turn, once the reply is written (tracing.py)
    asyncio.get_running_loop().call_soon(
        server.tracing.record, "rest", params.get("model", ""), t0, time.perf_counter(), times,
        out[0], out[0] < 500, carrier)  # fmt: skip
    return out


async def _answer(
    server: ModelServer,
    params: dict[str, str],
    header: Callable[[str], str | None],
    chunks: Any,
    times: Times,
) -> Answer:
    name, version = params.get("model", ""), params.get("version")
    if (problem := server.known(params)) is not None:
        return counted(server, "", "infer", 404, rest_codec.error_body(problem))
    server.enter()
    t0 = time.perf_counter()
    reading, served, answered = True, None, False
    try:
        async with asyncio.timeout(server.cfg.timeout_s):
            body = await read_body(server, header("content-length"), chunks)
            reading = False
            served = server.take(name, version)
            times.version = served.version
            t_in = time.perf_counter()
            req = rest_codec.parse_request(
                body, header(rest_codec.HEADER_LENGTH),
                input_name=served.predictor.contract.input_name,
                max_batch=server.cfg.max_request_images,
            )  # fmt: skip
            times.input_s = time.perf_counter() - t_in
            out = await server.run(served, req, times=times)
            times.images = len(out)
        t_out = time.perf_counter()
        payload, headers = rest_codec.response(name, served.version, req, out,
                                               served.predictor.contract.class_labels)  # fmt: skip
        t1 = time.perf_counter()
        times.output_s = t1 - t_out
        served.stats.succeeded(times, t1 - t0, len(out))
        answered = True
        server.metrics.latency.labels(name).observe(t1 - t0)
        return counted(server, name, "infer", 200, payload, headers)
    except ProtocolError as exc:
        return counted(server, name, "infer", exc.status, rest_codec.error_body(str(exc)))
    except QueueFull as exc:
        return counted(server, name, "infer", 503, rest_codec.error_body(f"busy: {exc}"))
    except TimeoutError:
        if reading:  # the client's body did not come in time: its fault, 408
            return counted(server, name, "infer", 408, rest_codec.error_body(
                f"the body did not arrive within {server.cfg.timeout_s:g} s (--timeout)"),
                {"connection": "close"})  # fmt: skip
        return counted(server, name, "infer", 504, rest_codec.error_body(
            f"no answer within {server.cfg.timeout_s:g} s (--timeout)"))  # fmt: skip
    except MnistEdgeError as exc:
        return counted(server, name, "infer", 400, rest_codec.error_body(str(exc)))
    finally:
        if served is not None:
            if not answered:
                served.stats.failed(time.perf_counter() - t0)
            server.release(served)
        server.leave()


async def _json_object(server: ModelServer, request: Any) -> dict[str, Any]:
    """A repository call's body: empty, or a JSON object (ProtocolError 400 otherwise, 413 over
    --max-body)."""
    from starlette.requests import ClientDisconnect

    try:
        async with asyncio.timeout(server.cfg.timeout_s):
            body = await read_body(server, request.headers.get("content-length"),
                                   request.stream())  # fmt: skip
    except ClientDisconnect:
        raise ProtocolError("the client went away") from None
    if not body.strip():
        return {}
    try:
        obj = orjson.loads(body)
    except (ValueError, RecursionError):
        raise ProtocolError("the body is not JSON") from None
    if not isinstance(obj, dict):
        raise ProtocolError("the body must be a JSON object")
    params = obj.get("parameters") or {}
    if not isinstance(params, dict):
        raise ProtocolError("'parameters' must be an object")
    unknown = sorted(k for k in params if k != "unload_dependents")
    if unknown:
        raise ProtocolError(f"parameters {unknown!r} are not supported: this server loads a "
                            "model from its file or folder")  # fmt: skip
    return obj


def build(server: ModelServer) -> Any:
    """The ASGI app serving `server`."""
    try:
        from starlette.applications import Starlette
        from starlette.responses import Response
        from starlette.routing import Route
    except ImportError:
        raise missing_dependency("starlette", "mnist-edge serve") from None

    def respond(model: str, endpoint: str, status: int, body: bytes,
                headers: dict[str, str] | None = None) -> Any:  # fmt: skip
        status, body, headers = counted(server, model, endpoint, status, body, headers)
        return Response(body, status_code=status, headers=headers)

    def as_json(model: str, endpoint: str, obj: Any, status: int = 200) -> Any:
        return respond(model, endpoint, status, orjson.dumps(obj))

    def error(model: str, endpoint: str, message: str, status: int) -> Any:
        return respond(model, endpoint, status, rest_codec.error_body(message))

    async def server_meta(request: Any) -> Any:
        return as_json("", "metadata", server.server_metadata())

    async def live(request: Any) -> Any:
        return as_json("", "health", {"live": True})

    async def ready(request: Any) -> Any:
        return as_json("", "health", {"ready": server.ready}, 200 if server.ready else 503)

    def model_route(endpoint: str, body: Callable[[str], tuple[Any, int]]) -> Callable:
        async def route(request: Any) -> Any:
            params = request.path_params
            if (problem := server.known(params)) is not None:
                return error("", endpoint, problem, 404)
            obj, status = body(params["model"])
            return as_json(params["model"], endpoint, obj, status)

        return route

    async def statistics(request: Any) -> Any:
        params = request.path_params
        if "model" in params and (problem := server.known(params)) is not None:
            return error("", "stats", problem, 404)
        name = params.get("model")
        return as_json(name or "", "stats", server.statistics(name, params.get("version")))

    def model_ready(name: str) -> tuple[Any, int]:
        ok = server.model_ready(name)
        return {"name": name, "ready": ok}, 200 if ok else 503

    async def infer(request: Any) -> Any:  # for a host that bypasses _FastInfer
        status, body, headers = await answer(server, request.path_params, request.headers.get,
                                             request.stream())  # fmt: skip
        return Response(body, status_code=status, headers=headers)

    async def index(request: Any) -> Any:
        try:
            obj = await _json_object(server, request)
        except ProtocolError as exc:
            return error("", "repository", str(exc), exc.status)
        except TimeoutError:
            return error("", "repository", "the body did not arrive in time", 408)
        return as_json("", "repository", server.models.index(bool(obj.get("ready", False))))

    def repository_call(action: str) -> Callable:
        async def route(request: Any) -> Any:
            name = request.path_params["model"]
            try:
                await _json_object(server, request)
            except ProtocolError as exc:
                return error(name, action, str(exc), exc.status)
            except TimeoutError:
                return error(name, action, "the body did not arrive in time", 408)
            try:
                await server.change(action, name)
            except ProtocolError as exc:
                return error(name, action, str(exc), exc.status)
            return as_json(name, action, {})

        return route

    async def metrics(request: Any) -> Any:
        return Response(server.metrics.text(), media_type="text/plain; version=0.0.4")

    async def page(request: Any) -> Any:
        if POST_ONLY.match(request.url.path):  # the API's, not a page: POST only
            return respond("", "method", 405, rest_codec.error_body("this endpoint takes POST"),
                           {"allow": "POST"})  # fmt: skip
        target = None if server.web is None else static_file(server.web, request.url.path)
        if target is None:
            return Response(b"404 not found\n", 404, headers=ISOLATION_HEADERS,
                            media_type="text/plain; charset=utf-8")  # fmt: skip
        data = await asyncio.to_thread(target.read_bytes)
        mime = MIME.get(target.suffix.lower(), "application/octet-stream")
        body = b"" if request.method == "HEAD" else data
        return Response(body, headers={**ISOLATION_HEADERS, "content-length": str(len(data))},
                        media_type=mime)  # fmt: skip

    routes = [
        Route("/v2", server_meta),
        Route("/v2/health/live", live),
        Route("/v2/health/ready", ready),
        Route("/metrics", metrics),
        Route("/v2/repository/index", index, methods=["POST"]),
        Route("/v2/repository/models/{model}/load", repository_call("load"), methods=["POST"]),
        Route("/v2/repository/models/{model}/unload", repository_call("unload"),
              methods=["POST"]),
    ]  # fmt: skip
    routes.append(Route("/v2/models/stats", statistics))  # before /v2/models/{model}
    for base in ("/v2/models/{model}", "/v2/models/{model}/versions/{version}"):
        routes += [
            Route(base + "/stats", statistics),
            Route(base, model_route("metadata", lambda m: (server.metadata(m), 200))),
            Route(base + "/ready", model_route("health", model_ready)),
            Route(base + "/config", model_route("metadata", lambda m: (server.config(m), 200))),
            Route(base + "/infer", infer, methods=["POST"]),
        ]
    routes.append(Route("/{path:path}", page, methods=["GET", "HEAD"]))
    app = _FastInfer(Starlette(routes=routes, lifespan=lifespan(server)), server)
    keys = server.cfg.keys
    return _Guard(app, server, keys) if keys.enabled else app


def on_sighup(server: ModelServer) -> None:
    """SIGHUP reloads every model (in the main thread's loop only: a server run in another
    thread, as tests do, reloads by the repository call instead)."""
    loop = asyncio.get_running_loop()

    def reload() -> None:
        async def run() -> None:
            for problem in await server.models.reload():
                print(f"reload: {problem}", file=sys.stderr, flush=True)

        loop.create_task(run())

    with contextlib.suppress(ValueError, RuntimeError, NotImplementedError, AttributeError):
        loop.add_signal_handler(signal.SIGHUP, reload)


def lifespan(server: ModelServer) -> Callable:
    @contextlib.asynccontextmanager
    async def span(app: Any):
        rpc = None
        if server.serve_grpc:
            try:
                rpc, port = await grpc_service.start(server, server.cfg.host,
                                                     server.cfg.grpc_target)  # fmt: skip
                server.grpc_address = grpc_service.address(server.cfg.host, port)
            except MnistEdgeError as exc:  # the server ends at its next tick, in one line
                server.load_error = exc
        if server.load_error is None:
            on_sighup(server)
            if server.peers is not None:
                server.peers.start(server, asyncio.get_running_loop())
            if server.on_listen:
                server.on_listen()
            if not server.loaded:  # not loaded already (a Ray Serve replica loads first)
                threading.Thread(target=server.load, name="mnist-edge-load", daemon=True).start()
        try:
            yield
        finally:
            if rpc is not None:  # new calls now get UNAVAILABLE; calls in flight finish
                await rpc.stop(server.cfg.timeout_s)
            server.close()

    return span


class _Guard:
    """The keys (auth.py): a request without the key its path needs is answered 401 or 403
    here, before its body is read. In front of everything, so that Ray Serve's ingress, which
    mounts the same app, checks them too."""

    def __init__(self, app: Any, server: ModelServer, keys: auth.Keys) -> None:
        self.app, self.server, self.keys = app, server, keys

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        needed = auth.rest_scope(scope.get("method", ""), scope.get("path", ""), self.keys)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                   for k, v in scope.get("headers", [])}  # fmt: skip
        refusal = self.keys.refusal(needed, auth.presented_key(headers.get))
        if refusal is None:
            return await self.app(scope, receive, send)
        status, message = refusal
        extra = {"www-authenticate": 'Bearer realm="mnist-edge"'} if status == 401 else {}
        status, body, out = counted(self.server, "", "auth", status,
                                    orjson.dumps({"error": message}), extra)  # fmt: skip
        out["content-length"] = str(len(body))
        await send({"type": "http.response.start", "status": status,
                    "headers": [(k.encode(), v.encode()) for k, v in out.items()]})  # fmt: skip
        await send({"type": "http.response.body", "body": body})


class _FastInfer:
    """The ASGI app: inference requests go straight to `answer`, everything else to Starlette,
    whose request and response objects and middleware took ~17% of the server's samples at
    1,100 requests/s (py-spy)."""

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
                    raise ProtocolError("the client went away", 400)
                more = message.get("more_body", False)
                yield message.get("body", b"")

        status, body, out = await answer(self.server, params, headers.get, chunks())
        out["content-length"] = str(len(body))
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(k.encode(), v.encode()) for k, v in out.items()],
            }
        )
        await send({"type": "http.response.body", "body": body})


__all__ = ["build", "answer", "counted", "INFER_PATH"]
