"""ExecuTorch: .pte and INT8 .pte programs (XNNPACK-delegated), fp32 and int8.

`pip install 'mnist-edge[executorch]'`. ExecuTorch's Python runtime is built on torch (its
methods take and return torch tensors), so this backend needs torch even to run a file; on a
device the same .pte runs in ExecuTorch's C++ runtime, without Python or torch
(docs/guides/backends.md).

- **Threads.** The XNNPACK delegate's thread pool is one per process and starts with every
  core, whatever torch.set_num_threads says: a runner sizes it to its own count before it loads
  its program. Resizing it while another loaded program lives hangs that program's next call
  (seen with executorch 1.5.1: a method loaded before a resize, called after a method loaded
  since), so the pool is resized only when no other ExecuTorch runner lives; asking for another
  count while one does is a ConfigError naming both counts. tune and bench hold one runner at a
  time, so they try every count.
- **Batch.** A program's input is memory-planned for its largest batch (the bound it was exported
  with, read from the method's metadata); a larger batch is fed in chunks of that bound.
- **Contract.** The program's constant method `spec.PTE_METADATA_METHOD` returns the metadata
  as one JSON string.

A loaded method holds its own input and output memory: each calling thread gets its own method.
"""

from __future__ import annotations

import gc
import json
import threading
import weakref
from pathlib import Path

import numpy as np

from .. import layout, spec
from ..errors import ArtifactError, ConfigError, MissingDependency, reading, reason
from ..machine import has_module
from ..threads import cores
from .base import Runner, check_io, quiet_stderr

WHY_NOT = {"bf16": "ExecuTorch runs a program at the precision it was exported at (fp32, or "
                   "int8 for a quantized program)"}  # fmt: skip
_POOL_LOCK = threading.RLock()  # re-entered: the collector may release a claim inside it
_LIVE: dict[int, int] = {}  # thread count -> ExecuTorch runners alive at that count
# c10::ScalarType codes, as a method's metadata gives a tensor's dtype
SCALAR_TYPES = {0: "uint8", 1: "int8", 2: "int16", 3: "int32", 4: "int64", 5: "float16",
                6: "float32", 7: "float64", 11: "bool", 15: "bfloat16"}  # fmt: skip


def precisions(fmt: str) -> tuple[str, ...]:
    return (layout.get(fmt).precision,)


class _Holder:
    """What the pool claim is tied to: referenced by the runner's own call, so it dies with it."""


def _runtime():
    if not has_module("torch"):
        raise MissingDependency(
            "the executorch backend needs torch: ExecuTorch's Python runtime is built on it "
            "(a device runs .pte files in its C++ runtime); install both with "
            "pip install 'mnist-edge[executorch]'"
        )
    try:
        with quiet_stderr():  # torchao's import-time notices, ExecuTorch's CPU probe
            from executorch.extension.pybindings import portable_lib
            from executorch.runtime import Runtime

            runtime = Runtime.get()
    except ImportError as exc:
        raise MissingDependency(
            f"the executorch backend cannot load ExecuTorch ({reason(exc)}); install it with "
            "pip install 'mnist-edge[executorch]'"
        ) from None
    return runtime, portable_lib


def claim_threads(portable_lib, n: int, owner: object) -> None:
    """Size the process's XNNPACK pool to `n` threads for `owner` (a runner), for as long as it
    lives; refused while runners at another count live (see the module's docstring)."""
    if any(v for k, v in _LIVE.items() if k != n):
        # a dropped runner can linger in a reference cycle (an exception caught while it
        # loaded keeps its loading frame) until the collector runs: run it, outside the lock
        # (a runner that dies releases its claim under that lock)
        gc.collect()
    with _POOL_LOCK:
        others = {k: v for k, v in _LIVE.items() if v and k != n}
        if portable_lib._threadpool_get_thread_count() != n:
            if others:
                raise ConfigError(
                    f"ExecuTorch runs one thread count per process (its XNNPACK pool is "
                    f"process-wide): {', '.join(map(str, others))} thread(s) are in use by "
                    f"another loaded program; close it, or ask for that count instead of {n}"
                )
            with quiet_stderr():  # it says so on fd 2
                portable_lib._unsafe_reset_threadpool(n)
        _LIVE[n] = _LIVE.get(n, 0) + 1
    weakref.finalize(owner, _release, n)


def _release(n: int) -> None:
    with _POOL_LOCK:
        _LIVE[n] -= 1


def _check(meta, path: Path) -> int:
    """The checks every backend makes, on the method's metadata; returns its largest batch."""
    if meta.num_inputs() != 1 or meta.num_outputs() != 1:
        check_io(path, [("", True, [])] * meta.num_inputs(), [("", [])] * meta.num_outputs())
    info, out = meta.input_tensor_meta(0), meta.output_tensor_meta(0)
    dtype = SCALAR_TYPES.get(int(info.dtype()), f"scalar type {int(info.dtype())}")
    check_io(path, [(f"{dtype} {list(info.sizes())}", dtype == "float32", list(info.sizes()))],
             [(str(list(out.sizes())), list(out.sizes()))])  # fmt: skip
    return int(info.sizes()[0])


def load(path: Path, fmt: str, precision: str, threads: int | None, spin: bool = True) -> Runner:
    runtime, portable_lib = _runtime()
    import torch

    n_threads = threads or cores()
    holder = _Holder()  # lives as long as the runner: the pool is claimed for it
    claim_threads(portable_lib, n_threads, holder)
    with reading(path, "an ExecuTorch (.pte) program", ArtifactError):
        with quiet_stderr():
            program = runtime.load_program(Path(path))
            first = program.load_method("forward")
        names = set(program.method_names)
        meta: dict[str, str] = {}
        if spec.PTE_METADATA_METHOD in names:
            raw = program.load_method(spec.PTE_METADATA_METHOD).execute([])[0]
            found = json.loads(raw) if isinstance(raw, str) else {}
            meta = {str(k): str(v) for k, v in found.items()} if isinstance(found, dict) else {}
    bound = _check(first.metadata, path)
    local = threading.local()
    local.method = first
    from_numpy = torch.from_numpy

    def call(x: np.ndarray, _claim: _Holder = holder) -> np.ndarray:  # the claim lives with it
        method = getattr(local, "method", None)
        if method is None:  # another thread: its own method (own memory)
            method = local.method = program.load_method("forward")
        # a copy: the output's memory is planned, and the next call writes into it
        return method.execute([from_numpy(x)])[0].numpy().copy()

    def run(x: np.ndarray) -> np.ndarray:
        try:
            if len(x) <= bound:
                return call(x)
            return np.concatenate([call(x[i : i + bound]) for i in range(0, len(x), bound)])
        except RuntimeError as exc:
            raise ArtifactError(f"{path} could not run a batch of {len(x)}: {reason(exc)}") from exc

    return Runner(path, fmt, run, metadata=meta, session=program)
