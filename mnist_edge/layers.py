"""Layerwise parity: where does an export diverge from PyTorch? compare_layers -> LayerReport.

Every layer's output (conv1..conv3 after their ReLU, fc's logits, the model output) is captured
on the same inputs in the reference (PyTorch forward hooks on the checkpoint's model, or another
ONNX file) and in each artifact (its layer tensors exposed as extra outputs of a temporary copy,
run in ONNX Runtime with the artifact's normal session options), paired by the module scope the
exporter recorded on each node (runners.layer_tensors), never by tensor names.

Per layer: max and p99 |difference|, the smallest atol that passes at the given rtol, SQNR in dB
(10 log10 of signal power over error power), cosine similarity, and argmax agreement at the
output. fp32 artifacts are judged elementwise (atol OR rtol, as parity); INT8 ones on SQNR
(quantization noise is expected, a broken layer drops far below `min_sqnr`). The first layer
that fails is named: earlier layers match, so the fault is there.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .errors import ArtifactError, ConfigError
from .parity import TASK_JUDGED, VerifyConfig

MIN_SQNR_DB = 10.0  # INT8 layers sit at ~14-19 dB here; a broken one far below (README)
SAMPLE = 200_000  # differences kept per layer for the p99 (a uniform subsample)


@dataclass
class _Stats:
    """Streaming sums for one layer of one artifact."""

    n: int = 0
    elements: int = 0
    max_abs: float = 0.0
    min_atol: float = 0.0
    failing: int = 0
    signal: float = 0.0  # sum ref^2
    noise: float = 0.0  # sum (ref - cand)^2
    dot: float = 0.0  # sum ref * cand
    cand_sq: float = 0.0
    same_argmax: int = 0
    sample: list = field(default_factory=list)

    def p99(self) -> float:
        return float(np.percentile(np.concatenate(self.sample), 99))

    def add(self, ref: np.ndarray, cand: np.ndarray, atol: float, rtol: float, rng) -> None:
        if ref.shape != cand.shape:
            raise ArtifactError(f"layer shapes differ: {cand.shape} against {ref.shape}")
        r, c = ref.astype(np.float64).ravel(), cand.astype(np.float64).ravel()
        d = np.abs(c - r)
        d[~np.isfinite(d) & ~(r == c)] = np.inf
        d[r == c] = 0.0
        self.n += len(ref)
        self.elements += d.size
        self.max_abs = max(self.max_abs, float(d.max()))
        beyond = d[d > rtol * np.abs(r)]
        self.min_atol = max(self.min_atol, float(beyond.max()) if beyond.size else 0.0)
        self.failing += int(((d > atol) & (d > rtol * np.abs(r))).sum())
        self.signal += float((r * r).sum())
        self.noise += float(((c - r) ** 2).sum())
        self.dot += float((r * c).sum())
        self.cand_sq += float((c * c).sum())
        if ref.ndim == 2:
            self.same_argmax += int((ref.argmax(1) == cand.argmax(1)).sum())
        keep = max(1, SAMPLE * len(ref) // 10_000)
        self.sample.append(d if d.size <= keep else rng.choice(d, keep, replace=False))


@dataclass(frozen=True)
class LayerResult:
    """One layer of one artifact against the reference."""

    layer: str
    tensor: str  # what was tapped in the artifact
    elements: int
    max_abs_diff: float
    p99_abs_diff: float
    min_atol: float  # smallest atol passing every element at this rtol
    failing_elements: int
    sqnr_db: float  # inf when identical
    cosine: float
    argmax_agreement: float | None  # percent; for (N, classes) layers only
    passed: bool


@dataclass(frozen=True)
class ArtifactLayers:
    path: str
    format: str
    judge: str  # "tensor" (elementwise atol/rtol) or "sqnr"
    layers: list[LayerResult]
    unpaired: dict[str, str]  # layer -> why it could not be compared

    @property
    def first_divergence(self) -> str | None:
        return next((r.layer for r in self.layers if not r.passed), None)

    @property
    def passed(self) -> bool:
        return self.first_divergence is None

    def summary(self) -> str:
        """The one line that answers "where"."""
        first = self.first_divergence
        if first is None:
            return f"{self.path}: every layer matches the reference"
        r = next(r for r in self.layers if r.layer == first)
        earlier = [x.layer for x in self.layers[: self.layers.index(r)]]
        where = f"{self.path}: first divergence at {first}"
        figures = f" (max |d| {r.max_abs_diff:.3g}, SQNR {r.sqnr_db:.1f} dB)"
        return where + figures + (f"; {', '.join(earlier)} match" if earlier else "")


@dataclass(frozen=True)
class LayerReport:
    reference: str
    artifacts: list[ArtifactLayers]
    atol: float
    rtol: float
    min_sqnr_db: float
    images: int

    @property
    def passed(self) -> bool:
        return all(a.passed for a in self.artifacts)

    def problems(self) -> list[str]:
        return [a.summary() for a in self.artifacts if not a.passed]

    def to_dict(self) -> dict:
        d = asdict(self)
        for art, a in zip(d["artifacts"], self.artifacts, strict=True):
            art["first_divergence"] = a.first_divergence
            art["summary"] = a.summary()
        d["passed"] = self.passed
        return d


def sqnr_db(signal: float, noise: float) -> float:
    """10 log10(signal power / error power); inf when there is no error."""
    if noise == 0:
        return float("inf")
    return float(10 * np.log10(max(signal, 1e-30) / noise))


def compare_layers(
    cfg: VerifyConfig,
    artifacts: list[Path | str],
    *,
    min_sqnr_db: float = MIN_SQNR_DB,
    batch_size: int = 250,
) -> LayerReport:
    """Every layer of every artifact against cfg.reference, on the official test set (or its
    first cfg.test_limit images), with cfg's tolerances."""
    from .data import batches, load_split
    from .runners import TAP_LAYERS, load_tap

    if not artifacts:
        raise ArtifactError("no artifacts to compare layer by layer")
    if cfg.reference is None:
        raise ArtifactError("layerwise parity needs a reference (a checkpoint or an ONNX file)")
    if not np.isfinite(min_sqnr_db):
        raise ConfigError(f"the minimum SQNR must be a finite number of dB, got {min_sqnr_db}")
    atol, rtol = cfg.atol, cfg.rtol
    taps = [load_tap(a, threads=cfg.threads) for a in artifacts]
    ref = load_tap(cfg.reference, threads=cfg.threads)
    test = load_split("test", cfg.data_dir, cfg.test_limit)
    stats = [{layer: _Stats() for layer in TAP_LAYERS} for _ in taps]
    rng = np.random.default_rng(0)
    for batch in batches(test.images, batch_size):
        want = ref(batch)
        for tap, per_layer in zip(taps, stats, strict=True):
            got = tap(batch)
            for layer, s in per_layer.items():
                if layer in got and layer in want:
                    s.add(want[layer], got[layer], atol, rtol, rng)
    results = []
    for tap, per_layer in zip(taps, stats, strict=True):
        judge = "sqnr" if tap.format in TASK_JUDGED else "tensor"
        rows = []
        for layer, s in per_layer.items():
            if s.elements == 0:
                continue
            sqnr = sqnr_db(s.signal, s.noise)
            ok = sqnr >= min_sqnr_db if judge == "sqnr" else s.failing == 0
            rows.append(LayerResult(
                layer=layer, tensor=tap.tensors.get(layer, ""), elements=s.elements,
                max_abs_diff=s.max_abs, p99_abs_diff=s.p99(),
                min_atol=s.min_atol, failing_elements=s.failing, sqnr_db=sqnr,
                cosine=s.dot / max(np.sqrt(s.signal * s.cand_sq), 1e-30),
                argmax_agreement=100 * s.same_argmax / s.n if layer in ("fc", "output") else None,
                passed=bool(ok),
            ))  # fmt: skip
        unpaired = {**ref.unpaired, **tap.unpaired}
        results.append(ArtifactLayers(str(tap.path), tap.format, judge, rows, unpaired))
    return LayerReport(str(cfg.reference), results, atol, rtol, min_sqnr_db, len(test))
