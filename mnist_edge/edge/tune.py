"""`mnist-edge tune`: the fastest path on this CPU that still gives the model's answers.

Every (backend, format, precision) of the catalogue whose file lies beside the fp32 model, whose
backend is installed and whose precision this CPU offers is tried at each thread count:

1. gated by one rule for all (policy.DEPLOY_*): on the first `test_limit` test digits, against
   the fp32 model in ONNX Runtime, the accuracy may drop at most `max_accuracy_drop` points and
   at least `min_argmax_agreement` percent of the digits keep the reference's answer (threads
   change no answer beyond fp32 rounding, so a case is gated once);
2. measured: single-stream latency (batch 1, p50/p90), offline throughput (batch
   `offline_batch`), load time and peak resident memory, each case in turn;
3. ranked: passing cases by the objective (latency: p50; throughput: images/s), then the rest.

The winner is written as a deployment profile (deploy.json beside the model, listed in the
manifest) with the CPU it was measured on; `Predictor.from_profile` and `predict --profile`
use it, and refuse it on a CPU with other flags. Torch-free.
"""

from __future__ import annotations

import gc
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from . import manifest, policy
from .errors import ArtifactError, ConfigError, MnistEdgeError, reading
from .files import sha256, utc_now, write_json
from .layout import Layout
from .machine import check_threads, cpu_flags, isa_class, measured_on, peak_rss_mb, reset_peak_rss
from .parity import TaskRule
from .runners import BACKENDS, Runner, load_runner

PROFILE_NAME = "deploy.json"
PROFILE_KIND = "mnist-edge deployment profile"
OBJECTIVES = ("latency", "throughput")
TUNED_FORMATS = ("onnx", "onnx-int8", "ort", "torchscript", "pt2")  # deployable files


@dataclass(frozen=True)
class TuneConfig:
    """What to try and how to judge it."""

    model: str = str(Layout().onnx)  # the fp32 ONNX; the other formats' files lie beside it
    threads: tuple[int, ...] = ()  # () = 1 and every core
    test_limit: int = 2000  # test digits each case is gated on
    data_dir: str | None = None
    max_accuracy_drop: float = policy.DEPLOY_MAX_ACCURACY_DROP
    min_argmax_agreement: float = policy.DEPLOY_MIN_AGREEMENT
    objective: str = "latency"  # "latency" (batch-1 p50) or "throughput" (offline images/s)
    duration: float = 1.0  # seconds of timing per measurement
    offline_batch: int = 64
    backends: tuple[str, ...] = ()  # () = every registered backend
    profile: str | None = None  # where deploy.json goes (default: beside the model)

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES:
            raise ConfigError(f"objective must be one of {', '.join(OBJECTIVES)}, "
                              f"got {self.objective!r}")  # fmt: skip
        for t in self.threads:
            check_threads(t, "thread counts")
        if self.test_limit < 1 or self.offline_batch < 1:
            raise ConfigError("the test limit and the offline batch must be at least 1")
        if not 0 < self.duration < 1e6:
            raise ConfigError(f"duration must be > 0 seconds, got {self.duration}")
        unknown = [b for b in self.backends if b not in BACKENDS]
        if unknown:
            raise ConfigError(f"unknown backend {unknown[0]}; choose from {', '.join(BACKENDS)}")
        self.rule  # noqa: B018  (validates the thresholds)

    @property
    def rule(self) -> TaskRule:
        return TaskRule(self.max_accuracy_drop, self.min_argmax_agreement)

    @property
    def thread_counts(self) -> tuple[int, ...]:
        return self.threads or tuple(dict.fromkeys((1, os.cpu_count() or 1)))

    @property
    def profile_path(self) -> Path:
        return Path(self.profile) if self.profile else Path(self.model).parent / PROFILE_NAME


@dataclass(frozen=True)
class Case:
    """One (backend, format, precision) on one file."""

    name: str
    backend: str
    format: str
    precision: str
    path: str


