"""The quantization doctor: which layers does INT8 hurt, and which to keep in fp32.

`diagnose(fp32, int8)` reports, per layer (paired by the exporter's module scopes):
  - weight SQNR: the fp32 weights against the INT8 model's dequantized weights;
  - activation SQNR, cross-model: the fp32 model's layer output against the INT8 model's on the
    same images (onnxruntime's qdq_loss_debug calls it xmodel_err), both after the layer's ReLU
    and, in INT8, after its QuantizeLinear/DequantizeLinear pair, as the next layer sees it;
  - the drop: how many dB of SQNR are lost at this layer (from the previous layer's, or from the
    quantized input's for conv1). Errors accumulate along the model, so the SQNR says how far off
    a layer ends up and the drop says how much of that this layer adds.
Why not the "local" qdq error (before Q against after DQ in the INT8 model)? Exposing the
tensor before a QuantizeLinear stops ONNX Runtime from fusing DQ -> Conv -> Q into an integer
convolution, so it measures a different computation: here it read ~42 dB for conv1, whose real,
fused output sits at ~14 dB (u8 x s8 products saturate on AVX2 without VNNI). The taps used here
leave the INT8 model's output bit-identical to its normal run (a test checks).
The blame order (`suspects`) is by the lower of a layer's weight and activation SQNR, lowest
first: a broken weight quantization shows at once in the weight SQNR (a test breaks conv2's
scale: 0 dB against ~40), a broken activation range in the activation SQNR (which then also
drags the layers after it down, so the culprit may come second). The drop is reported beside
them but not used to rank: on this AVX2 machine conv1 loses ~33 dB against its quantized input
whatever else happens (the integer convolution's u8 x s8 products), and would always rank
first. `auto_exclude` keeps the worst layers in fp32 (nodes_to_exclude), one more at a time in
that order, re-running the gate each time, until the gate passes or every layer is excluded.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from . import quantize as quantization
from .edge import policy, spec
from .edge.data import Split, batches
from .edge.errors import ArtifactError
from .edge.metrics import sqnr_db
from .edge.parity import VerifyConfig
from .edge.runners import load_runner
from .edge.timing import time_calls
from .layers import compare_layers, layer_tensors, scoped_nodes


@dataclass(frozen=True)
class LayerHealth:
    layer: str
    node: str  # the Conv/Gemm node's name (what nodes_to_exclude takes)
    weight_sqnr_db: float
    activation_sqnr_db: float  # cross-model: fp32 model against INT8 model at this layer
    drop_db: float  # SQNR lost at this layer (previous layer's, or the input's, minus this)


@dataclass(frozen=True)
class Step:
    """One try of the auto-exclude loop."""

    excluded_layers: list[str]
    excluded_nodes: list[str]
    int8_accuracy: float
    accuracy_drop: float
    argmax_agreement: float
    bytes: int
    batch1_p50_ms: float
    passed: bool


@dataclass(frozen=True)
class Diagnosis:
    layers: list[LayerHealth]
    steps: list[Step] = field(default_factory=list)

    def suspects(self) -> list[LayerHealth]:
        """Layers in blame order: the lowest SQNR first, weight or activation."""
        return sorted(self.layers, key=lambda h: min(h.weight_sqnr_db, h.activation_sqnr_db))

    def to_dict(self) -> dict[str, Any]:
        return {"layers": [asdict(h) for h in self.layers],
                "suspects": [h.layer for h in self.suspects()],
                "steps": [asdict(s) for s in self.steps]}  # fmt: skip


def _sqnr(ref: np.ndarray, got: np.ndarray) -> float:
    return sqnr_db(float((ref**2).sum()), float(((ref.astype(np.float64) - got) ** 2).sum()))


def _initializers(model) -> dict[str, np.ndarray]:
    from onnx import numpy_helper

    return {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}


def _dequantized(model, tensor: str, inits: dict[str, np.ndarray]) -> np.ndarray | None:
    """The float value of a weight tensor: an initializer, or a DequantizeLinear of one."""
    if tensor in inits:
        return inits[tensor].astype(np.float64)
    node = next((n for n in model.graph.node if tensor in n.output), None)
    if node is None or node.op_type != "DequantizeLinear":
        return None
    q, scale = inits[node.input[0]].astype(np.float64), inits[node.input[1]].astype(np.float64)
    zp = inits[node.input[2]].astype(np.float64) if len(node.input) > 2 else np.zeros_like(scale)
    if scale.ndim == 1 and scale.size > 1:  # per channel along `axis` (default 1)
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
        shape = [1] * q.ndim
        shape[axis] = -1
        scale, zp = scale.reshape(shape), zp.reshape(shape)
    return (q - zp) * scale


def diagnose(
    fp32: Path | str,
    int8: Path | str,
    test: Split,
    *,
    threads: int | None = None,
) -> Diagnosis:
    """Per-layer weight and activation SQNR of an INT8 model against its fp32 source, on the
    images of `test`."""
    import onnx

    f_model, q_model = onnx.load(str(fp32)), onnx.load(str(int8))
    f_inits, q_inits = _initializers(f_model), _initializers(q_model)
    scoped, f_scoped = scoped_nodes(q_model), scoped_nodes(f_model)
    if not scoped:
        _, why = layer_tensors(q_model)
        raise ArtifactError(f"{int8}: {next(iter(why.values()))}")
    check = VerifyConfig(str(fp32), threads=threads)
    (tapped,) = compare_layers(check, [int8], test).artifacts
    cross = {r.layer: r.sqnr_db for r in tapped.layers}
    previous = _input_sqnr(q_model, q_inits, test.images)
    health = []
    for layer in spec.LAYERS:
        if layer not in scoped:
            continue
        node = scoped[layer]
        w_ref = _dequantized(f_model, f_scoped.get(layer, node).input[1], f_inits)
        w_q = _dequantized(q_model, node.input[1], q_inits)
        w_sqnr = _sqnr(w_ref, w_q) if w_ref is not None and w_q is not None else float("inf")
        a_sqnr = cross.get(layer, float("inf"))
        drop = previous - a_sqnr if np.isfinite(previous) else (0.0 if a_sqnr == previous else 99.0)
        health.append(LayerHealth(layer, node.name, w_sqnr, a_sqnr, float(drop)))
        previous = a_sqnr
    return Diagnosis(health)


def _input_sqnr(model, inits: dict[str, np.ndarray], images: np.ndarray) -> float:
    """SQNR of the model input after its QuantizeLinear/DequantizeLinear (inf if not quantized)."""
    name = model.graph.input[0].name
    q = next((n for n in model.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == name),
             None)  # fmt: skip
    if q is None:
        return float("inf")
    scale = float(inits[q.input[1]])
    zp = inits[q.input[2]] if len(q.input) > 2 else np.uint8(0)
    lo, hi = np.iinfo(zp.dtype).min, np.iinfo(zp.dtype).max
    x = np.concatenate(list(batches(images, policy.BATCH))).astype(np.float64)
    fake = (np.clip(np.round(x / scale) + float(zp), lo, hi) - float(zp)) * scale
    return _sqnr(x, fake)


def _latency_ms(path: Path | str, images: np.ndarray) -> float:
    """Batch-1 p50 (ms) of the model on one thread: 200 calls after 10 untimed."""
    runner = load_runner(path, threads=1)
    return time_calls(runner, next(batches(images[:1], 1)), rounds=200, warmup=10).p50_ms


def _step(gate: Any, excluded: list[LayerHealth], images: np.ndarray) -> Step:
    return Step([h.layer for h in excluded], [h.node for h in excluded], gate.int8_accuracy,
                gate.accuracy_drop, gate.argmax_agreement, gate.bytes,
                _latency_ms(gate.path, images), gate.passed)  # fmt: skip


def quantize_with_doctor(cfg: Any, test: Split, calibration: np.ndarray, *,
                         auto_exclude: bool = False,
                         images: int = policy.DOCTOR_IMAGES) -> tuple:  # fmt: skip
    """(final gate, Diagnosis with the steps tried): quantize (gated on `test`, calibrated on
    `calibration`), diagnose on its first `images` digits, and when the gate fails and
    auto_exclude is on, keep the worst layers in fp32 one by one until it passes."""
    sample = test.head(images)
    gate = quantization.quantize(cfg, test, calibration)
    diagnosis = diagnose(cfg.model, gate.path, sample)
    steps = [_step(gate, [], sample.images)]
    excluded: list[LayerHealth] = []
    for suspect in diagnosis.suspects() if auto_exclude and not gate.passed else []:
        excluded.append(suspect)
        gate = quantization.quantize(
            replace(cfg, nodes_to_exclude=tuple(h.node for h in excluded)), test, calibration
        )
        steps.append(_step(gate, excluded, sample.images))
        if gate.passed:
            break
    return gate, replace(diagnosis, steps=steps)
