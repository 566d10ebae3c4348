"""Do the exported models give PyTorch's answers? compare(...) -> result objects; no printing.

Semantics follow Polygraphy's comparator: per output, the max/mean/median/p99 of the absolute and
relative differences (relative = |candidate - reference| / |reference|), and an element passes
when it is within atol OR within rtol of the reference. Beyond the tensors it judges the task:
argmax agreement and each model's accuracy against the labels.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from . import spec
from .errors import ArtifactError

ATOL = 1e-4  # log-probabilities are O(1..30); fp32 re-association of 62k-term sums moves ~1e-5
RTOL = 1e-3  # lets large-magnitude outputs (far out-of-range inputs) differ in the 4th digit
EPS = 1e-12  # keeps the relative difference finite where the reference is 0
# INT8 models are judged on the task (argmax agreement, accuracy drop), not on the tensors; their
# log-probability differences are still reported, against these looser tolerances.
INT8_ATOL = 0.5
INT8_RTOL = 0.1
INT8_MIN_ARGMAX_AGREEMENT = 99.0  # percent, on every labelled group
INT8_MAX_ACCURACY_DROP = 0.2  # percentage points against the fp32 reference
TASK_JUDGED = ("onnx-int8",)
Runner = Callable[[np.ndarray], np.ndarray]  # (N, 1, 28, 28) float32 -> (N, 10) float32


@dataclass(frozen=True)
class InputGroup:
    """A named set of inputs, fed to every model in the same batches."""

    name: str
    batches: list[np.ndarray]  # each (B, 1, 28, 28) float32, normalised
    labels: np.ndarray | None = None  # (N,) when known

    @property
    def n(self) -> int:
        return sum(len(b) for b in self.batches)


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

    def __bool__(self) -> bool:
        return self.passed


@dataclass(frozen=True)
class ArtifactResult:
    """All groups for one artifact."""

    path: str
    format: str
    groups: list[GroupResult]
    judge: str = "tensor"  # "tensor": every element within tolerance; "task": see task_ok

    def task_ok(self, g: GroupResult) -> bool:
        """A labelled group passes on argmax agreement and accuracy drop (int8 models)."""
        if g.reference_accuracy is None or g.candidate_accuracy is None:
            return True  # edge inputs: reported, not judged (saturation is expected there)
        drop = g.reference_accuracy - g.candidate_accuracy
        return g.argmax_agreement >= INT8_MIN_ARGMAX_AGREEMENT and drop <= INT8_MAX_ACCURACY_DROP

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
            "accuracy": test.candidate_accuracy,
            "reference_accuracy": test.reference_accuracy,
            "failed_groups": [g.name for g in self.groups if not self.group_ok(g)],
            "judge": self.judge,
        }

    def to_dict(self) -> dict[str, object]:
        return {**asdict(self), "passed": self.passed}


@dataclass(frozen=True)
class ParityReport:
    artifacts: list[ArtifactResult]
    atol: float
    rtol: float
    checkpoint: str = ""
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return bool(self.artifacts) and all(self.artifacts)

    def __bool__(self) -> bool:
        return self.passed

    def to_dict(self) -> dict[str, object]:
        return {
            "passed": self.passed,
            "atol": self.atol,
            "rtol": self.rtol,
            "checkpoint": self.checkpoint,
            "artifacts": [a.to_dict() for a in self.artifacts],
            **self.extra,
        }


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
        argmax_agreement=float((ref.argmax(1) == cand.argmax(1)).mean() * 100),
        reference_accuracy=_accuracy(ref, labels),
        candidate_accuracy=_accuracy(cand, labels),
        passed=bool(ok.all()),
    )


def _chunks(x: np.ndarray, size: int) -> list[np.ndarray]:
    return [x[i : i + size] for i in range(0, len(x), size)]


def input_groups(
    images: np.ndarray, labels: np.ndarray, *, batch_size: int = 500, seed: int = 0
) -> list[InputGroup]:
    """The test set in batches, the same images at batch sizes 1/2/7/64, and edge inputs."""
    from .data import batches

    groups = [InputGroup("test set", list(batches(images, batch_size)), labels)]
    head = spec.normalize(images[:128])[:, None]  # (128, 1, 28, 28)
    for b in (1, 2, 7, 64):
        groups.append(InputGroup(f"batch {b}", _chunks(head, b), labels[:128]))
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
    groups += [InputGroup(name, [x]) for name, x in edges.items()]
    return groups


def run_groups(runner: Runner, groups: list[InputGroup]) -> list[np.ndarray]:
    """Outputs of `runner` on each group, (N, 10) each."""
    return [np.concatenate([runner(b) for b in g.batches]) for g in groups]


def guess_format(path: Path | str) -> str:
    name = Path(path).name
    if name.endswith(".int8.onnx"):
        return "onnx-int8"
    if name.endswith((".onnx", ".ort")):
        return "onnx" if name.endswith(".onnx") else "ort"
    if name.endswith(".pt2"):
        return "pt2"
    if name.endswith((".torchscript.pt", ".jit.pt", ".ts")):
        return "torchscript"
    raise ArtifactError(
        f"cannot tell the format of {path}; expected .onnx, .ort, .torchscript.pt or .pt2"
    )


def load_runner(path: Path | str, fmt: str | None = None) -> Runner:
    """A numpy-in, numpy-out function for an exported artifact."""
    path = Path(path)
    fmt = fmt or guess_format(path)
    if not path.is_file():
        raise ArtifactError(f"no artifact at {path}; export it with `mnist-edge export`")
    if fmt in ("onnx", "ort", "onnx-int8"):
        from .runtime import load_session

        session = load_session(path)
        in_name, out_name = session.get_inputs()[0].name, session.get_outputs()[0].name
        return lambda x: session.run([out_name], {in_name: x})[0]
    import torch

    try:
        if fmt == "torchscript":
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # torch.jit's deprecation notice
                module = torch.jit.load(str(path), map_location="cpu").eval()
        elif fmt == "pt2":
            module = torch.export.load(str(path)).module()
        else:
            raise ArtifactError(f"unknown artifact format {fmt!r}")
    except ArtifactError:
        raise
    except Exception as exc:  # torch raises many types for a bad archive
        raise ArtifactError(f"{path} is not a loadable {fmt} file: {str(exc)[:200]}") from exc

    def run(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            out = module(torch.from_numpy(x))
        if tuple(out.shape) != (len(x), spec.NUM_CLASSES):
            raise ArtifactError(f"{path} gave output shape {tuple(out.shape)} for batch {len(x)}")
        return out.numpy()

    return run


def check(
    reference: Runner,
    candidates: list[tuple[Path, str, Runner]],
    groups: list[InputGroup],
    *,
    atol: float = ATOL,
    rtol: float = RTOL,
) -> list[ArtifactResult]:
    """Compare every (path, format, runner) candidate with the reference on every group."""
    ref_outputs = run_groups(reference, groups)
    results = []
    for path, fmt, runner in candidates:
        cand_outputs = run_groups(runner, groups)
        task = fmt in TASK_JUDGED
        tol = {"atol": INT8_ATOL, "rtol": INT8_RTOL} if task else {"atol": atol, "rtol": rtol}
        results.append(
            ArtifactResult(
                path=str(path),
                format=fmt,
                groups=[
                    compare(g.name, r, c, labels=g.labels, **tol)
                    for g, r, c in zip(groups, ref_outputs, cand_outputs, strict=True)
                ],
                judge="task" if task else "tensor",
            )
        )
    return results


def torch_runner(checkpoint: Path | str) -> Runner:
    """The PyTorch model of a checkpoint, eval mode, as a numpy runner."""
    import torch

    from .checkpoint import load_model

    model, _ = load_model(checkpoint)

    def run(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return model(torch.from_numpy(x)).numpy()

    return run


def check_checkpoint(
    checkpoint: Path | str,
    artifacts: list[tuple[Path, str]],
    *,
    data_dir: str | None = None,
    test_limit: int | None = None,
    atol: float = ATOL,
    rtol: float = RTOL,
) -> ParityReport:
    """Parity of artifacts against the checkpoint's PyTorch model on the official test set."""
    from .data import load_split

    if not artifacts:
        raise ArtifactError("no artifacts to check; export some with `mnist-edge export`")
    # Load everything the user named before the data: a bad file fails fast.
    candidates = [(Path(path), fmt, load_runner(path, fmt)) for path, fmt in artifacts]
    reference = torch_runner(checkpoint)
    test = load_split("test", data_dir, test_limit)
    groups = input_groups(test.images, test.labels)
    results = check(reference, candidates, groups, atol=atol, rtol=rtol)
    return ParityReport(results, atol=atol, rtol=rtol, checkpoint=str(checkpoint))
