"""Do the exported models give PyTorch's answers? compare(...) -> result objects; no printing.

Semantics follow Polygraphy's comparator (metrics.DiffStats): per output, the max/mean/median/p99
of the absolute and relative differences (relative = |candidate - reference| / |reference|), and
an element passes when it is within atol OR within rtol of the reference. Beyond the tensors it
judges the task: argmax agreement and each model's accuracy against the labels. The test split
comes in as a value (a command loads it once).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from . import layout, policy, spec
from .data import Split, batches
from .errors import ArtifactError, ConfigError
from .metrics import EPS, DiffStats, TaskRule, decisive_rows
from .runners import Runner, load_runner

__all__ = ["VerifyConfig", "TaskRule", "InputGroup", "GroupResult", "ArtifactResult",
           "ParityReport", "compare", "decisive_rows", "input_groups", "check", "check_against",
           "task_rule", "ATOL", "RTOL", "EPS"]  # fmt: skip

ATOL, RTOL = policy.ATOL, policy.RTOL  # the elementwise rule (why these values: policy.py)
TASK_GROUP = "test set"  # the group a task-judged artifact is judged on


@dataclass(frozen=True)
class VerifyConfig:
    """How to check artifacts: against what, on which data, with which tolerances."""

    reference: str | None = None  # a checkpoint or an artifact; None skips the check
    atol: float = ATOL
    rtol: float = RTOL
    threads: int | None = None
    backend: str | None = None  # run the artifacts on this backend (default: their format's)
    precision: str | None = None  # at this precision (default: their format's)

    def __post_init__(self) -> None:
        for name in ("atol", "rtol"):
            value = getattr(self, name)
            if not (np.isfinite(value) and value >= 0):
                raise ConfigError(f"{name} must be a finite number >= 0, got {value}")


@dataclass(frozen=True)
class InputGroup:
    """A named set of inputs, fed to every model in the same batches."""

    name: str
    inputs: np.ndarray  # uint8 pixels (N, 28, 28), or normalised float32 (N, 1, 28, 28)
    batch_size: int
    labels: np.ndarray | None = None  # (N,) when known

    @property
    def n(self) -> int:
        return len(self.inputs)

    @property
    def batches(self) -> Iterator[np.ndarray]:
        """Normalised float32 (B, 1, 28, 28) batches, made one at a time (bounded memory)."""
        if self.inputs.dtype == np.uint8:
            yield from batches(self.inputs, self.batch_size)
        else:
            for i in range(0, len(self.inputs), self.batch_size):
                yield self.inputs[i : i + self.batch_size]


@dataclass(frozen=True)
class GroupResult:
    """One artifact against the reference on one input group."""

    name: str
    n: int  # images
    atol: float
    rtol: float
    max_abs_diff: float
    mean_abs_diff: float
    median_abs_diff: float
    p99_abs_diff: float
    max_rel_diff: float
    mean_rel_diff: float
    median_rel_diff: float
    p99_rel_diff: float
    min_atol: float  # smallest atol that passes every element at this rtol
    min_rtol: float  # smallest rtol that passes every element at this atol
    failing_elements: int
    argmax_agreement: float  # percent of images with the same top class
    reference_accuracy: float | None = None  # percent, when labels are known
    candidate_accuracy: float | None = None
    passed: bool = False
    # argmax agreement on the images whose top class the tolerances protect (decisive_rows);
    # the others are near-ties, where two correct runtimes may answer differently
    decisive_agreement: float = 100.0
    near_ties: int = 0

    def __bool__(self) -> bool:
        return self.passed


@dataclass(frozen=True)
class ArtifactResult:
    """All groups for one artifact."""

    path: str
    format: str
    groups: list[GroupResult]
    judge: str = "tensor"  # "tensor": every element within tolerance; "task": see task_ok
    backend: str = ""  # the engine that ran it
    precision: str = "fp32"
    rule: TaskRule | None = None  # the task rule, when judge == "task"

    def task_ok(self, g: GroupResult) -> bool:
        """The whole test set passes the task rule (INT8); other groups are reported only
        (edge inputs saturate INT8 by design; the batch-size groups are small subsets)."""
        if g.name != TASK_GROUP or g.reference_accuracy is None or g.candidate_accuracy is None:
            return True
        rule = self.rule or TaskRule()
        return rule.passes(g.reference_accuracy, g.candidate_accuracy, g.argmax_agreement)

    def group_ok(self, g: GroupResult) -> bool:
        return self.task_ok(g) if self.judge == "task" else g.passed

    @property
    def passed(self) -> bool:
        return all(self.group_ok(g) for g in self.groups)

    def __bool__(self) -> bool:
        return self.passed

    def group(self, name: str) -> GroupResult:
        return next(g for g in self.groups if g.name == name)

    def verdict(self) -> dict[str, object]:
        """The key figures recorded in the manifest."""
        test = self.groups[0]
        return {
            "passed": self.passed,
            "atol": test.atol,
            "rtol": test.rtol,
            "max_abs_diff": max(g.max_abs_diff for g in self.groups),
            "max_rel_diff": max(g.max_rel_diff for g in self.groups),
            "test_images": test.n,
            "argmax_agreement": test.argmax_agreement,
            "decisive_agreement": test.decisive_agreement,
            "near_ties": test.near_ties,
            "accuracy": test.candidate_accuracy,
            "reference_accuracy": test.reference_accuracy,
            "failed_groups": [g.name for g in self.groups if not self.group_ok(g)],
            "judge": self.judge,
            "backend": self.backend,
            "precision": self.precision,
            **({"rule": asdict(self.rule)} if self.rule else {}),
        }

    def to_dict(self) -> dict[str, object]:
        return {**asdict(self), "passed": self.passed}


@dataclass(frozen=True)
class ParityReport:
    artifacts: list[ArtifactResult]
    atol: float
    rtol: float
    checkpoint: str = ""  # the reference: a checkpoint, or an artifact (--reference)
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return bool(self.artifacts) and all(self.artifacts)

    def __bool__(self) -> bool:
        return self.passed

    def failed(self) -> list[str]:
        return [a.path for a in self.artifacts if not a.passed]

    def verdicts(self) -> dict[str, dict[str, object]]:
        """{artifact path: verdict}, for the manifest."""
        return {a.path: a.verdict() for a in self.artifacts}

    def to_dict(self) -> dict[str, object]:
        return {
            "passed": self.passed,
            "atol": self.atol,
            "rtol": self.rtol,
            "checkpoint": self.checkpoint,
            "reference": self.checkpoint,
            "artifacts": [a.to_dict() for a in self.artifacts],
            **self.extra,
        }


def compare(
    name: str,
    reference: np.ndarray,
    candidate: np.ndarray,
    *,
    atol: float = ATOL,
    rtol: float = RTOL,
    labels: np.ndarray | None = None,
) -> GroupResult:
    """Elementwise comparison of two (N, 10) outputs (NaN or a shape mismatch fails)."""
    if reference.shape != candidate.shape:
        raise ArtifactError(
            f"{name}: candidate output shape {candidate.shape} differs from {reference.shape}"
        )
    stats = DiffStats(atol, rtol)
    stats.add(reference, candidate, labels)
    return group_result(name, stats)


def group_result(name: str, s: DiffStats) -> GroupResult:
    """A GroupResult from the differences one group accumulated."""
    ref_accuracy, cand_accuracy = s.accuracies()
    return GroupResult(
        name=name, n=s.rows, atol=s.atol, rtol=s.rtol, max_abs_diff=s.max_abs,
        mean_abs_diff=s.mean_abs, median_abs_diff=s.median_abs(), p99_abs_diff=s.p99_abs(),
        max_rel_diff=s.max_rel, mean_rel_diff=s.mean_rel, median_rel_diff=s.median_rel(),
        p99_rel_diff=s.p99_rel(), min_atol=s.min_atol, min_rtol=s.min_rtol,
        failing_elements=s.failing, argmax_agreement=s.argmax_agreement,
        reference_accuracy=ref_accuracy, candidate_accuracy=cand_accuracy, passed=s.passed,
        decisive_agreement=s.decisive_agreement, near_ties=s.near_ties,
    )  # fmt: skip


def input_groups(
    images: np.ndarray, labels: np.ndarray, *, batch_size: int = policy.BATCH, seed: int = 0
) -> list[InputGroup]:
    """The test set in batches, the same images at batch sizes 1/2/7/64, and edge inputs."""
    groups = [InputGroup("test set", images, batch_size, labels)]
    for b in (1, 2, 7, 64):
        groups.append(InputGroup(f"batch {b}", images[:128], b, labels[:128]))
    side, n = spec.IMAGE_SIZE, 8
    rng = np.random.default_rng(seed)
    shape = (n, 1, side, side)
    contract = spec.Contract()

    def from_unit(pixels01: np.ndarray) -> np.ndarray:  # pixels on the 0..1 scale -> normalised
        return ((pixels01 - contract.mean) / contract.std).astype(np.float32)

    edges = {
        "all background": from_unit(np.zeros(shape)),
        "all ink": from_unit(np.ones(shape)),
        "uniform noise": from_unit(rng.uniform(0, 1, shape)),
        "far out of range": from_unit(rng.uniform(-50, 50, shape)),  # 50x the pixel range
    }
    groups += [InputGroup(name, x, n) for name, x in edges.items()]
    return groups


def run_groups(runner: Runner, groups: list[InputGroup]) -> list[np.ndarray]:
    """Outputs of `runner` on each group, (N, 10) each."""
    return [np.concatenate([runner(b) for b in g.batches]) for g in groups]


def task_rule(runner: Runner) -> TaskRule | None:
    """How a run is judged: fp32 on the tensors (None), int8 by the rule its file carries, bf16
    by the deployment rule (reduced precision changes the numbers, so the task is judged)."""
    task_judged = runner.format in layout.FORMATS and layout.FORMATS[runner.format].task_judged
    if runner.precision == "int8" or task_judged:
        return TaskRule.from_metadata(runner.metadata)
    if runner.precision == "bf16":
        return TaskRule.deployment()
    return None


def check(
    reference: Runner,
    candidates: list[Runner],
    groups: list[InputGroup],
    *,
    atol: float = ATOL,
    rtol: float = RTOL,
) -> list[ArtifactResult]:
    """Compare every candidate with the reference on every group."""
    ref_outputs = run_groups(reference, groups)
    results = []
    for cand in candidates:
        cand_outputs = run_groups(cand, groups)
        rule = task_rule(cand)
        tol = {"atol": rule.atol, "rtol": rule.rtol} if rule else {"atol": atol, "rtol": rtol}
        results.append(
            ArtifactResult(
                path=str(cand.path),
                format=cand.format,
                backend=cand.backend,
                precision=cand.precision,
                groups=[
                    compare(g.name, r, c, labels=g.labels, **tol)
                    for g, r, c in zip(groups, ref_outputs, cand_outputs, strict=True)
                ],
                judge="task" if rule else "tensor",
                rule=rule,
            )
        )
    return results


def check_against(
    reference: Path | str,
    artifacts: list[Path | str],
    test: Split,
    *,
    atol: float = ATOL,
    rtol: float = RTOL,
    threads: int | None = None,
    backend: str | None = None,
    precision: str | None = None,
) -> ParityReport:
    """Parity of artifacts against a reference (a checkpoint's PyTorch model, or another
    artifact such as the fp32 ONNX) on `test` and the edge inputs; the artifacts run on
    `backend` at `precision` when given, the reference on its format's own backend."""
    candidates, ref = load_all(reference, artifacts, threads=threads, backend=backend,
                               precision=precision)  # fmt: skip
    return check_loaded(ref, candidates, test, atol=atol, rtol=rtol, reference_name=str(reference))


def load_all(reference: Path | str, artifacts: list[Path | str], *, threads: int | None = None,
             backend: str | None = None,
             precision: str | None = None) -> tuple[list[Runner], Runner]:  # fmt: skip
    """(candidates, reference) loaded: everything the user named, before any data is read, so
    that a bad file fails fast."""
    if not artifacts:
        raise ArtifactError("no artifacts to check; export some with `mnist-edge export`")
    candidates = [load_runner(path, threads=threads, backend=backend, precision=precision)
                  for path in artifacts]  # fmt: skip
    return candidates, load_runner(reference, threads=threads)


def check_loaded(ref: Runner, candidates: list[Runner], test: Split, *, atol: float = ATOL,
                 rtol: float = RTOL, reference_name: str = "") -> ParityReport:  # fmt: skip
    """Parity of loaded candidates against a loaded reference on `test` and the edge inputs."""
    groups = input_groups(test.images, test.labels)
    results = check(ref, candidates, groups, atol=atol, rtol=rtol)
    return ParityReport(results, atol=atol, rtol=rtol, checkpoint=reference_name or str(ref.path))
