"""The backend catalogue and load_runner(): the one place that builds a model to run.

Three separate axes (STYLE.md): the file **format** (layout.FORMATS: checkpoint, onnx,
torchscript, pt2, ort, onnx-int8, executorch(-int8), litert(-int8); layout.format_of tells it from
the name), the **backend** that runs it (an engine: onnxruntime, openvino, executorch, litert,
torch) and the **precision** it computes in (fp32,
bf16, int8). One runner interface for all (backends/base.py): a Runner takes normalised float32
(N, 1, 28, 28), checked before the engine runs, and gives float32 (N, 10). Benchmarks, parity,
evaluation, the Predictor and the tuner all go through here.

Each backend is one module with two functions,

    precisions(fmt) -> tuple[str, ...]     what it can run that format at, on this machine
    load(path, fmt, precision, threads[, spin]) -> Runner   (spin: threads.Pools.spin)

and one entry in BACKENDS naming the module (imported only when the backend is first used, so
the torch backend costs the edge install nothing), the formats it opens, its named cases (what
`bench --backends` and `tune` call each (format, precision)) and the pip extra it needs.
`register()` adds one at run time (a plugin, or a test).
"""

from __future__ import annotations

import fnmatch
import importlib
import inspect
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import layout, policy
from .backends.base import Runner
from .data import batches
from .errors import ConfigError, MissingDependency, missing_dependency
from .machine import check_threads, has_module

__all__ = ["Backend", "BACKENDS", "Runner", "register", "unregister", "cases", "case_name",
           "select_cases", "default_backend", "backend_named", "load_runner",
           "outputs"]  # fmt: skip

PRECISIONS = ("fp32", "bf16", "int8")
FORMATS = tuple(layout.FORMATS)
EXTRA_FILE = "mnist_edge.json"  # metadata inside TorchScript / .pt2 archives


@dataclass(frozen=True)
class Backend:
    """An engine that runs model files, as the catalogue knows it."""

    name: str  # "onnxruntime", "openvino", "torch"
    module: str  # the module with precisions() and load()
    formats: tuple[str, ...]  # the file formats it opens
    cases: dict[str, tuple[str, str]]  # case name (bench, tune) -> (format, precision)
    requires: str  # the package whose presence means the backend is installed
    extra: str | None = None  # the pip extra that installs it (None: the base install)

    def installed(self) -> bool:
        return has_module(self.requires)

    def impl(self):
        """The backend's module; a missing package is one line naming the extra."""
        if not self.installed():
            raise _missing(self)
        try:
            return importlib.import_module(self.module)
        except ImportError as exc:
            if exc.name and exc.name.split(".")[0] == self.requires:
                raise _missing(self) from None
            raise

    def precisions(self, fmt: str) -> tuple[str, ...]:
        return tuple(self.impl().precisions(fmt))


def _missing(backend: Backend) -> MissingDependency:
    if backend.extra == "train":
        return missing_dependency(backend.requires, f"the {backend.name} backend")
    return MissingDependency(
        f"the {backend.name} backend needs the Python package {backend.requires!r}, which this "
        f"install leaves out; install it with pip install 'mnist-edge[{backend.extra}]'"
    )


BACKENDS: dict[str, Backend] = {}


def register(backend: Backend) -> Backend:
    """Add (or replace) a backend: one entry, and every command can use it."""
    for name in backend.cases:
        owner = next((b.name for b in BACKENDS.values() if name in b.cases), backend.name)
        if owner != backend.name:
            raise ConfigError(f"case name {name!r} is taken by the {owner} backend")
    BACKENDS[backend.name] = backend
    return backend


def unregister(name: str) -> None:
    BACKENDS.pop(name, None)


register(Backend(
    "onnxruntime", "mnist_edge.edge.backends.onnxruntime", ("onnx", "onnx-int8", "ort"),
    {"onnxruntime": ("onnx", "fp32"), "onnxruntime-int8": ("onnx-int8", "int8"),
     "onnxruntime-ort": ("ort", "fp32")},
    requires="onnxruntime",
))  # fmt: skip
register(Backend(
    "openvino", "mnist_edge.edge.backends.openvino", ("onnx", "onnx-int8"),
    {"openvino": ("onnx", "fp32"), "openvino-bf16": ("onnx", "bf16"),
     "openvino-int8": ("onnx-int8", "int8")},
    requires="openvino", extra="openvino",
))  # fmt: skip
register(Backend(
    "executorch", "mnist_edge.edge.backends.executorch", ("executorch", "executorch-int8"),
    {"executorch": ("executorch", "fp32"), "executorch-int8": ("executorch-int8", "int8")},
    requires="executorch", extra="executorch",
))  # fmt: skip
register(Backend(
    "litert", "mnist_edge.edge.backends.litert", ("litert", "litert-int8"),
    {"litert": ("litert", "fp32"), "litert-int8": ("litert-int8", "int8")},
    requires="ai_edge_litert", extra="litert",
))  # fmt: skip
register(Backend(
    "torch", "mnist_edge.torch_backend", ("checkpoint", "torchscript", "pt2"),
    {"pytorch": ("checkpoint", "fp32"), "torchscript": ("torchscript", "fp32"),
     "pt2": ("pt2", "fp32")},
    requires="torch", extra="train",
))  # fmt: skip


