"""Latency and throughput of the model's backends -> result dataclasses; no printing.

Every case warms up first, then times single calls with time.perf_counter. Reported beside each
number: the machine, thread settings and versions (machine.environment()), each case's peak
resident memory, and this machine's fp32 GEMM rate measured in the same run with ONNX Runtime
itself (the best of 1024x1024 and 2048x2048 MatMuls), so that achieved GFLOP/s reads as a
fraction of what this CPU does
with the same runtime (the roofline), with or without torch installed. Models come from the
catalogue (runners): a case is a (backend, format, precision), and the cases measured by default
are those whose files exist, whose backend is installed and whose precision this CPU offers.
The test digits come in as a value (a command loads them once); nothing here prints or writes
unless asked (`plot`).
"""

from __future__ import annotations

import base64
import json
import os
import queue
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from . import layout, policy
from .backends.onnxruntime import raw_session
from .data import Split, batches
from .errors import ArtifactError, ConfigError, InputError
from .files import atomic_write, utc_now
from .layout import Layout
from .machine import check_threads, environment, isa_class, peak_rss_mb, reset_peak_rss
from .runners import BACKENDS, cases, load_runner, select_cases
from .runtime import Predictor
from .spec import FLOPS_PER_IMAGE
from .timing import Timing, interleaved

SCENARIOS = ("single-stream", "offline", "server", "idle")
ROOFLINE_SIZES = (1024, 2048)  # square fp32 MatMuls timed for the CPU's GEMM rate (the best)
# A one-node ONNX model, C = MatMul(A, B) with symbolic shapes (opset 13, IR 8): built with
# onnx.helper and serialised, so that the roofline needs neither torch nor the onnx package.
# tests/test_bench.py rebuilds it with onnx and compares the bytes.
MATMUL_ONNX = base64.b64decode(
    "CAgSCm1uaXN0LWVkZ2U6YAoRCgFhCgFiEgFjIgZNYXRNdWwSBm1hdG11bFoVCgFhEhAKDggBEgoKAxIBbQoDEgFrWhUK"
    "AWISEAoOCAESCgoDEgFrCgMSAW5iFQoBYxIQCg4IARIKCgMSAW0KAxIBbkIECgAQDQ=="
)


def default_backends(model: Path | str, checkpoint: Path | str | None) -> tuple[str, ...]:
    """The cases whose file exists (beside `model`; PyTorch eager: the checkpoint), whose
    backend is installed, at a precision this CPU offers."""
    chosen = []
    for name, (backend, fmt, precision) in cases().items():
        path = backend_path(name, model, checkpoint)
        engine = BACKENDS[backend]
        if path is None or not Path(path).is_file() or not engine.installed():
            continue
        if precision in engine.precisions(fmt):
            chosen.append(name)
    return tuple(chosen)


def chosen_backends(names: tuple[str, ...], model: Path | str,
                    checkpoint: Path | str | None) -> tuple[str, ...]:  # fmt: skip
    """The cases `--backends` names: a name is taken as it is (a missing file is then an
    error), a pattern ('openvino*') picks the matching cases that can run here."""
    patterns = [n for n in names if any(ch in n for ch in "*?[")]
    # what can run here, only where a pattern needs it (it imports every backend, torch too)
    available = set(default_backends(model, checkpoint)) if patterns else set()
    chosen: list[str] = []
    for name in names:
        found = select_cases([name])
        if name in patterns:
            found = tuple(c for c in found if c in available)
        chosen += [c for c in found if c not in chosen]
    return tuple(chosen)


def backend_path(name: str, model: Path | str, checkpoint: Path | str | None) -> Path | None:
    """The file a case runs: --model for the fp32 ONNX, the checkpoint for PyTorch eager, the
    model's siblings for the other formats."""
    fmt = cases()[name][1]
    if fmt == "onnx":
        return Path(model)
    if fmt == "checkpoint":
        return None if checkpoint is None else Path(checkpoint)
    return Layout.beside(model).artifact(fmt)


