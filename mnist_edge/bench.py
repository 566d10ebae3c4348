"""Latency and throughput of the model's backends -> result dataclasses; no printing.

Every case warms up first, then times single calls with time.perf_counter. Reported beside each
number: the machine, thread settings and versions (machine.environment()), and this machine's
fp32 matmul rate measured in the same run, so that achieved GFLOP/s can be read as a fraction of
what the CPU can do (the roofline).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ConfigError, InputError
from .machine import environment

BACKENDS = ("pytorch", "torchscript", "onnxruntime", "onnxruntime-int8", "onnxruntime-ort")
DEFAULT_BACKENDS = BACKENDS[:3]  # the optional two join when their files exist (see CLI)
Runner = Callable[[np.ndarray], Any]


def model_macs(image_size: int = 28, channels: tuple[int, ...] = (32, 64, 128)) -> int:
    """Multiply-adds per image of the CNN in model.py (3x3 convs without padding, then fc)."""
    macs, side, c_in = 0, image_size, 1
    for c_out in channels:
        side -= 2
        macs += side * side * c_out * c_in * 9
        c_in = c_out
    return macs + side * side * c_in * 10  # fc: 61,952 x 10


FLOPS_PER_IMAGE = 2 * model_macs()  # 94.2 MFLOP (a multiply-add is two FLOPs)


@dataclass(frozen=True)
class BenchConfig:
    """What to measure."""

    backends: tuple[str, ...] = DEFAULT_BACKENDS
    batch_sizes: tuple[int, ...] = (1, 8, 64)
    threads: tuple[int, ...] = (1, os.cpu_count() or 1)
    warmup: int = 10  # untimed calls before timing
    iterations: int | None = None  # timed calls per case; None: run for `duration`
    duration: float = 2.0  # seconds per case when iterations is None
    model: str = "exports/mnist_cnn.onnx"  # ONNX model
    int8_model: str = "exports/mnist_cnn.int8.onnx"
    ort_model: str = "exports/mnist_cnn.ort"
    torchscript: str = "exports/mnist_cnn.torchscript.pt"
    checkpoint: str = "exports/mnist_cnn.pt"  # for PyTorch eager
    data_dir: str | None = None  # MNIST test images are the inputs

    def __post_init__(self) -> None:
        unknown = [b for b in self.backends if b not in BACKENDS]
        if unknown or not self.backends:
            named = ", ".join(unknown) or "(none)"
            raise ConfigError(f"unknown backend {named}; choose from {', '.join(BACKENDS)}")
        if not self.batch_sizes or min(self.batch_sizes) < 1:
            raise ConfigError(f"batch sizes must be >= 1, got {self.batch_sizes}")
        if not self.threads or min(self.threads) < 1:
            raise ConfigError(f"thread counts must be >= 1, got {self.threads}")
        if self.warmup < 0 or (self.iterations is not None and self.iterations < 1):
            raise ConfigError("warmup must be >= 0 and iterations >= 1")
        if self.iterations is None and self.duration <= 0:
            raise ConfigError(f"duration must be > 0 seconds, got {self.duration}")


@dataclass(frozen=True)
class Timing:
    """Percentiles of a list of per-call times."""

    p50_ms: float
    p90_ms: float
    p95_ms: float
    p99_ms: float
    mean_ms: float
    min_ms: float
    iterations: int

    @classmethod
    def of(cls, seconds: list[float]) -> Timing:
        ms = np.asarray(seconds) * 1e3
        p50, p90, p95, p99 = np.percentile(ms, [50, 90, 95, 99])
        return cls(p50, p90, p95, p99, float(ms.mean()), float(ms.min()), len(ms))


@dataclass(frozen=True)
class CaseResult(Timing):
    """One backend at one batch size and thread count (its Timing fields, then these)."""

    backend: str
    batch_size: int
    threads: int
    throughput: float  # images/s at the p50 latency
    load_ms: float  # building the session / loading the model
    first_inference_ms: float
    cold_start_ms: float  # load + first inference
    gflops: float  # achieved, from the counted multiply-adds and the p50
    roofline_fraction: float  # gflops / this machine's fp32 matmul rate at these threads
    p50_vs_eager: float | None = None  # this p50 / PyTorch eager's p50 (lower is faster)
    samples_ms: list[float] = field(default_factory=list, repr=False)  # for plots; not in JSON


@dataclass(frozen=True)
class OverheadResult:
    """Predictor.predict (uint8 in, Prediction out) against a bare session.run."""

    batch_size: int
    threads: int
    predict_p50_ms: float
    session_run_p50_ms: float
    overhead_pct: float


@dataclass(frozen=True)
class BenchReport:
    cases: list[CaseResult]
    matmul_gflops: dict[int, float]  # threads -> fp32 matmul GFLOP/s, 2048x2048
    overhead: list[OverheadResult]
    environment: dict[str, Any]
    config: dict[str, Any]
    flops_per_image: int = FLOPS_PER_IMAGE
    created: str = ""

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for case in d["cases"]:
            case.pop("samples_ms")
        d["matmul_gflops"] = {str(k): v for k, v in self.matmul_gflops.items()}
        return d

    def case(self, backend: str, batch_size: int, threads: int) -> CaseResult:
        return next(
            c
            for c in self.cases
            if (c.backend, c.batch_size, c.threads) == (backend, batch_size, threads)
        )


def matmul_gflops(threads: int, n: int = 2048, seconds: float = 1.0) -> float:
    """fp32 n x n matmul rate (GFLOP/s) with `threads` threads: torch when present, else numpy."""
    try:
        import torch

        torch.set_num_threads(threads)
        a, b = torch.randn(n, n), torch.randn(n, n)
        mm: Callable[[], Any] = lambda: torch.mm(a, b)  # noqa: E731
    except ImportError:
        rng = np.random.default_rng(0)
        a, b = rng.standard_normal((n, n), np.float32), rng.standard_normal((n, n), np.float32)
        mm = lambda: a @ b  # noqa: E731
    mm()  # warm-up
    best, deadline = float("inf"), time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        t0 = time.perf_counter()
        mm()
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9


def load_backend(name: str, cfg: BenchConfig, threads: int) -> Runner:
    """A numpy-in function for one backend with `threads` intra-op threads."""
    if name.startswith("onnxruntime"):
        from .runtime import load_session

        path = {"onnxruntime": cfg.model, "onnxruntime-int8": cfg.int8_model}.get(
            name, cfg.ort_model
        )
        session = load_session(path, threads=threads)
        inp, out = session.get_inputs()[0].name, session.get_outputs()[0].name
        return lambda x: session.run([out], {inp: x})
    import torch

    torch.set_num_threads(threads)
    if name == "pytorch":
        from .checkpoint import load_model

        module, _ = load_model(cfg.checkpoint)
    else:
        from .parity import load_runner

        return load_runner(cfg.torchscript, "torchscript")

    def run(x: np.ndarray) -> Any:
        with torch.inference_mode():
            return module(torch.from_numpy(x))

    return run


def measure_case(name: str, cfg: BenchConfig, batch: np.ndarray, threads: int, rate: float):
    """Cold start (load + first call) and steady-state timing of one case."""
    t0 = time.perf_counter()
    fn = load_backend(name, cfg, threads)
    t1 = time.perf_counter()
    fn(batch)
    t2 = time.perf_counter()
    times = interleaved({name: (fn, batch)}, cfg.iterations, cfg.duration, cfg.warmup)[name]
    t = Timing.of(times)
    n = len(batch)
    gflops = FLOPS_PER_IMAGE * n / (t.p50_ms / 1e3) / 1e9
    return CaseResult(
        backend=name,
        batch_size=n,
        threads=threads,
        **asdict(t),
        throughput=n / (t.p50_ms / 1e3),
        load_ms=(t1 - t0) * 1e3,
        first_inference_ms=(t2 - t1) * 1e3,
        cold_start_ms=(t2 - t0) * 1e3,
        gflops=gflops,
        roofline_fraction=gflops / rate,
        samples_ms=[s * 1e3 for s in times],
    )


def interleaved(
    fns: dict[str, tuple[Runner, Any]], rounds: int | None, duration: float = 1.0, warmup: int = 3
) -> dict[str, list[float]]:
    """Per-call times (s) of several (callable, argument) pairs, called round-robin so that
    drift in the machine's load hits all of them alike; `rounds` calls each, or `duration` s."""
    for _ in range(warmup):
        for fn, x in fns.values():
            fn(x)
    times: dict[str, list[float]] = {name: [] for name in fns}
    deadline = time.perf_counter() + duration
    while (len(next(iter(times.values()))) < rounds) if rounds else time.perf_counter() < deadline:
        for name, (fn, x) in fns.items():
            t0 = time.perf_counter()
            fn(x)
            times[name].append(time.perf_counter() - t0)
    return times


