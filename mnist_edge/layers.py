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
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .edge import layout, policy, spec
from .edge.backends.onnxruntime import load_session, raw_session
from .edge.data import Split, batches
from .edge.errors import ArtifactError, ConfigError, missing_dependency, reading
from .edge.layout import format_of
from .edge.metrics import DiffStats
from .edge.parity import VerifyConfig
from .edge.runners import load_runner

MIN_SQNR_DB = policy.MIN_SQNR_DB  # the INT8 layer rule (policy.py says why)
SAMPLE_PER_ROW = 20  # differences kept per image and layer for the p99 (a uniform subsample)


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


def compare_layers(
    cfg: VerifyConfig,
    artifacts: list[Path | str],
    test: Split,
    *,
    min_sqnr_db: float = MIN_SQNR_DB,
    batch_size: int = policy.BATCH,
) -> LayerReport:
    """Every layer of every artifact against cfg.reference, on the images of `test`, with cfg's
    tolerances."""
    taps, ref = load_taps(cfg, artifacts, min_sqnr_db)
    return compare_taps(cfg, ref, taps, test, min_sqnr_db=min_sqnr_db, batch_size=batch_size)


def load_taps(cfg: VerifyConfig, artifacts: list[Path | str],
              min_sqnr_db: float = MIN_SQNR_DB) -> tuple[list[LayerTap], LayerTap]:  # fmt: skip
    """(the artifacts' taps, the reference's): every file loaded and checked before any data."""
    if not artifacts:
        raise ArtifactError("no artifacts to compare layer by layer")
    if cfg.reference is None:
        raise ArtifactError("layerwise parity needs a reference (a checkpoint or an ONNX file)")
    if not np.isfinite(min_sqnr_db):
        raise ConfigError(f"the minimum SQNR must be a finite number of dB, got {min_sqnr_db}")
    taps = [load_tap(a, threads=cfg.threads) for a in artifacts]
    return taps, load_tap(cfg.reference, threads=cfg.threads)


