"""How answers are judged: accuracy, agreement, decisive rows, the task rule, and the one
streaming difference accumulator that parity (outputs) and layerwise parity (every layer) share.

Semantics follow Polygraphy's comparator: relative difference = |candidate - reference| /
|reference| (EPS added for zeros), and an element passes when it is within atol OR within rtol.
NaN or an infinity against a finite value is an infinite difference; equal infinities are equal.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from . import policy, spec
from .errors import ArtifactError, ConfigError

EPS = 1e-12  # keeps the relative difference finite where the reference is 0


def accuracy(predicted: np.ndarray, labels: np.ndarray) -> float:
    """Percent of `predicted` labels (N,) equal to `labels` (N,)."""
    return float((np.asarray(predicted) == np.asarray(labels)).mean() * 100)


def agreement(a: np.ndarray, b: np.ndarray) -> float:
    """Percent of rows of two (N, classes) outputs with the same top class."""
    return accuracy(np.asarray(a).argmax(1), np.asarray(b).argmax(1))


def decisive_rows(reference: np.ndarray, atol: float = policy.ATOL,
                  rtol: float = policy.RTOL) -> np.ndarray:  # fmt: skip
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


@dataclass(frozen=True)
class TaskRule:
    """Judged on the task, not the tensors: the accuracy may drop at most `max_accuracy_drop`
    points against the reference and at least `min_argmax_agreement` percent of the images keep
    the reference's answer. The INT8 gate and parity of INT8 files use it (the model's metadata
    carries the rule it was made under), and so does tune (the deployment rule)."""

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


def differences(ref: np.ndarray, cand: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(|cand - ref|, that / (|ref| + EPS)) as flat float64: NaN or inf against a finite value
    is an infinite difference, equal values (equal infinities too) none."""
    r = np.asarray(ref, np.float64).ravel()
    c = np.asarray(cand, np.float64).ravel()
    with np.errstate(invalid="ignore", over="ignore"):
        d = np.abs(c - r)
        same = r == c
        d[~np.isfinite(d) & ~same] = np.inf
        d[same] = 0.0
        return d, d / (np.abs(r) + EPS)


