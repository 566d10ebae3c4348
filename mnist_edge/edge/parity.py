"""Do the exported models give PyTorch's answers? compare(...) -> result objects; no printing.

Semantics follow Polygraphy's comparator: per output, the max/mean/median/p99 of the absolute and
relative differences (relative = |candidate - reference| / |reference|), and an element passes
when it is within atol OR within rtol of the reference. Beyond the tensors it judges the task:
argmax agreement and each model's accuracy against the labels.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from . import policy, spec
from .errors import ArtifactError, ConfigError

if TYPE_CHECKING:
    from .runners import Runner

ATOL, RTOL = policy.ATOL, policy.RTOL  # the elementwise rule (why these values: policy.py)
EPS = 1e-12  # keeps the relative difference finite where the reference is 0
TASK_JUDGED = ("onnx-int8",)
TASK_GROUP = "test set"  # the group a task-judged artifact is judged on


@dataclass(frozen=True)
class VerifyConfig:
    """How to check artifacts: against what, on which data, with which tolerances."""

    reference: str | None = None  # a checkpoint or an artifact; None skips the check
    data_dir: str | None = None
    test_limit: int | None = None  # None: the whole test set
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
class TaskRule:
    """The INT8 rule: judged on the task, not the tensors. The quantization gate and parity both
    use it; QuantConfig sets it and the INT8 model's metadata carries it to later checks."""

    max_accuracy_drop: float = policy.INT8_MAX_ACCURACY_DROP  # points against the reference
    min_argmax_agreement: float = policy.INT8_MIN_AGREEMENT  # percent with the reference's answer
    # log-probability differences are still reported, against these looser tolerances
    atol: float = policy.INT8_ATOL
    rtol: float = policy.INT8_RTOL

    KEYS: ClassVar[tuple[str, ...]] = ("max_accuracy_drop", "min_argmax_agreement")

    def __post_init__(self) -> None:
        if not self.max_accuracy_drop >= 0:  # also refuses NaN
            raise ConfigError(f"the accuracy drop limit must be >= 0 points, got "
                              f"{self.max_accuracy_drop}")  # fmt: skip
        if not 0 <= self.min_argmax_agreement <= 100:
            raise ConfigError(f"the minimum argmax agreement must be 0..100%, got "
                              f"{self.min_argmax_agreement}")  # fmt: skip

    def passes(self, reference_accuracy: float, accuracy: float, agreement: float) -> bool:
        return (
            reference_accuracy - accuracy <= self.max_accuracy_drop + 1e-9
            and agreement >= self.min_argmax_agreement - 1e-9
        )

    def to_metadata(self) -> dict[str, str]:
        return {f"{spec.METADATA_PREFIX}int8.{k}": str(getattr(self, k)) for k in self.KEYS}

    @classmethod
    def deployment(cls) -> TaskRule:
        """The rule a deployment path must keep (tune, bf16): policy.DEPLOY_*."""
        return cls(policy.DEPLOY_MAX_ACCURACY_DROP, policy.DEPLOY_MIN_AGREEMENT)

    @classmethod
    def from_metadata(cls, meta: dict[str, str]) -> TaskRule:
        """The rule an INT8 model was made under (defaults for models without it)."""
        kw = {}
        for key in cls.KEYS:
            raw = meta.get(f"{spec.METADATA_PREFIX}int8.{key}")
            if raw:
                try:
                    kw[key] = float(raw)
                except ValueError:
                    pass
        return cls(**kw)


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
            from .data import batches

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


def decisive_rows(reference: np.ndarray, atol: float = ATOL, rtol: float = RTOL) -> np.ndarray:
    """(N,) bool: rows whose top class no candidate within tolerance can change. An element
    passes within max(atol, rtol * |reference|) of the reference, so the top class is safe only
    where it beats every other class by more than both their tolerances together."""
    ref = np.asarray(reference, np.float64)
    rows = np.arange(len(ref))
    with np.errstate(invalid="ignore", over="ignore"):
        slack = np.maximum(atol, rtol * np.abs(ref))
        top = ref.argmax(1)
        margin = (ref[rows, top] - slack[rows, top])[:, None] - (ref + slack)
        margin[rows, top] = np.inf
        return (margin > 0).all(1)  # NaN anywhere in a row: not decisive