@dataclass(frozen=True)
class Trial:
    """A case at a thread count: its gate and its speed."""

    case: Case
    threads: int
    passed: bool = False
    accuracy: float | None = None  # percent on the gate's test digits
    reference_accuracy: float | None = None
    argmax_agreement: float | None = None  # percent answering as the fp32 reference
    max_abs_diff: float | None = None  # largest output difference from the reference
    p50_ms: float | None = None  # batch 1
    p90_ms: float | None = None
    images_per_s: float | None = None  # offline, batch TuneConfig.offline_batch
    load_ms: float | None = None
    peak_rss_mb: float | None = None
    error: str | None = None  # when the case could not run

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self.case), **{k: v for k, v in asdict(self).items() if k != "case"}}


@dataclass
class TuneReport:
    trials: list[Trial]
    objective: str
    rule: TaskRule
    test_images: int
    skipped: dict[str, str] = field(default_factory=dict)  # case -> why it was not tried
    profile: str | None = None  # the deploy.json written
    machine: dict[str, Any] = field(default_factory=measured_on)

    def ranked(self) -> list[Trial]:
        """Passing trials, best first by the objective, then the rest."""

        def key(t: Trial) -> tuple:
            speed = -(t.images_per_s or 0) if self.objective == "throughput" else (t.p50_ms or 1e9)
            return (not t.passed, speed)

        return sorted(self.trials, key=key)

    @property
    def best(self) -> Trial | None:
        first = next(iter(self.ranked()), None)
        return first if first is not None and first.passed else None

    def problems(self) -> list[str]:
        if self.best is None:
            return ["no backend, precision and thread count kept the model's answers "
                    f"(accuracy drop <= {self.rule.max_accuracy_drop:g} points, agreement >= "
                    f"{self.rule.min_argmax_agreement:g}%); no profile written"]  # fmt: skip
        return []

    def to_dict(self) -> dict[str, Any]:
        return {"objective": self.objective, "rule": asdict(self.rule),
                "test_images": self.test_images, "machine": self.machine,
                "best": None if self.best is None else self.best.to_dict(),
                "ranked": [t.to_dict() for t in self.ranked()], "skipped": self.skipped,
                "profile": self.profile, "passed": not self.problems()}  # fmt: skip


def candidates(cfg: TuneConfig) -> tuple[list[Case], dict[str, str]]:
    """The cases to try here, and why each other one is not tried."""
    model = Path(cfg.model)
    if not model.is_file():
        raise ArtifactError(f"no model at {model}; export one with `mnist-edge export`")
    found, skipped = [], {}
    for backend in BACKENDS.values():
        if cfg.backends and backend.name not in cfg.backends:
            continue
        for name, (fmt, precision) in backend.cases.items():
            if fmt not in TUNED_FORMATS:
                continue
            path = model if fmt == "onnx" else Layout.beside(model).artifact(fmt)
            if not backend.installed():
                extra = f"pip install 'mnist-edge[{backend.extra}]'" if backend.extra else ""
                skipped[name] = f"{backend.name} is not installed ({extra})"
            elif not path.is_file():
                skipped[name] = f"no {path.name} beside the model"
            elif precision not in backend.precisions(fmt):
                skipped[name] = getattr(backend.impl(), "WHY_NOT", {}).get(
                    precision, f"{backend.name} does not offer {precision} here"
                )
            else:
                found.append(Case(name, backend.name, fmt, precision, str(path)))
    return found, skipped


def tune(cfg: TuneConfig) -> TuneReport:
    """Try every case, gate it, time it, rank them, write the winner's profile."""
    from .bench import Timing, interleaved
    from .data import batches, load_split

    cases, skipped = candidates(cfg)
    fp32 = load_runner(cfg.model, fmt="onnx", backend="onnxruntime")  # a bad file before the data
    test = load_split("test", cfg.data_dir, cfg.test_limit)
    reference = _outputs(fp32, test.images)
    one = next(batches(test.images[:1], 1))
    many = next(batches(np.resize(test.images, (cfg.offline_batch, 28, 28)), cfg.offline_batch))
    trials = []
    for case in cases:
        gate: dict[str, Any] | None = None
        for threads in cfg.thread_counts:
            gc.collect()
            reset_peak_rss()
            try:
                runner = _load(case, threads)
                if gate is None:
                    gate = _gate(runner, test.images, test.labels, reference, cfg.rule)
                t1 = Timing.of(interleaved({"b1": (runner, one)}, None, cfg.duration)["b1"])
                tn = Timing.of(interleaved({"bn": (runner, many)}, None, cfg.duration)["bn"])
            except MnistEdgeError as exc:
                trials.append(Trial(case, threads, error=str(exc)))
                continue
            trials.append(Trial(case, threads, **gate, p50_ms=t1.p50_ms, p90_ms=t1.p90_ms,
                                images_per_s=cfg.offline_batch / (tn.p50_ms / 1e3),
                                load_ms=runner.load_ms, peak_rss_mb=peak_rss_mb()))  # fmt: skip
            del runner
    report = TuneReport(trials, cfg.objective, cfg.rule, len(test.labels), skipped)
    if report.best is not None:
        report.profile = str(write_profile(cfg, report))
    return report