def compare_taps(cfg: VerifyConfig, ref: LayerTap, taps: list[LayerTap], test: Split, *,
                 min_sqnr_db: float = MIN_SQNR_DB,
                 batch_size: int = policy.BATCH) -> LayerReport:  # fmt: skip
    """Every layer of every loaded tap against the reference's, batch by batch (metrics.DiffStats
    per layer, the p99 from a uniform subsample)."""
    atol, rtol = cfg.atol, cfg.rtol
    rng = np.random.default_rng(0)
    stats = [{layer: DiffStats(atol, rtol, SAMPLE_PER_ROW, rng) for layer in TAP_LAYERS}
             for _ in taps]  # fmt: skip
    for batch in batches(test.images, batch_size):
        want = ref(batch)
        for tap, per_layer in zip(taps, stats, strict=True):
            got = tap(batch)
            for layer, s in per_layer.items():
                if layer in got and layer in want:
                    try:
                        s.add(want[layer], got[layer])
                    except ArtifactError:
                        raise ArtifactError(f"layer shapes differ: {got[layer].shape} against "
                                            f"{want[layer].shape}") from None  # fmt: skip
    results = []
    for tap, per_layer in zip(taps, stats, strict=True):
        judge = "sqnr" if layout.get(tap.format).task_judged else "tensor"
        rows = []
        for layer, s in per_layer.items():
            if s.elements == 0:
                continue
            ok = s.sqnr_db >= min_sqnr_db if judge == "sqnr" else s.passed
            rows.append(LayerResult(
                layer=layer, tensor=tap.tensors.get(layer, ""), elements=s.elements,
                max_abs_diff=s.max_abs, p99_abs_diff=s.p99_abs(),
                min_atol=s.min_atol, failing_elements=s.failing, sqnr_db=s.sqnr_db,
                cosine=s.cosine,
                argmax_agreement=s.argmax_agreement if layer in ("fc", "output") else None,
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
    if fmt in ("onnx", "onnx-int8", "litert", "litert-int8"):
        if not path.is_file():
            raise ArtifactError(f"no {fmt} artifact at {path}; export it with `mnist-edge export`")
        return (_onnx_tap if fmt.startswith("onnx") else _litert_tap)(path, fmt, threads)
    why = {
        "ort": "the ORT format cannot be edited to expose layer outputs; compare the ONNX it "
        "was converted from (its runs are identical: see parity)",
        "torchscript": "TorchScript modules take no forward hooks on their submodules",
        "pt2": "a loaded ExportedProgram is one flat graph without the model's modules",
        "executorch": EXECUTORCH_WHY,
        "executorch-int8": EXECUTORCH_WHY,
    }.get(fmt, f"unknown format {fmt!r}")
    raise ArtifactError(f"cannot capture the layers of {path}: {why}")


EXECUTORCH_WHY = (
    "its layers run inside one XNNPACK delegate, which exposes no intermediate tensor to the "
    "runtime; compare the LiteRT or ONNX file of the same checkpoint (all three are checked "
    "against PyTorch by parity)"
)


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


# LiteRT: litert-torch names each tensor after the module scope that made it
# ("...Conv2d_conv1;1", "...Linear_fc;2"); a layer's tensor is the output of its last operator
LITERT_LAYER_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")


def litert_layer_tensors(
    details: list[dict], ops: list[dict]
) -> tuple[dict[str, int], dict[str, str]]:
    """({layer: tensor index}, {layer: why unpaired}) for a LiteRT model, paired by the module
    scope litert-torch writes into tensor names, not by position."""
    names = {d["index"]: d["name"] for d in details}
    found: dict[str, int] = {}
    for op in ops:
        if op["op_name"] not in LITERT_LAYER_OPS:
            continue
        out = op["outputs"][0]
        for layer in spec.LAYERS:
            if any(part.endswith(f"_{layer}") for part in re.split(r"[;/]", names[out])):
                found[layer] = out
    unpaired = {layer: f"no {'/'.join(LITERT_LAYER_OPS)} output named for scope {layer!r}"
                for layer in spec.LAYERS if layer not in found}  # fmt: skip
    return found, unpaired


def _litert_tap(path: Path, fmt: str, threads: int | None) -> LayerTap:
    """Every layer's output of a .tflite file, from an interpreter that keeps all tensors. The
    XNNPACK delegate keeps its intermediate tensors to itself, so this interpreter runs LiteRT's
    built-in kernels (the same operators, without the delegate): the model's output is compared
    too. Convolution outputs are NHWC in LiteRT (made NCHW here); INT8 ones are dequantized with
    their own scale and zero point."""
    load_runner(path, fmt=fmt)  # the artifact itself must be an MNIST classifier
    try:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType
    except ImportError:
        raise missing_dependency("ai_edge_litert", "capturing LiteRT layer outputs") from None
    with reading(path, "a LiteRT (.tflite) model", ArtifactError):
        interpreter = Interpreter(
            model_path=str(path), num_threads=threads or 1,
            experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
            experimental_preserve_all_tensors=True,
        )  # fmt: skip
    details = interpreter.get_tensor_details()
    found, unpaired = litert_layer_tensors(details, interpreter._get_ops_details())
    by_index = {d["index"]: d for d in details}
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    state = {"batch": None}

    def value(index: int) -> np.ndarray:
        x = interpreter.get_tensor(index)
        scale, zero = by_index[index]["quantization"]
        if x.dtype != np.float32 and scale:
            x = (x.astype(np.float32) - zero) * np.float32(scale)
        return x.transpose(0, 3, 1, 2) if x.ndim == 4 else x  # NHWC -> NCHW

    def run(x: np.ndarray) -> dict[str, np.ndarray]:
        if state["batch"] != len(x):
            interpreter.resize_tensor_input(inp["index"], list(x.shape))
            interpreter.allocate_tensors()
            state["batch"] = len(x)
        interpreter.set_tensor(inp["index"], x)
        interpreter.invoke()
        return {"output": value(out["index"]), **{k: value(i) for k, i in found.items()}}

    tensors = {k: by_index[i]["name"] for k, i in found.items()}
    return LayerTap(path, fmt, run, unpaired=unpaired, tensors={**tensors, "output": out["name"]})
