"""The server's host: uvicorn on a listening socket, with REST and gRPC in its event loop, draining
on a signal instead of stopping at once (model_server.py says how), and ending in one line when a
model cannot be loaded. workers.py runs several of these on the same ports.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import ConfigError, missing_dependency
from ..machine import has_module
from . import app, http_limits, tls
from .config import ServeConfig
from .model_server import ModelServer, ServerInfo


def listen(host: str, port: int, reuse_port: bool = False) -> socket.socket:
    """A listening TCP socket (port 0: any free one), refused in one line when it cannot be.
    `reuse_port`: several processes listen on the port, and the kernel spreads the
    connections between them (SO_REUSEPORT: workers.py)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP named, so that asyncio sets TCP_NODELAY on every accepted connection (it
    # checks the protocol); set on the listener too, which Linux passes on. Without it a
    # response's second write waits for the client's delayed ACK: 44 ms a request, measured.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.set_inheritable(True)
    return sock


def url_of(sock: socket.socket, scheme: str = "http") -> str:
    host, port = sock.getsockname()[:2]
    return f"{scheme}://[{host}]:{port}/" if ":" in host else f"{scheme}://{host}:{port}/"


def serve_one(cfg: ServeConfig, on_start: Callable[[ServerInfo], None] | None = None,
              on_ready: Callable[[ServerInfo], None] | None = None,
              reuse_port: bool = False, peers: Any = None) -> ModelServer:  # fmt: skip
    """Serve in this process until SIGTERM or Ctrl-C, then drain (every request that comes is
    answered) and return. A model that cannot be loaded ends the server and raises its error.
    Alone, the server listens at once and loads its models behind readiness. As one of several
    workers (`reuse_port`: the ports are shared, workers.py) it loads them first and listens
    only then: the kernel hands a listening worker its share of new connections, which one
    still loading would answer 503 while the others could serve them (seen when a worker that
    died was replaced). `peers`: the other workers (workers.Peers), told of every repository
    call."""
    try:
        import uvicorn
    except ImportError:
        raise missing_dependency("uvicorn", "mnist-edge serve") from None
    server = ModelServer(cfg)
    server.peers = peers
    if reuse_port:
        server.load()
        if server.load_error is not None:
            raise server.load_error
    sock = listen(cfg.host, cfg.port, reuse_port=reuse_port)
    http = http_limits.protocol_class() if has_module("httptools") else "h11"
    tls_options = tls.uvicorn_options(cfg.tls_cert, cfg.tls_key, cfg.tls_client_ca)
    config = uvicorn.Config(app.build(server), log_level="info" if cfg.verbose else "error",
                            access_log=cfg.verbose, lifespan="on",
                            http=http, limit_concurrency=cfg.max_connections,
                            timeout_keep_alive=5, timeout_graceful_shutdown=cfg.timeout_s,
                            server_header=False, date_header=False,
                            loop="asyncio" if cfg.grpc else "auto", **tls_options)  # fmt: skip
    url = url_of(sock, cfg.scheme)
    runner = _Uvicorn(config, server, (lambda: on_ready(server.info(url))) if on_ready else None)
    server.open_connections = lambda: len(runner.server_state.connections)
    server.serve_grpc, server.reuse_port = cfg.grpc, reuse_port
    if on_start:
        server.on_listen = lambda: on_start(server.info(url))
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
                model.drain()

            async def on_tick(self, counter: int) -> bool:
                if model.load_error is not None:
                    return True
                if model.ready and not self.announced:
                    self.announced = True
                    if on_ready:
                        on_ready()
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


__all__ = ["serve_one", "listen", "url_of", "default_web"]
