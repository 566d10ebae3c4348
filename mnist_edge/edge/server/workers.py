"""`--workers N`: N server processes on the same REST and gRPC ports, for the cores that one
Python event loop cannot keep busy.

Each worker is a whole server (host.py): its own event loop, models, batchers and engine threads.
They listen on the same ports with SO_REUSEPORT, so the kernel spreads new connections between
them; a worker listens only once its models are loaded, so that none is handed connections it
cannot answer yet. The engine threads are divided: each worker gets cores // N (or --threads,
when N times it fits the cores), so that busy threads never outnumber the cores.

The parent process only supervises: it reserves the ports (bound, not listening, so that port 0
works and no other program takes them), starts the workers, prints the banner once every worker
listens and `ready` once every worker has its models, and passes SIGTERM (Ctrl-C, too: the
workers are in a process group of their own, away from the terminal's signal), SIGHUP and a
second signal on to them. Each worker drains as a single server does, so SIGTERM loses nothing.
A worker that dies is started again. /metrics adds the workers up (metrics.py).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from .. import errors
from .. import threads as pools
from ..errors import ConfigError, MnistEdgeError, ServeError
from . import grpc_service, host
from .config import MAX_WORKERS, ServeConfig
from .metrics import MULTIPROC_ENV
from .model_server import ServerInfo
from .tensors import ProtocolError

START_TIMEOUT_S = 300.0  # a worker that neither listens nor fails by then is stuck
RESTART_PAUSE_S = 1.0  # between a worker's death and its new start


def default_workers(threads: int | None = None, cores: int | None = None) -> int:
    """--workers by default: one per core (one engine thread each), or with --threads T, the
    cores divided by T. On 2 cores (Intel Xeon, AVX-512; benchmarks/serve_workers.py, hey and
    h2load on the same cores) 2 workers served 1.25x the requests/s of 1 worker over REST
    binary at concurrency 64, 1.06x over JSON and 1.32x over gRPC; one worker with both cores'
    engine threads answers a lone client sooner (batch-1 p50 1.0 against 1.8 ms), so a
    server for one client at a time is better run with --workers 1."""
    n = cores or pools.cores()
    return max(1, min(MAX_WORKERS, n // threads if threads else n))


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


def _reserve(host_name: str, port: int, what: str = "") -> socket.socket:
    """A socket bound to the port (SO_REUSEPORT, not listening: it takes no connection), which
    keeps the port for the workers."""
    family = socket.AF_INET6 if ":" in host_name else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host_name, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {grpc_service.address(host_name, port)}{what}: "
                          f"{exc.strerror or exc}") from None  # fmt: skip
    return sock


class Peers:
    """A worker's line to the others, through the parent: a repository call (load, unload)
    that one worker took is applied by every other before its client hears the answer."""

    def __init__(self, index: int, to_parent: Any, inbox: Any, timeout_s: float) -> None:
        self.index, self.to_parent, self.inbox, self.timeout_s = index, to_parent, inbox, timeout_s
        self.pending: dict[str, asyncio.Future] = {}
        self.server: Any = None
        self.loop: asyncio.AbstractEventLoop | None = None

    def start(self, server: Any, loop: asyncio.AbstractEventLoop) -> None:
        """Listen for the parent's messages (in a thread: the queue blocks)."""
        self.server, self.loop = server, loop
        threading.Thread(target=self._listen, name="mnist-edge-peers", daemon=True).start()

    async def tell(self, action: str, name: str) -> None:
        """Have every other worker do `action` on `name`; ProtocolError naming any that
        could not."""
        token = uuid.uuid4().hex
        future = self.loop.create_future()
        self.pending[token] = future
        self.to_parent.put(("repository", self.index, token, action, name))
        try:
            problems = await asyncio.wait_for(future, self.timeout_s)
        except TimeoutError:
            problems = [f"the other workers did not answer within {self.timeout_s:g} s"]
        finally:
            self.pending.pop(token, None)
        if problems:
            raise ProtocolError(f"{action} {name!r} done in one worker, not in all: "
                                + "; ".join(problems), 400)  # fmt: skip

    def _listen(self) -> None:
        while True:
            message = self.inbox.get()
            if message[0] == "apply":  # another worker's call: do it here too
                _, token, action, name = message
                run = asyncio.run_coroutine_threadsafe(
                    getattr(self.server.models, action)(name), self.loop)  # fmt: skip
                try:
                    run.result()
                    problem = None
                except ProtocolError as exc:
                    problem = f"worker {self.index}: {exc}"
                self.to_parent.put(("applied", self.index, token, problem))
            elif message[0] == "done":  # every other worker has done this worker's call
                _, token, problems = message
                future = self.pending.get(token)
                if future is not None:
                    self.loop.call_soon_threadsafe(_settle, future, problems)