@dataclass(frozen=True)
class BenchConfig:
    """What to measure."""

    backends: tuple[str, ...] = ("onnxruntime",)
    batch_sizes: tuple[int, ...] = (1, 8, 64)
    threads: tuple[int, ...] = (1, os.cpu_count() or 1)
    warmup: int = 10  # untimed calls before timing
    iterations: int | None = None  # timed calls per case; None: run for `duration`
    duration: float = 2.0  # seconds per case when iterations is None
    model: str = str(Layout().onnx)  # ONNX model; the other backends' files lie beside it
    checkpoint: str = str(Layout().checkpoint)  # for PyTorch eager
    # Deployment scenarios (opt-in), run on Predictor(model) as an application would:
    scenarios: tuple[str, ...] = ()  # any of SCENARIOS
    queries: int = 1024  # single-stream and server queries
    qps: float = 100.0  # server: mean Poisson arrival rate, queries/s
    workers: int = os.cpu_count() or 1  # server: threads sharing one Predictor
    latency_bound_ms: float = policy.SERVER_LATENCY_BOUND_MS  # server: valid while p99 is under
    idle_gap_s: float = 2.0  # idle: seconds of silence before each timed call
    idle_samples: int = 5  # idle: how many such calls
    offline_batch_sizes: tuple[int, ...] = (1, 8, 32, 64, 128, 256)

    def __post_init__(self) -> None:
        unknown = [b for b in self.backends if b not in cases()]
        if unknown or not self.backends:
            named = ", ".join(unknown) or "(none)"
            raise ConfigError(f"unknown backend {named}; choose from {', '.join(cases())}")
        if not self.batch_sizes or min(self.batch_sizes) < 1:
            raise ConfigError(f"batch sizes must be >= 1, got {self.batch_sizes}")
        if not self.threads:
            raise ConfigError("thread counts: give at least one, e.g. --threads 1,2")
        for t in self.threads:
            check_threads(t, "thread counts")
        if self.warmup < 0 or (self.iterations is not None and self.iterations < 1):
            raise ConfigError("warmup must be >= 0 and iterations >= 1")
        if not 0 < self.duration < 1e6:  # also refuses NaN and inf
            raise ConfigError(f"duration must be > 0 seconds, got {self.duration}")
        unknown = [x for x in self.scenarios if x not in SCENARIOS]
        if unknown:
            raise ConfigError(f"unknown scenario {unknown[0]}; choose from {', '.join(SCENARIOS)}")
        checks = [
            (self.queries >= 1, f"queries must be >= 1, got {self.queries}"),
            (0 < self.qps < 1e6, f"qps must be > 0, got {self.qps}"),
            (self.workers >= 1, f"workers must be >= 1, got {self.workers}"),
            (self.latency_bound_ms > 0, "the latency bound must be > 0 ms"),
            (0 <= self.idle_gap_s <= 3600 and self.idle_samples >= 1, "idle gap 0..3600 s"),
            (bool(self.offline_batch_sizes) and min(self.offline_batch_sizes) >= 1,
             "offline batch sizes must be >= 1"),
        ]  # fmt: skip
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)

    def path(self, backend: str) -> Path:
        """The file `backend` runs; an error naming the export command when it is missing."""
        path = backend_path(backend, self.model, self.checkpoint)
        if path is None or not path.is_file():
            fmt = cases()[backend][1]
            raise ArtifactError(f"backend {backend} needs {path}, which is missing; "
                                f"{layout.FORMATS[fmt].how}")  # fmt: skip
        return path


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
    peak_rss_mb: float | None = None  # the process's peak resident memory during the case
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
    matmul_gflops: dict[int, float]  # threads -> ONNX Runtime fp32 MatMul GFLOP/s
    overhead: list[OverheadResult]
    environment: dict[str, Any]
    config: dict[str, Any]
    flops_per_image: int = FLOPS_PER_IMAGE
    created: str = ""
    scenarios: list[dict[str, Any]] = field(default_factory=list)  # see run_scenarios

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


def matmul_gflops(
    threads: int, sizes: tuple[int, ...] = ROOFLINE_SIZES, seconds: float = 1.0
) -> float:
    """The best fp32 square MatMul rate (GFLOP/s) in ONNX Runtime with `threads` intra-op
    threads over `sizes`, each timed for `seconds` (best call, of one at least): the best GEMM
    this runtime does on this CPU, the ceiling for the model's convolutions and fc."""
    session = raw_session(MATMUL_ONNX, threads=threads)
    rng = np.random.default_rng(0)
    best_rate = 0.0
    for n in sizes:
        feed = {name: rng.standard_normal((n, n), np.float32) for name in ("a", "b")}
        session.run(None, feed)  # warm-up
        best, deadline = float("inf"), time.perf_counter() + seconds
        while best == float("inf") or time.perf_counter() < deadline:  # one call at least
            t0 = time.perf_counter()
            session.run(None, feed)
            best = min(best, time.perf_counter() - t0)
        best_rate = max(best_rate, 2 * n**3 / best / 1e9)
    return best_rate


