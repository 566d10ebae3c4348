"""Every pool a command starts, decided in one place: the engine's intra-op threads, the worker
processes that prepare image files, and the BLAS threads inside those workers.

The rule: together they never exceed the cores this process may run on. ONNX Runtime's
intra-op pool defaults to every core and its idle threads spin; numpy's OpenBLAS starts a thread
per core in every process; so two worker processes beside a two-thread session put six busy
threads on two cores (seen on an AMD EPYC Zen 5: a folder ran at 96 images/s, against 3,606 for
bare inference). Workers get one BLAS thread each, set in their environment before numpy loads;
the engine's idle threads stop spinning when workers share the cores.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

# Below this many files, starting worker processes costs more than it saves.
POOL_MIN_FILES = 200
# Read by numpy's BLAS (OpenBLAS, MKL, Accelerate) and OpenMP at their start.
BLAS_ENV = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
            "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")  # fmt: skip


def cores() -> int:
    """The CPUs this process may run on (its affinity mask: a container's share, not the host's)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class Pools:
    """How one command spends the cores."""

    cores: int
    intra_op: int  # engine threads in this process (ONNX Runtime intra-op, OpenVINO)
    workers: int = 0  # processes preparing image files (0: this process prepares them)
    blas: int = 1  # BLAS threads in each worker process
    spin: bool = True  # may idle engine threads spin? only when nothing else wants the cores

    @property
    def busy(self) -> int:
        """Threads that compute at once: the engine's plus the workers'."""
        return self.intra_op + self.workers * self.blas

    def worker_env(self) -> dict[str, str]:
        """The environment of a worker process: BLAS and OpenMP capped before numpy loads (and
        no phase marks: the descriptor they name is not the worker's)."""
        env = {**os.environ, **{name: str(self.blas) for name in BLAS_ENV}}
        env.pop("MNIST_EDGE_PHASE_FD", None)
        return env


def for_engine(threads: int | None = None, n: int | None = None) -> Pools:
    """One inference session in this process and nothing else: `threads`, else every core."""
    n = n or cores()
    return Pools(n, threads or n)


def for_files(files: int, *, threads: int | None = None, workers: int | None = None,
              n: int | None = None) -> Pools:  # fmt: skip
    """A session plus the processes that prepare `files` image files for it. Defaults split
    the cores: preparing one file costs about half of what the model costs on it, so the engine
    gets ceil(cores / 2) threads and the workers the rest. A value the user gave is kept; the
    other is fitted around it (an engine given every core prepares in this process)."""
    n = n or cores()
    if workers is None and files < POOL_MIN_FILES:
        return Pools(n, threads or n)
    if threads is None and workers is None:
        threads = math.ceil(n / 2) if n > 1 else 1
    if workers is None:
        workers = max(0, n - threads)
    elif threads is None:
        threads = max(1, n - workers)
    workers = min(workers, max(1, files))
    return Pools(n, threads, workers, spin=workers == 0)


def for_server(threads: int | None = None, n: int | None = None) -> Pools:
    """A server: its event loop reads and parses requests while one thread runs the batches
    on the engine. The engine gets every core, and its idle threads do not spin, so the loop
    runs whenever a batch does not: on 2 cores (AMD EPYC Zen 4, hey on the same cores, binary
    fp32 at concurrency 64) 2 engine threads served 1,201 requests/s, 1 thread 935."""
    n = n or cores()
    return Pools(n, threads or n, spin=False)