def cases() -> dict[str, tuple[str, str, str]]:
    """Every named case: name -> (backend, format, precision), in registration order."""
    return {n: (b.name, f, p) for b in BACKENDS.values() for n, (f, p) in b.cases.items()}


def case_name(backend: str, fmt: str, precision: str) -> str:
    """The case name of a (backend, format, precision), or "backend:format:precision"."""
    for name, found in cases().items():
        if found == (backend, fmt, precision):
            return name
    return f"{backend}:{fmt}:{precision}"


def select_cases(names: tuple[str, ...] | list[str], *,
                 flag: str = "--backends") -> tuple[str, ...]:  # fmt: skip
    """Case names, each given as a name or a shell pattern ("openvino*", "*-int8"), expanded in
    catalogue order; a name or pattern that matches no case is a ConfigError naming them."""
    known = list(cases())
    chosen: list[str] = []
    for name in names:
        found = [c for c in known if fnmatch.fnmatchcase(c, name)]
        if not found:
            raise ConfigError(f"unknown backend {name}; {flag} takes case names or patterns: "
                              f"{', '.join(known)}")  # fmt: skip
        chosen += [c for c in found if c not in chosen]
    return tuple(c for c in known if c in chosen)


def default_backend(fmt: str) -> Backend:
    """The first registered backend that opens `fmt` (onnxruntime for ONNX Runtime formats)."""
    for backend in BACKENDS.values():
        if fmt in backend.formats:
            return backend
    raise ConfigError(f"no backend opens {fmt!r} files; formats: {', '.join(FORMATS)}")


def backend_named(name: str) -> Backend:
    if name not in BACKENDS:
        raise ConfigError(f"unknown backend {name!r}; choose from {', '.join(BACKENDS)}")
    return BACKENDS[name]


def load_runner(
    source: Path | str,
    *,
    fmt: str | None = None,
    threads: int | None = None,
    backend: str | None = None,
    precision: str | None = None,
    spin: bool = True,
) -> Runner:
    """A Runner for a checkpoint or an exported artifact: the format from the file name unless
    given, the backend the first that opens that format unless given, the precision the
    format's own (int8 for a quantized file, else fp32) unless given. `spin` False keeps idle
    engine threads from busy-waiting (threads.Pools.spin)."""
    path = Path(source)
    fmt = fmt or layout.format_of(path)
    if fmt not in FORMATS and not any(fmt in b.formats for b in BACKENDS.values()):
        raise ConfigError(f"unknown format {fmt!r}; choose from {', '.join(FORMATS)}")
    engine = backend_named(backend) if backend else default_backend(fmt)
    if fmt not in engine.formats:
        raise ConfigError(
            f"the {engine.name} backend does not open {fmt} files; it opens "
            f"{', '.join(engine.formats)}"
        )
    check_threads(threads)
    native = layout.FORMATS[fmt].precision if fmt in layout.FORMATS else "fp32"
    precision = precision or native
    if precision not in PRECISIONS:
        raise ConfigError(f"unknown precision {precision!r}; choose from {', '.join(PRECISIONS)}")
    if fmt != "checkpoint" and not path.is_file():
        raise layout.missing(path, fmt)
    offered = engine.precisions(fmt)
    if precision not in offered:
        why = getattr(engine.impl(), "WHY_NOT", {}).get(precision, "")
        raise ConfigError(
            f"the {engine.name} backend runs {fmt} files at {', '.join(offered)} here, not "
            f"{precision}" + (f": {why}" if why else "")
        )
    t0 = time.perf_counter()
    impl = engine.impl()
    if "spin" in inspect.signature(impl.load).parameters:
        runner = impl.load(path, fmt, precision, threads, spin=spin)
    else:  # a backend written before spin was a choice
        runner = impl.load(path, fmt, precision, threads)
    runner.format, runner.threads, runner.backend, runner.precision = (
        fmt, threads, engine.name, precision)  # fmt: skip
    runner.case = case_name(engine.name, fmt, precision)
    runner.load_ms = (time.perf_counter() - t0) * 1e3
    return runner


def outputs(runner: Runner, images: np.ndarray, batch_size: int | None = None) -> np.ndarray:
    """(N, 10) outputs for uint8 (N, 28, 28) images, fed in batches through data.batches."""
    return np.concatenate([runner(b) for b in batches(images, batch_size or policy.BATCH)])