def measure_case(name: str, cfg: BenchConfig, batch: np.ndarray, threads: int,
                 rate: Callable[[], float]) -> CaseResult:  # fmt: skip
    """Cold start (load + first call) and steady-state timing of one case; `rate()` gives the
    roofline at `threads`, asked once the case is measured (a file that does not load fails
    before any roofline is timed)."""
    reset_peak_rss()
    t0 = time.perf_counter()
    backend, fmt, precision = cases()[name]
    runner = load_runner(cfg.path(name), fmt=fmt, backend=backend, precision=precision,
                         threads=threads)  # fmt: skip
    t1 = time.perf_counter()
    runner(batch)
    t2 = time.perf_counter()
    times = interleaved({name: (runner, batch)}, cfg.iterations, cfg.duration, cfg.warmup)[name]
    t = Timing.of(times)
    n = len(batch)
    gflops = FLOPS_PER_IMAGE * n / (t.p50_ms / 1e3) / 1e9
    peak = peak_rss_mb()  # the case's own, before the roofline's matrices
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
        roofline_fraction=gflops / rate(),
        peak_rss_mb=peak,
        samples_ms=[s * 1e3 for s in times],
    )


def predictor_overhead(cfg: BenchConfig, pixels: np.ndarray, threads: int) -> OverheadResult:
    """Predictor.predict on uint8 pixels against session.run on the same, normalised batch."""
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


def bench(cfg: BenchConfig, test: Split,
          on_case: Callable[[CaseResult], None] | None = None) -> BenchReport:  # fmt: skip
    """Measure every backend x batch size x thread count, plus roofline and predictor overhead,
    on the first test digits (the scenarios on all of `test`)."""
    for name in cfg.backends:
        cfg.path(name)  # a missing file fails before anything is measured
    pixels = np.resize(test.images, (max(cfg.batch_sizes), *test.images.shape[1:]))  # uint8
    rates: dict[int, float] = {}

    def rate(threads: int) -> float:  # timed as long as a case, up to 1 s a size
        if threads not in rates:
            rates[threads] = matmul_gflops(threads, seconds=min(1.0, cfg.duration))
        return rates[threads]

    measured: list[CaseResult] = []
    for threads in cfg.threads:
        for b in cfg.batch_sizes:
            batch = next(batches(pixels[:b], b))  # the one data feed: (b, 1, 28, 28) float32
            for name in cfg.backends:
                case = measure_case(name, cfg, batch, threads, partial(rate, threads))
                measured.append(case)
                if on_case:
                    on_case(case)
    eager = {(c.batch_size, c.threads): c.p50_ms for c in measured if c.backend == "pytorch"}
    measured = [
        _with_ratio(c, eager.get((c.batch_size, c.threads))) for c in measured
    ]  # ratios need eager's numbers from the same run
    overhead = []
    if "onnxruntime" in cfg.backends:
        overhead = [predictor_overhead(cfg, pixels[:1], t) for t in cfg.threads]
    return BenchReport(
        cases=measured,
        matmul_gflops=rates,
        overhead=overhead,
        scenarios=run_scenarios(cfg, test.images),
        environment={**environment(), "torch_threads_default": _torch_threads()},
        config={k: list(v) if isinstance(v, tuple) else v for k, v in asdict(cfg).items()},
        created=utc_now(),
    )


def images_needed(cfg: BenchConfig) -> int | None:
    """How many test digits `bench` feeds: the largest batch, or all of them for scenarios."""
    return None if cfg.scenarios else max(cfg.batch_sizes)


def _with_ratio(case: CaseResult, eager_p50: float | None) -> CaseResult:
    return replace(case, p50_vs_eager=None if eager_p50 is None else case.p50_ms / eager_p50)