def predictor_overhead(cfg: BenchConfig, pixels: np.ndarray, threads: int) -> OverheadResult:
    """Predictor.predict on uint8 pixels against session.run on the same, normalised batch."""
    from .runtime import Predictor

    pred = Predictor(cfg.model, threads=threads)
    pairs = {"run": (pred.run, pred.preprocess(pixels)), "predict": (pred.predict, pixels)}
    times = interleaved(pairs, cfg.iterations, cfg.duration, cfg.warmup)
    run_p50, predict_p50 = Timing.of(times["run"]).p50_ms, Timing.of(times["predict"]).p50_ms
    return OverheadResult(
        batch_size=len(pixels),
        threads=threads,
        predict_p50_ms=predict_p50,
        session_run_p50_ms=run_p50,
        overhead_pct=(predict_p50 / run_p50 - 1) * 100,
    )


def bench(cfg: BenchConfig, on_case: Callable[[CaseResult], None] | None = None) -> BenchReport:
    """Measure every backend x batch size x thread count, plus roofline and predictor overhead."""
    from .data import batches, load_split

    pixels = load_split("test", cfg.data_dir, max(cfg.batch_sizes)).images  # (B, 28, 28) uint8
    rates = {t: matmul_gflops(t) for t in cfg.threads}
    cases: list[CaseResult] = []
    for threads in cfg.threads:
        for b in cfg.batch_sizes:
            batch = next(batches(pixels[:b], b))  # the one data feed: (b, 1, 28, 28) float32
            for name in cfg.backends:
                case = measure_case(name, cfg, batch, threads, rates[threads])
                cases.append(case)
                if on_case:
                    on_case(case)
    eager = {(c.batch_size, c.threads): c.p50_ms for c in cases if c.backend == "pytorch"}
    cases = [
        _with_ratio(c, eager.get((c.batch_size, c.threads))) for c in cases
    ]  # ratios need eager's numbers from the same run
    overhead = []
    if "onnxruntime" in cfg.backends:
        overhead = [predictor_overhead(cfg, pixels[:1], t) for t in cfg.threads]
    return BenchReport(
        cases=cases,
        matmul_gflops=rates,
        overhead=overhead,
        environment={**environment(), "torch_threads_default": _torch_threads()},
        config={k: list(v) if isinstance(v, tuple) else v for k, v in asdict(cfg).items()},
        created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    )


