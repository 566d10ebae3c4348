"""Layerwise parity: where does an export diverge from PyTorch? compare_layers -> LayerReport.

Every layer's output (conv1..conv3 after their ReLU, fc's logits, the model output) is captured
on the same inputs in the reference (PyTorch forward hooks on the checkpoint's model, or another
ONNX file) and in each artifact (its layer tensors exposed as extra outputs of a temporary copy,
run in ONNX Runtime with the artifact's normal session options), paired by the module scope the
exporter recorded on each node (layer_tensors), never by tensor names.

Per layer: max and p99 |difference|, the smallest atol that passes at the given rtol, SQNR in dB
(10 log10 of signal power over error power), cosine similarity, and argmax agreement at the
output. fp32 artifacts are judged elementwise (atol OR rtol, as parity); INT8 ones on SQNR
(quantization noise is expected, a broken layer drops far below `min_sqnr`). The first layer
that fails is named: earlier layers match, so the fault is there.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .edge import policy, spec
from .edge.errors import ArtifactError, ConfigError, missing_dependency, reading
from .edge.layout import format_of
from .edge.parity import TASK_JUDGED, VerifyConfig

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
    batch_size: int = policy.BATCH,
) -> LayerReport:
    """Every layer of every artifact against cfg.reference, on the official test set (or its
    first cfg.test_limit images), with cfg's tolerances."""
    from .edge.data import batches, load_split

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


# --- layer taps: every layer's output, for layerwise parity and the quantization doctor --------
SCOPE_KEY = "pkg.torch.onnx.name_scopes"  # torch.onnx (dynamo) records each node's module scope
TAP_LAYERS = (*spec.LAYERS, "output")  # compared in this order; convs after their ReLU


@dataclass
class LayerTap:
    """Runs a model and returns every layer's output: {layer: (N, ...) float32}."""

    path: Path
    format: str
    fn: Callable[[np.ndarray], dict[str, np.ndarray]] = field(repr=False)
    unpaired: dict[str, str] = field(default_factory=dict)  # layer -> why it has no tap
    tensors: dict[str, str] = field(default_factory=dict)  # layer -> tensor or module tapped

    def __call__(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        return self.fn(batch)


def load_tap(source: Path | str, *, fmt: str | None = None, threads: int | None = None) -> LayerTap:
    """A LayerTap for a checkpoint (forward hooks) or an ONNX / INT8 ONNX file (its layer
    tensors exposed as extra outputs of a temporary copy, never of the file itself)."""
    path = Path(source)
    fmt = fmt or format_of(path)
    if fmt == "checkpoint":
        return _torch_tap(path, threads)
    if fmt in ("onnx", "onnx-int8"):
        if not path.is_file():
            raise ArtifactError(f"no {fmt} artifact at {path}; export it with `mnist-edge export`")
        return _onnx_tap(path, fmt, threads)
    why = {
        "ort": "the ORT format cannot be edited to expose layer outputs; compare the ONNX it "
        "was converted from (its runs are identical: see parity)",
        "torchscript": "TorchScript modules take no forward hooks on their submodules",
        "pt2": "a loaded ExportedProgram is one flat graph without the model's modules",
    }.get(fmt, f"unknown format {fmt!r}")
    raise ArtifactError(f"cannot capture the layers of {path}: {why}")


def _torch_tap(path: Path, threads: int | None) -> LayerTap:
    try:
        import torch
    except ImportError:
        raise missing_dependency("torch", "capturing PyTorch layer outputs") from None
    if threads:
        torch.set_num_threads(threads)
    from .checkpoint import load_model

    model, _ = load_model(path)
    seen: dict[str, np.ndarray] = {}

    def hook(name: str):
        def keep(_module, _inputs, out):
            out = torch.relu(out) if name.startswith("conv") else out  # as ONNX taps after ReLU
            seen[name] = out.detach().numpy().copy()

        return keep

    for name in spec.LAYERS:
        getattr(model, name).register_forward_hook(hook(name))

    def run(x: np.ndarray) -> dict[str, np.ndarray]:
        seen.clear()
        with torch.inference_mode():
            seen["output"] = model(torch.from_numpy(x)).numpy()
        return dict(seen)

    tensors = {n: f"{n} (forward hook{', then ReLU' if n.startswith('conv') else ''})"
               for n in spec.LAYERS}  # fmt: skip
    return LayerTap(path, "checkpoint", run, tensors={**tensors, "output": "model output"})


def scoped_nodes(model) -> dict[str, object]:
    """{layer: the last node of its module scope, in graph order}, from the scopes torch.onnx
    records on each node (its Conv or Gemm, for this model)."""
    scoped = {}
    for n in model.graph.node:
        meta = {p.key: p.value for p in n.metadata_props}
        try:
            scopes = json.loads(meta.get(SCOPE_KEY, "[]").replace("'", '"'))
        except ValueError:
            continue
        for layer in spec.LAYERS:
            if layer in scopes:
                scoped[layer] = n
    return scoped


def layer_tensors(model) -> tuple[dict[str, str], dict[str, str]]:
    """({layer: tensor name}, {layer: why unpaired}) from an ONNX ModelProto, paired by the
    exporter's own record of each node's module scope, not by tensor names. A conv layer's tensor
    is the one after its ReLU; in a quantized model, the dequantized one (after Q/DQ)."""
    consumers: dict[str, list] = {}
    for n in model.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    scoped = scoped_nodes(model)
    if not scoped:
        why = (
            f"no node carries {SCOPE_KEY!r} metadata (not exported by torch.onnx's dynamo "
            "exporter, or stripped since), so layers cannot be paired with PyTorch's"
        )
        return {}, {layer: why for layer in spec.LAYERS}

    def follow(tensor: str) -> str:
        """Past a ReLU and a QuantizeLinear -> DequantizeLinear pair, if they come next."""
        for op in ("Relu", "QuantizeLinear", "DequantizeLinear"):
            nxt = [c for c in consumers.get(tensor, []) if c.op_type == op]
            if len(nxt) == 1:
                tensor = nxt[0].output[0]
        return tensor

    found, unpaired = {}, {}
    for layer in spec.LAYERS:
        if layer in scoped:
            found[layer] = follow(scoped[layer].output[0])
        else:
            unpaired[layer] = f"no node with scope {layer!r} in the graph"
    return found, unpaired


def _onnx_tap(path: Path, fmt: str, threads: int | None) -> LayerTap:
    try:
        import onnx
    except ImportError:
        raise missing_dependency("onnx", "capturing ONNX layer outputs") from None
    from .edge.runtime import load_session, raw_session

    load_session(path, threads=threads)  # the artifact itself must be an MNIST classifier
    with reading(path, "a readable ONNX model", ArtifactError):
        model = onnx.load(str(path))
    found, unpaired = layer_tensors(model)
    graph_outputs = [o.name for o in model.graph.output]
    for name in found.values():
        if name not in graph_outputs:
            model.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    session = raw_session(model.SerializeToString(), threads=threads)
    in_name = session.get_inputs()[0].name
    names = [graph_outputs[0], *found.values()]

    def run(x: np.ndarray) -> dict[str, np.ndarray]:
        out = dict(zip(names, session.run(names, {in_name: x}), strict=True))
        return {"output": out[graph_outputs[0]], **{k: out[t] for k, t in found.items()}}

    return LayerTap(path, fmt, run, unpaired=unpaired, tensors={**found, "output": names[0]})