def _load(case: Case, threads: int) -> Runner:
    return load_runner(case.path, fmt=case.format, backend=case.backend,
                       precision=case.precision, threads=threads)  # fmt: skip


def _outputs(runner: Runner, images: np.ndarray) -> np.ndarray:
    from .runners import outputs

    return outputs(runner, images)


def _gate(runner: Runner, images: np.ndarray, labels: np.ndarray, reference: np.ndarray,
          rule: TaskRule) -> dict[str, Any]:  # fmt: skip
    """The rule on the gate's test digits, against the fp32 reference's answers."""
    out = _outputs(runner, images)
    ref_accuracy = float((reference.argmax(1) == labels).mean() * 100)
    accuracy = float((out.argmax(1) == labels).mean() * 100)
    agreement = float((out.argmax(1) == reference.argmax(1)).mean() * 100)
    return {"passed": rule.passes(ref_accuracy, accuracy, agreement), "accuracy": accuracy,
            "reference_accuracy": ref_accuracy, "argmax_agreement": agreement,
            "max_abs_diff": float(np.abs(out - reference).max())}  # fmt: skip


def write_profile(cfg: TuneConfig, report: TuneReport) -> Path:
    """deploy.json for the best trial, beside the model (listed in its folder's manifest)."""
    best = report.best
    assert best is not None
    path = cfg.profile_path
    model = Path(best.case.path)
    profile = {
        "kind": PROFILE_KIND,
        "model": os.path.relpath(model.resolve(), path.parent.resolve()),
        "model_sha256": sha256(model),
        "backend": best.case.backend,
        "format": best.case.format,
        "precision": best.case.precision,
        "threads": best.threads,
        "case": best.case.name,
        "objective": report.objective,
        "measured": {k: getattr(best, k) for k in
                     ("p50_ms", "p90_ms", "images_per_s", "load_ms", "peak_rss_mb")},
        "gate": {k: getattr(best, k) for k in
                 ("accuracy", "reference_accuracy", "argmax_agreement", "max_abs_diff")}
                | {"test_images": report.test_images},
        "rule": asdict(report.rule),
        "machine": report.machine,
        "created": utc_now(),
        "mnist_edge_version": __version__,
    }  # fmt: skip
    write_json(path, profile)
    manifest.register_profile(path.parent, path, profile)
    return path


def read_profile(path: Path | str) -> dict[str, Any]:
    """A deployment profile, checked to be one and to fit this CPU and its model file."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"no deployment profile at {path}; make one with `mnist-edge tune`")
    with reading(path, "a deployment profile (JSON)", ArtifactError):
        profile = json.loads(path.read_text())
    keys = ("model", "model_sha256", "backend", "format", "precision", "threads", "machine")
    if (
        not isinstance(profile, dict)
        or profile.get("kind") != PROFILE_KIND
        or any(k not in profile for k in keys)
    ):
        raise ArtifactError(f"{path} is not a deployment profile made by `mnist-edge tune`")
    theirs = profile["machine"].get("cpu_flags")
    if theirs != cpu_flags():
        raise ConfigError(
            f"{path} was tuned on a CPU with other flags ({profile['machine'].get('isa_class')}: "
            f"{' '.join(theirs or []) or 'none'}); this one is {isa_class()} "
            f"({' '.join(cpu_flags()) or 'none'}): run `mnist-edge tune` on this machine"
        )
    model = Path(os.path.normpath(path.parent / profile["model"]))
    if not model.is_file() or sha256(model) != profile["model_sha256"]:
        raise ArtifactError(f"{path} names {model}, which is missing or changed since it was "
                            "tuned: run `mnist-edge tune` again")  # fmt: skip
    return {**profile, "model_path": str(model)}