def _settle(future: asyncio.Future, problems: list[str]) -> None:
    if not future.done():
        future.set_result(problems)


def _worker(cfg: ServeConfig, index: int, messages: Any, inbox: Any) -> None:
    """One worker process: a whole server on the shared ports; what happens goes to the
    parent through `messages`, what the other workers ask comes through `inbox`."""
    os.setpgrp()  # the terminal's Ctrl-C reaches the parent, which passes SIGTERM on
    try:
        host.serve_one(cfg, lambda info: messages.put(("listening", index, info)),
                       lambda info: messages.put(("ready", index, info)), reuse_port=True,
                       peers=Peers(index, messages, inbox, cfg.timeout_s))  # fmt: skip
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
            self.reserved.append(_reserve(cfg.host, cfg.grpc_target, " (gRPC)"))
            grpc_port = self.reserved[1].getsockname()[1]
        self.cfg = replace(cfg, port=rest_port, grpc_port=grpc_port, workers=1,
                           threads=engine_threads(cfg))  # fmt: skip
        self.count = cfg.workers
        self.ctx = multiprocessing.get_context("spawn")
        self.messages = self.ctx.Queue()
        self.inboxes = [self.ctx.Queue() for _ in range(self.count)]
        self.calls: dict[str, tuple[int, set[int], list[str]]] = {}  # repository calls going on
        self.procs: list[Any] = [None] * self.count
        self.listening: dict[int, ServerInfo] = {}
        self.ready: set[int] = set()
        self.stopping = 0  # signals passed on so far
        self.metrics_dir = tempfile.mkdtemp(prefix="mnist-edge-metrics-")

    def _start(self, index: int) -> None:
        proc = self.ctx.Process(target=_worker,
                                args=(self.cfg, index, self.messages, self.inboxes[index]),
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
            self._drop_queues()
            shutil.rmtree(self.metrics_dir, ignore_errors=True)

    def _drop_queues(self) -> None:
        """Close the queues and let go of every reference to them, so that their semaphores
        are unlinked now: the CLI ends with os._exit, and a semaphore still held then is
        reported leaked by multiprocessing's resource tracker."""
        for q in [self.messages, *self.inboxes]:
            q.close()
            q.join_thread()
        self.procs = []  # a Process holds its arguments, the queues among them
        del self.messages, self.inboxes

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
        if kind in ("repository", "applied"):
            self._relay(message)
        elif kind == "error":
            self._signal(signal.SIGTERM)
            raise getattr(errors, message[2], ServeError)(message[3])
        elif kind == "listening":  # the port answers from the first worker on
            if not self.listening and self.on_start:
                self.on_start(replace(message[2], workers=self.count))
            self.listening[index] = message[2]
        elif kind == "ready":
            first = len(self.ready) < self.count
            self.ready.add(index)
            if first and len(self.ready) == self.count and self.on_ready:
                self.on_ready(replace(message[2], workers=self.count))

    def _relay(self, message: tuple) -> None:
        """A worker's repository call goes to every other live worker; once they have all
        applied it, the worker that took it hears so."""
        if message[0] == "repository":
            _, origin, token, action, name = message
            others = {i for i, p in enumerate(self.procs)
                      if i != origin and p is not None and p.is_alive()}  # fmt: skip
            self.calls[token] = (origin, others, [])
            for i in others:
                self.inboxes[i].put(("apply", token, action, name))
        else:
            _, index, token, problem = message
            if token in self.calls:
                self.calls[token][1].discard(index)
                if problem:
                    self.calls[token][2].append(problem)
        for token, (origin, waiting, problems) in list(self.calls.items()):
            if not waiting:
                del self.calls[token]
                self.inboxes[origin].put(("done", token, problems))

    def _dead(self, index: int, proc: Any) -> None:
        """A worker died outside a drain: its gauges go, and a new one takes its place."""
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(proc.pid, self.metrics_dir)
        for _, waiting, problems in self.calls.values():
            if index in waiting:  # it will not answer: a call it held up goes on without it
                waiting.discard(index)
                problems.append(f"worker {index} died")
        self._relay(("applied", index, "", None))
        print(f"worker {index} (pid {proc.pid}) ended with {proc.exitcode}; starting another",
              file=sys.stderr, flush=True)  # fmt: skip
        time.sleep(RESTART_PAUSE_S)
        self._start(index)


__all__ = ["serve", "engine_threads", "default_workers", "Supervisor", "Peers"]