@dataclass
class DiffStats:
    """Streaming comparison of a candidate with a reference, batch by batch (`add`).

    Keeps sums and extremes exactly; the median and p99 come from every difference when
    `sample_per_row` is None (parity's (N, 10) outputs), else from a uniform subsample of that
    many differences per row (layers' large activations), drawn with `rng`. For (N, classes)
    outputs it also counts argmax agreement, decisive rows (decisive_rows) and, when labels are
    given, each side's correct answers."""

    atol: float = policy.ATOL
    rtol: float = policy.RTOL
    sample_per_row: int | None = None
    rng: np.random.Generator = field(default_factory=lambda: np.random.default_rng(0), repr=False)
    rows: int = 0
    elements: int = 0
    max_abs: float = 0.0
    max_rel: float = 0.0
    sum_abs: float = 0.0
    sum_rel: float = 0.0
    min_atol: float = 0.0  # smallest atol that passes every element at this rtol
    min_rtol: float = 0.0  # smallest rtol that passes every element at this atol
    failing: int = 0
    signal: float = 0.0  # sum ref^2
    noise: float = 0.0  # sum (cand - ref)^2
    dot: float = 0.0  # sum ref * cand
    cand_sq: float = 0.0
    same_argmax: int = 0
    decisive: int = 0
    decisive_same: int = 0
    ref_correct: int = 0
    cand_correct: int = 0
    labelled: int = 0
    _abs: list = field(default_factory=list, repr=False)
    _rel: list = field(default_factory=list, repr=False)

    def add(self, ref: np.ndarray, cand: np.ndarray, labels: np.ndarray | None = None) -> None:
        if ref.shape != cand.shape:
            raise ArtifactError(f"candidate output shape {cand.shape} differs from {ref.shape}")
        d, rel = differences(ref, cand)
        if d.size == 0:
            return
        self.rows += len(ref)
        self.elements += d.size
        self.max_abs = max(self.max_abs, float(d.max()))
        self.max_rel = max(self.max_rel, float(rel.max()))
        with np.errstate(invalid="ignore", over="ignore"):
            self.sum_abs += float(d.sum())
            self.sum_rel += float(rel.sum())
            beyond_rtol, beyond_atol = rel > self.rtol, d > self.atol
            if beyond_rtol.any():
                self.min_atol = max(self.min_atol, float(d[beyond_rtol].max()))
            if beyond_atol.any():
                self.min_rtol = max(self.min_rtol, float(rel[beyond_atol].max()))
            self.failing += int((~((d <= self.atol) | (rel <= self.rtol))).sum())  # NaN fails
            r = np.asarray(ref, np.float64).ravel()
            c = np.asarray(cand, np.float64).ravel()
            self.signal += float((r * r).sum())
            self.noise += float(((c - r) ** 2).sum())
            self.dot += float((r * c).sum())
            self.cand_sq += float((c * c).sum())
        if ref.ndim == 2:
            same = ref.argmax(1) == cand.argmax(1)
            keep = decisive_rows(ref, self.atol, self.rtol)
            self.same_argmax += int(same.sum())
            self.decisive += int(keep.sum())
            self.decisive_same += int(same[keep].sum())
            if labels is not None:
                self.labelled += len(labels)
                self.ref_correct += int((ref.argmax(1) == labels).sum())
                self.cand_correct += int((cand.argmax(1) == labels).sum())
        if self.sample_per_row is None or d.size <= self.sample_per_row * len(ref):
            self._abs.append(d)
            self._rel.append(rel)
        else:
            pick = self.rng.choice(d.size, max(1, self.sample_per_row * len(ref)), replace=False)
            self._abs.append(d[pick])
            self._rel.append(rel[pick])

    def _percentile(self, sample: list, q: float) -> float:
        with np.errstate(invalid="ignore", over="ignore"):  # inf - inf in the interpolation
            return float(np.percentile(np.concatenate(sample), q)) if sample else 0.0

    @property
    def mean_abs(self) -> float:
        return self.sum_abs / self.elements if self.elements else 0.0

    @property
    def mean_rel(self) -> float:
        return self.sum_rel / self.elements if self.elements else 0.0

    def median_abs(self) -> float:
        return self._percentile(self._abs, 50)

    def median_rel(self) -> float:
        return self._percentile(self._rel, 50)

    def p99_abs(self) -> float:
        return self._percentile(self._abs, 99)

    def p99_rel(self) -> float:
        return self._percentile(self._rel, 99)

    @property
    def passed(self) -> bool:
        """Every element within atol or rtol."""
        return self.failing == 0

    @property
    def argmax_agreement(self) -> float:
        return 100.0 * self.same_argmax / self.rows if self.rows else 100.0

    @property
    def decisive_agreement(self) -> float:
        return 100.0 * self.decisive_same / self.decisive if self.decisive else 100.0

    @property
    def near_ties(self) -> int:
        return self.rows - self.decisive

    def accuracies(self) -> tuple[float | None, float | None]:
        """(reference, candidate) percent correct, when labels were given."""
        if not self.labelled:
            return None, None
        return 100.0 * self.ref_correct / self.labelled, 100.0 * self.cand_correct / self.labelled

    @property
    def sqnr_db(self) -> float:
        """10 log10(signal power / error power); inf when there is no error."""
        return sqnr_db(self.signal, self.noise)

    @property
    def cosine(self) -> float:
        return self.dot / max(np.sqrt(self.signal * self.cand_sq), 1e-30)


def sqnr_db(signal: float, noise: float) -> float:
    """10 log10(signal power / error power); inf when there is no error."""
    if noise == 0:
        return float("inf")
    return float(10 * np.log10(max(signal, 1e-30) / noise))