def _torch_threads() -> int | None:
    """torch's thread count, when a torch backend ran (bench never imports torch itself)."""
    torch = sys.modules.get("torch")
    return None if torch is None else torch.get_num_threads()


@dataclass(frozen=True)
class Regression:
    backend: str
    batch_size: int
    threads: int
    metric: str  # "p50_ms" or "throughput"
    baseline: float
    current: float
    change_pct: float  # positive = worse


def check_max_regression(pct: float) -> float:
    if not (np.isfinite(pct) and pct >= 0):
        raise ConfigError(f"the allowed regression must be a finite percentage >= 0, got {pct}")
    return pct


@dataclass(frozen=True)
class RegressionCheck:
    """A bench report against a baseline: the cases that got worse by more than the limit."""

    baseline: str
    max_regression_pct: float
    found: list[Regression]

    def problems(self) -> list[str]:
        if not self.found:
            return []
        return [f"{len(self.found)} regression(s) beyond {self.max_regression_pct:g}% against "
                f"{self.baseline}"]  # fmt: skip


def compare_to_baseline(
    current: dict[str, Any], baseline: dict[str, Any],
    max_regression_pct: float = policy.MAX_REGRESSION_PCT,
) -> list[Regression]:  # fmt: skip
    """Cases whose p50 rose, or throughput fell, by more than `max_regression_pct` percent."""
    check_max_regression(max_regression_pct)
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
                found.append(Regression(c["backend"], c["batch_size"], c["threads"], metric,
                                        b[metric], c[metric], change))  # fmt: skip
    return found


def check_regressions(
    report: BenchReport,
    baseline_path: Path | str,
    baseline: dict[str, Any],
    max_regression_pct: float = policy.MAX_REGRESSION_PCT,
) -> RegressionCheck:
    """The verdict of `bench --compare`: the report against a baseline loaded by load_baseline."""
    found = compare_to_baseline(report.to_dict(), baseline, max_regression_pct)
    return RegressionCheck(str(baseline_path), max_regression_pct, found)


def load_baseline(path: Path | str) -> dict[str, Any]:
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(f"no baseline at {path}") from None
    except (OSError, ValueError):
        data = None
    if not isinstance(data, dict) or not isinstance(data.get("cases"), list):
        raise InputError(f"{path} is not a bench JSON report (no 'cases' list)")
    env = data.get("environment") if isinstance(data.get("environment"), dict) else {}
    flags = env.get("cpu_flags")
    theirs = env.get("isa_class") or (isa_class(flags) if isinstance(flags, list) else None)
    if theirs != isa_class():
        raise InputError(
            f"{path} was measured on another kind of CPU ({theirs or 'unknown'}; this one is "
            f"{isa_class()}): timings compare only between CPUs of one class, so measure a "
            "baseline on this machine"
        )
    return data