def _with_ratio(case: CaseResult, eager_p50: float | None) -> CaseResult:
    from dataclasses import replace

    return replace(case, p50_vs_eager=None if eager_p50 is None else case.p50_ms / eager_p50)


def _torch_threads() -> int | None:
    try:
        import torch

        return torch.get_num_threads()
    except ImportError:
        return None


@dataclass(frozen=True)
class Regression:
    backend: str
    batch_size: int
    threads: int
    metric: str  # "p50_ms" or "throughput"
    baseline: float
    current: float
    change_pct: float  # positive = worse


def compare_to_baseline(
    current: dict[str, Any], baseline: dict[str, Any], max_regression_pct: float
) -> list[Regression]:
    """Cases whose p50 rose, or throughput fell, by more than `max_regression_pct` percent."""
    base = {(c["backend"], c["batch_size"], c["threads"]): c for c in baseline.get("cases", [])}
    found = []
    for c in current["cases"]:
        b = base.get((c["backend"], c["batch_size"], c["threads"]))
        if b is None:
            continue
        worse_latency = (c["p50_ms"] / b["p50_ms"] - 1) * 100
        worse_throughput = (1 - c["throughput"] / b["throughput"]) * 100
        for metric, change in (("p50_ms", worse_latency), ("throughput", worse_throughput)):
            if change > max_regression_pct:
                found.append(
                    Regression(
                        c["backend"],
                        c["batch_size"],
                        c["threads"],
                        metric,
                        b[metric],
                        c[metric],
                        change,
                    )
                )
    return found


def load_baseline(path: Path | str) -> dict[str, Any]:
    path = Path(path)
    try:
        data = json.loads(path.read_text())
        assert isinstance(data.get("cases"), list)
        return data
    except FileNotFoundError:
        raise InputError(f"no baseline at {path}") from None
    except (ValueError, AssertionError, AttributeError):
        raise InputError(f"{path} is not a bench JSON report (no 'cases' list)") from None


def plot(report: BenchReport, path: Path | str) -> None:
    """Latency distribution per case as a PNG (needs matplotlib: pip install 'mnist-edge[plot]')."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ConfigError("--plot needs matplotlib: pip install 'mnist-edge[plot]'") from None
    from .files import atomic_write

    fig, ax = plt.subplots(figsize=(max(6, 0.6 * len(report.cases)), 4))
    labels = [f"{c.backend}\nb{c.batch_size} t{c.threads}" for c in report.cases]
    ax.boxplot([c.samples_ms for c in report.cases], showfliers=False)
    ax.set_xticks(range(1, len(labels) + 1), labels, fontsize=6)
    ax.set_yscale("log")
    ax.set_ylabel("latency per call (ms)")
    ax.set_title("mnist-edge bench: latency distribution (whiskers 1.5 IQR)")
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
    plt.close(fig)
