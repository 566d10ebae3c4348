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
manifest; profile.py) with the CPU it was measured on; `Predictor.from_profile` and `predict
--profile` use it, and refuse it on a CPU with other flags. The test digits come in as a value.
Torch-free.
"""

from __future__ import annotations

import gc
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import layout, manifest, policy
from . import profile as profiles
from .data import Split, batches
from .errors import ConfigError, MnistEdgeError
from .files import sha256
from .layout import Layout
from .machine import check_threads, measured_on, peak_rss_mb, reset_peak_rss
from .metrics import TaskRule, accuracy, agreement
from .runners import BACKENDS, Runner, load_runner, outputs, select_cases
from .threads import cores
from .timing import time_calls

PROFILE_NAME = profiles.NAME
OBJECTIVES = ("latency", "throughput")
TUNED_FORMATS = layout.DEPLOYABLE  # the files an application deploys


@dataclass(frozen=True)
class TuneConfig:
    """What to try and how to judge it."""

    model: str = str(Layout().onnx)  # the fp32 ONNX; the other formats' files lie beside it
    threads: tuple[int, ...] = ()  # () = 1 and every core
    test_limit: int = policy.TUNE_TEST_LIMIT  # the first test digits each case is gated on
    max_accuracy_drop: float = policy.DEPLOY_MAX_ACCURACY_DROP
    min_argmax_agreement: float = policy.DEPLOY_MIN_AGREEMENT
    objective: str = "latency"  # "latency" (batch-1 p50) or "throughput" (offline images/s)
    duration: float = 1.0  # seconds of timing per measurement
    offline_batch: int = 64
    backends: tuple[str, ...] = ()  # case names or patterns, as bench's (); () = every case
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
        select_cases(self.backends)  # every name or pattern matches a case
        self.rule  # noqa: B018  (validates the thresholds)

    @property
    def rule(self) -> TaskRule:
        return TaskRule(self.max_accuracy_drop, self.min_argmax_agreement)

    @property
    def thread_counts(self) -> tuple[int, ...]:
        return self.threads or tuple(dict.fromkeys((1, cores())))

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
    model = layout.require(cfg.model, "onnx")
    wanted = select_cases(cfg.backends) if cfg.backends else None
    found, skipped = [], {}
    for backend in BACKENDS.values():
        for name, (fmt, precision) in backend.cases.items():
            if fmt not in TUNED_FORMATS or (wanted is not None and name not in wanted):
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


def open_reference(cfg: TuneConfig) -> Runner:
    """The fp32 model in ONNX Runtime, every case's reference (loaded before the data: a bad
    file is named first)."""
    return load_runner(cfg.model, fmt="onnx", backend="onnxruntime")


def tune(cfg: TuneConfig, test: Split, reference: Runner | None = None) -> TuneReport:
    """Try every case, gate it on the first cfg.test_limit digits of `test`, time it, rank them,
    write the winner's profile."""
    cases, skipped = candidates(cfg)
    fp32 = reference or open_reference(cfg)
    test = test.head(cfg.test_limit)
    expected = outputs(fp32, test.images)
    one = next(batches(test.images[:1], 1))
    many = next(batches(np.resize(test.images, (cfg.offline_batch, 28, 28)), cfg.offline_batch))
    trials = []
    for case in cases:
        gate: dict[str, Any] | None = None
        for threads in cfg.thread_counts:
            runner = None  # the last case's runner is gone before this one loads (ExecuTorch
            gc.collect()  # keeps one thread count per process while a runner lives)
            reset_peak_rss()
            try:
                runner = _load(case, threads)
                if gate is None:
                    gate = _gate(runner, test.images, test.labels, expected, cfg.rule)
                t1 = time_calls(runner, one, duration=cfg.duration)
                tn = time_calls(runner, many, duration=cfg.duration)
            except MnistEdgeError as exc:
                trials.append(Trial(case, threads, error=str(exc)))
                continue
            trials.append(Trial(case, threads, **gate, p50_ms=t1.p50_ms, p90_ms=t1.p90_ms,
                                images_per_s=cfg.offline_batch / (tn.p50_ms / 1e3),
                                load_ms=runner.load_ms, peak_rss_mb=peak_rss_mb()))  # fmt: skip
            del runner
    report = TuneReport(trials, cfg.objective, cfg.rule, len(test.labels), skipped)
    if report.best is not None:
        report.profile = str(write_profile(cfg, report, report.best))
    return report


def _load(case: Case, threads: int) -> Runner:
    return load_runner(case.path, fmt=case.format, backend=case.backend,
                       precision=case.precision, threads=threads)  # fmt: skip


def _gate(runner: Runner, images: np.ndarray, labels: np.ndarray, reference: np.ndarray,
          rule: TaskRule) -> dict[str, Any]:  # fmt: skip
    """The rule on the gate's test digits, against the fp32 reference's answers."""
    out = outputs(runner, images)
    ref_accuracy = accuracy(reference.argmax(1), labels)
    got = accuracy(out.argmax(1), labels)
    agree = agreement(out, reference)
    return {"passed": rule.passes(ref_accuracy, got, agree), "accuracy": got,
            "reference_accuracy": ref_accuracy, "argmax_agreement": agree,
            "max_abs_diff": float(np.abs(out - reference).max())}  # fmt: skip


def write_profile(cfg: TuneConfig, report: TuneReport, best: Trial) -> Path:
    """deploy.json for the best trial, beside the model (listed in its folder's manifest)."""
    path = cfg.profile_path
    model = Path(best.case.path)
    profile = profiles.Profile(
        model=profiles.relative_model(model, path), model_sha256=sha256(model),
        backend=best.case.backend, format=best.case.format, precision=best.case.precision,
        threads=best.threads, case=best.case.name, objective=report.objective,
        measured={k: getattr(best, k) for k in
                  ("p50_ms", "p90_ms", "images_per_s", "load_ms", "peak_rss_mb")},
        gate={k: getattr(best, k) for k in
              ("accuracy", "reference_accuracy", "argmax_agreement", "max_abs_diff")}
        | {"test_images": report.test_images},
        rule=asdict(report.rule), machine=report.machine,
    )  # fmt: skip
    profiles.write(path, profile)
    manifest.register_profile(path.parent, path, asdict(profile))
    return path


def read_profile(path: Path | str) -> dict[str, Any]:
    """A deployment profile as a dict (profile.read checks it), with its model's path."""
    loaded = profiles.read(path)
    return {**asdict(loaded.profile), "model_path": str(loaded.model_path)}
