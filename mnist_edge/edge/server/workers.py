"""`--workers N`: N server processes on the same REST and gRPC ports, for the cores that one
Python event loop cannot keep busy.

Each worker is a whole server (host.py): its own event loop, models, batchers and engine threads.
They listen on the same ports with SO_REUSEPORT, so the kernel spreads new connections between
them. The engine threads are divided: each worker gets cores // N (or --threads, when N times
it fits the cores), so that busy threads never outnumber the cores.

The parent process only supervises: it reserves the ports (bound, not listening, so that port 0
works and no other program takes them), starts the workers, prints the banner once every worker
listens and `ready` once every worker has its models, and passes SIGTERM (Ctrl-C, too: the
workers are in a process group of their own, away from the terminal's signal), SIGHUP and a
second signal on to them. Each worker drains as a single server does, so SIGTERM loses nothing.
A worker that dies is started again. /metrics adds the workers up (metrics.py).
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from .. import errors
from .. import threads as pools
from ..errors import ConfigError, MnistEdgeError, ServeError
from . import host
from .config import ServeConfig
from .metrics import MULTIPROC_ENV
from .model_server import ServerInfo

START_TIMEOUT_S = 300.0  # a worker that neither listens nor fails by then is stuck
RESTART_PAUSE_S = 1.0  # between a worker's death and its new start


def default_workers(threads: int | None = None, cores: int | None = None) -> int:
    """--workers by default: PROVISIONAL one."""
    return 1


def engine_threads(cfg: ServeConfig, cores: int | None = None) -> int | None:
    """Engine threads per worker: --threads when given (refused when the workers' threads
    would outnumber the cores), else the cores divided between the workers."""
    n = cores or pools.cores()
    if cfg.workers == 1:
        return cfg.threads
    if cfg.threads and cfg.threads * cfg.workers > n:
        raise ConfigError(f"--workers {cfg.workers} x --threads {cfg.threads} is more engine "
                          f"threads than the {n} cores here")  # fmt: skip
    return cfg.threads or max(1, n // cfg.workers)


def serve(cfg: ServeConfig, on_start: Callable[[ServerInfo], None] | None = None,
          on_ready: Callable[[ServerInfo], None] | None = None) -> None:  # fmt: skip
    """Serve until SIGTERM or Ctrl-C, then drain and return: in this process with one worker,
    else in cfg.workers processes. A model that cannot be loaded raises its error."""
    if cfg.workers == 1:
        host.serve_one(cfg, on_start, on_ready)
        return
    Supervisor(cfg, on_start, on_ready).run()


def _reserve(host_name: str, port: int) -> socket.socket:
    """A socket bound to the port (SO_REUSEPORT, not listening: it takes no connection), which
    keeps the port for the workers."""
    family = socket.AF_INET6 if ":" in host_name else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host_name, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host_name}:{port}: {exc.strerror or exc}") from None
    return sock


def _worker(cfg: ServeConfig, index: int, messages: Any) -> None:
    """One worker process: a whole server on the shared ports; what happens goes to the
    parent through `messages`."""
    os.setpgrp()  # the terminal's Ctrl-C reaches the parent, which passes SIGTERM on
    try:
        sock = host.listen(cfg.host, cfg.port, reuse_port=True)
        host.serve_one(cfg, lambda info: messages.put(("listening", index, info)),
                       lambda info: messages.put(("ready", index, info)), sock=sock,
                       reuse_port=True)  # fmt: skip
    except MnistEdgeError as exc:
        messages.put(("error", index, type(exc).__name__, str(exc)))
        sys.exit(2)


class Supervisor:
    """Starts the workers, says when they listen and are ready, passes signals on, restarts a
    worker that dies, and returns once every worker has drained and exited."""

    def __init__(self, cfg: ServeConfig, on_start: Callable[[ServerInfo], None] | None,
                 on_ready: Callable[[ServerInfo], None] | None) -> None:  # fmt: skip
        self.on_start, self.on_ready = on_start, on_ready
        self.reserved = [_reserve(cfg.host, cfg.port)]
        rest_port = self.reserved[0].getsockname()[1]
        grpc_port = None
        if cfg.grpc:
            self.reserved.append(_reserve(cfg.host, cfg.grpc_target))
            grpc_port = self.reserved[1].getsockname()[1]
        self.cfg = replace(cfg, port=rest_port, grpc_port=grpc_port, workers=1,
                           threads=engine_threads(cfg))  # fmt: skip
        self.count = cfg.workers
        self.ctx = multiprocessing.get_context("spawn")
        self.messages = self.ctx.Queue()
        self.procs: list[Any] = [None] * self.count
        self.listening: dict[int, ServerInfo] = {}
        self.ready: set[int] = set()
        self.stopping = 0  # signals passed on so far
        self.metrics_dir = tempfile.mkdtemp(prefix="mnist-edge-metrics-")

    def _start(self, index: int) -> None:
        proc = self.ctx.Process(target=_worker, args=(self.cfg, index, self.messages),
                                name=f"mnist-edge-worker-{index}")  # fmt: skip
        proc.start()
        self.procs[index] = proc

    def _signal(self, sig: int, frame: Any = None) -> None:
        if sig != signal.SIGHUP:
            self.stopping += 1
        for proc in self.procs:
            if proc is not None and proc.is_alive():
                os.kill(proc.pid, signal.SIGHUP if sig == signal.SIGHUP else signal.SIGTERM)

    def run(self) -> None:
        previous = {s: signal.signal(s, self._signal)
                    for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}  # fmt: skip
        saved = os.environ.get(MULTIPROC_ENV)
        os.environ[MULTIPROC_ENV] = self.metrics_dir  # the workers inherit it at their start
        try:
            for i in range(self.count):
                self._start(i)
            self._supervise()
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
            if saved is None:
                os.environ.pop(MULTIPROC_ENV, None)
            else:
                os.environ[MULTIPROC_ENV] = saved
            for proc in self.procs:
                if proc is not None and proc.is_alive():
                    proc.kill()
                    proc.join()
            for sock in self.reserved:
                sock.close()
            shutil.rmtree(self.metrics_dir, ignore_errors=True)

    def _supervise(self) -> None:
        started = time.monotonic()
        while True:
            self._read_messages()
            alive = [p for p in self.procs if p is not None and p.is_alive()]
            if self.stopping and not alive:
                return
            if len(self.listening) < self.count and time.monotonic() - started > START_TIMEOUT_S:
                raise ServeError(f"the workers did not start within {START_TIMEOUT_S:g} s")
            for i, proc in enumerate(self.procs):
                if proc is not None and not proc.is_alive() and not self.stopping:
                    self._dead(i, proc)

    def _read_messages(self) -> None:
        try:
            message = self.messages.get(timeout=0.1)
        except Exception:  # queue.Empty (or the queue closed under a signal)
            return
        kind, index = message[0], message[1]
        if kind == "error":
            self._signal(signal.SIGTERM)
            raise getattr(errors, message[2], ServeError)(message[3])
        if kind == "listening":
            self.listening[index] = message[2]
            if len(self.listening) == self.count and self.on_start:
                self.on_start(replace(message[2], workers=self.count))
        elif kind == "ready":
            first = len(self.ready) < self.count
            self.ready.add(index)
            if first and len(self.ready) == self.count and self.on_ready:
                self.on_ready(replace(message[2], workers=self.count))

    def _dead(self, index: int, proc: Any) -> None:
        """A worker died outside a drain: its gauges go, and a new one takes its place."""
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(proc.pid, self.metrics_dir)
        print(f"worker {index} (pid {proc.pid}) ended with {proc.exitcode}; starting another",
              file=sys.stderr, flush=True)  # fmt: skip
        time.sleep(RESTART_PAUSE_S)
        self._start(index)


__all__ = ["serve", "engine_threads", "default_workers", "Supervisor"]