def plot(report: BenchReport, path: Path | str) -> None:
    """Latency distribution per case as a PNG (needs matplotlib: pip install 'mnist-edge[plot]')."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ConfigError("--plot needs matplotlib: pip install 'mnist-edge[plot]'") from None
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


def run_scenarios(cfg: BenchConfig, images: np.ndarray) -> list[dict[str, Any]]:
    """MLPerf-style scenarios on Predictor(cfg.model), fed uint8 test images as an app would."""
    out = []
    threads = max(cfg.threads)
    for name in cfg.scenarios:
        if name == "server":  # workers give the parallelism: one intra-op thread per call
            out.append(server(Predictor(cfg.model, threads=1), images, cfg))
        else:
            pred = Predictor(cfg.model, threads=threads)
            fn = {"single-stream": single_stream, "offline": offline, "idle": idle}[name]
            out.append({**fn(pred, images, cfg), "threads": threads})
    return out


def single_stream(pred: Any, images: np.ndarray, cfg: BenchConfig) -> dict[str, Any]:
    """One query (one image) at a time, the next as soon as the last answered; p90 headline."""
    for i in range(cfg.warmup):
        pred.predict(images[i % len(images)])
    times = []
    for i in range(cfg.queries):
        t0 = time.perf_counter()
        pred.predict(images[i % len(images)])
        times.append(time.perf_counter() - t0)
    p = Timing.of(times).summary()
    summary = (f"p90 {p['p90_ms']:.3f} ms (p50 {p['p50_ms']:.3f}, p99 {p['p99_ms']:.3f}, "
               f"p99.9 {p['p99_9_ms']:.3f}) over {p['queries']} queries")  # fmt: skip
    return {"scenario": "single-stream", **p, "summary": summary}


def offline(pred: Any, images: np.ndarray, cfg: BenchConfig) -> dict[str, Any]:
    """All queries available at once: images/s at each batch size, and the best."""
    per_batch = {}
    seconds = cfg.duration if cfg.iterations is None else None
    for b in cfg.offline_batch_sizes:
        batch = np.resize(images, (b, *images.shape[1:]))
        times = interleaved({"b": (pred.predict, batch)}, cfg.iterations, seconds or 1.0, 2)["b"]
        per_batch[b] = float(b / np.median(times))
    best = max(per_batch, key=per_batch.get)
    summary = f"best {per_batch[best]:.0f} images/s at batch {best}"
    return {"scenario": "offline", "images_per_s": per_batch, "best_batch_size": best,
            "best_images_per_s": per_batch[best], "summary": summary}  # fmt: skip


def server(pred: Any, images: np.ndarray, cfg: BenchConfig) -> dict[str, Any]:
    """Poisson arrivals at cfg.qps, answered by cfg.workers threads sharing one Predictor;
    latency counts from arrival (queueing included). Valid while p99 <= the latency bound."""
    rng = np.random.default_rng(0)
    arrivals = np.cumsum(rng.exponential(1.0 / cfg.qps, cfg.queries))
    todo: queue.Queue = queue.Queue()
    latencies = [0.0] * cfg.queries

    def worker() -> None:
        while (item := todo.get()) is not None:
            i, t_arrival = item
            pred.predict(images[i % len(images)])
            latencies[i] = time.perf_counter() - t_arrival

    pool = [threading.Thread(target=worker, daemon=True) for _ in range(cfg.workers)]
    for t in pool:
        t.start()
    for i in range(cfg.warmup):
        pred.predict(images[i % len(images)])
    start = time.perf_counter()
    for i, at in enumerate(arrivals):
        delay = start + at - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        todo.put((i, start + at))
    for _ in pool:
        todo.put(None)
    for t in pool:
        t.join()
    wall = time.perf_counter() - start
    p = Timing.of(latencies).summary()
    valid = bool(p["p99_ms"] <= cfg.latency_bound_ms)
    summary = (f"{cfg.qps:g} qps offered, {cfg.queries / wall:.1f} served, {cfg.workers} workers: "
               f"p99 {p['p99_ms']:.3f} ms {'<=' if valid else '>'} bound "
               f"{cfg.latency_bound_ms:g} ms ({'VALID' if valid else 'INVALID'})")  # fmt: skip
    return {"scenario": "server", **p, "target_qps": cfg.qps, "achieved_qps": cfg.queries / wall,
            "workers": cfg.workers, "latency_bound_ms": cfg.latency_bound_ms, "valid": valid,
            "summary": summary}  # fmt: skip


def idle(pred: Any, images: np.ndarray, cfg: BenchConfig) -> dict[str, Any]:
    """The first call after an idle gap, against warm back-to-back calls."""
    warm = [0.0] * 50
    for i in range(len(warm)):
        t0 = time.perf_counter()
        pred.predict(images[i % len(images)])
        warm[i] = time.perf_counter() - t0
    cold = []
    for i in range(cfg.idle_samples):
        time.sleep(cfg.idle_gap_s)
        t0 = time.perf_counter()
        pred.predict(images[i % len(images)])
        cold.append(time.perf_counter() - t0)
    warm_p50, cold_p50 = float(np.median(warm)) * 1e3, float(np.median(cold)) * 1e3
    summary = (
        f"after {cfg.idle_gap_s:g} s idle: p50 {cold_p50:.3f} ms (max "
        f"{max(cold) * 1e3:.3f}) vs warm {warm_p50:.3f} ms = {cold_p50 / warm_p50:.2f}x"
    )
    return {"scenario": "idle", "idle_gap_s": cfg.idle_gap_s, "after_idle_p50_ms": cold_p50,
            "after_idle_max_ms": max(cold) * 1e3, "warm_p50_ms": warm_p50,
            "ratio": cold_p50 / warm_p50, "samples_ms": [c * 1e3 for c in cold],
            "summary": summary}  # fmt: skip