def _accuracy(outputs: np.ndarray, labels: np.ndarray | None) -> float | None:
    if labels is None:
        return None
    return float((outputs.argmax(1) == labels).mean() * 100)


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
    with np.errstate(invalid="ignore", over="ignore"):  # inf - inf in the percentiles is fine
        return _compare(name, reference, candidate, atol, rtol, labels)


def _compare(
    name: str,
    reference: np.ndarray,
    candidate: np.ndarray,
    atol: float,
    rtol: float,
    labels: np.ndarray | None,
) -> GroupResult:
    ref = reference.astype(np.float64)
    cand = candidate.astype(np.float64)
    abs_diff = np.abs(cand - ref)
    abs_diff[~np.isfinite(abs_diff) & ~(ref == cand)] = np.inf  # NaN or inf vs finite: fails
    abs_diff[ref == cand] = 0.0  # also equal infinities
    rel_diff = abs_diff / (np.abs(ref) + EPS)
    ok = (abs_diff <= atol) | (rel_diff <= rtol)
    beyond_rtol = abs_diff[rel_diff > rtol]
    beyond_atol = rel_diff[abs_diff > atol]
    keep = decisive_rows(ref, atol, rtol)
    same = ref.argmax(1) == cand.argmax(1)
    return GroupResult(
        name=name,
        n=len(ref),
        atol=atol,
        rtol=rtol,
        max_abs_diff=float(abs_diff.max()),
        mean_abs_diff=float(abs_diff.mean()),
        median_abs_diff=float(np.median(abs_diff)),
        p99_abs_diff=float(np.percentile(abs_diff, 99)),
        max_rel_diff=float(rel_diff.max()),
        mean_rel_diff=float(rel_diff.mean()),
        median_rel_diff=float(np.median(rel_diff)),
        p99_rel_diff=float(np.percentile(rel_diff, 99)),
        min_atol=float(beyond_rtol.max()) if beyond_rtol.size else 0.0,
        min_rtol=float(beyond_atol.max()) if beyond_atol.size else 0.0,
        failing_elements=int((~ok).sum()),
        argmax_agreement=float(same.mean() * 100),
        reference_accuracy=_accuracy(ref, labels),
        candidate_accuracy=_accuracy(cand, labels),
        passed=bool(ok.all()),
        decisive_agreement=float(same[keep].mean() * 100) if keep.any() else 100.0,
        near_ties=int((~keep).sum()),
    )


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
    if runner.precision == "int8" or runner.format in TASK_JUDGED:
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
    *,
    data_dir: str | None = None,
    test_limit: int | None = None,
    atol: float = ATOL,
    rtol: float = RTOL,
    threads: int | None = None,
    backend: str | None = None,
    precision: str | None = None,
) -> ParityReport:
    """Parity of artifacts against a reference (a checkpoint's PyTorch model, or another
    artifact such as the fp32 ONNX) on the official test set and the edge inputs; the artifacts
    run on `backend` at `precision` when given, the reference on its format's own backend."""
    from .data import load_split
    from .runners import load_runner

    if not artifacts:
        raise ArtifactError("no artifacts to check; export some with `mnist-edge export`")
    # Load everything the user named before the data: a bad file fails fast.
    candidates = [load_runner(path, threads=threads, backend=backend, precision=precision)
                  for path in artifacts]  # fmt: skip
    ref = load_runner(reference, threads=threads)
    test = load_split("test", data_dir, test_limit)
    groups = input_groups(test.images, test.labels)
    results = check(ref, candidates, groups, atol=atol, rtol=rtol)
    return ParityReport(results, atol=atol, rtol=rtol, checkpoint=str(reference))
