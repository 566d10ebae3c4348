"""load_runner(source) -> Runner for every format: the one place that builds a model to run.

A Runner takes normalised float32 (N, 1, 28, 28) and gives float32 (N, 10). Formats:

    checkpoint    PyTorch eager, rebuilt from a training checkpoint     (torch)
    torchscript   torch.jit.load                                        (torch)
    pt2           torch.export.load(...).module()                       (torch)
    onnx          ONNX Runtime, fp32                                    (numpy + onnxruntime)
    onnx-int8     ONNX Runtime, quantized ONNX                          (numpy + onnxruntime)
    ort           ONNX Runtime, ORT format                              (numpy + onnxruntime)

torch is imported inside the torch loaders only, so ONNX Runtime runners work on the edge
install; asking for a torch format there raises MissingDependency naming the extra.
A new backend is one loader function here plus its entry in LOADERS.
"""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import spec
from .errors import ArtifactError, ConfigError, missing_dependency, reading
from .layout import ONNX_RUNTIME_FORMATS, TORCH_FORMATS, format_of
from .machine import check_threads

# bench's backend names -> runner formats
BACKENDS = {
    "pytorch": "checkpoint",
    "torchscript": "torchscript",
    "pt2": "pt2",
    "onnxruntime": "onnx",
    "onnxruntime-int8": "onnx-int8",
    "onnxruntime-ort": "ort",
}
FORMATS = ONNX_RUNTIME_FORMATS + TORCH_FORMATS
EXTRA_FILE = "mnist_edge.json"  # metadata inside TorchScript / .pt2 archives


@dataclass
class Runner:
    """One loaded model: numpy in, numpy out."""

    path: Path
    format: str  # one of FORMATS
    fn: Callable[[np.ndarray], np.ndarray] = field(repr=False)
    load_ms: float = 0.0  # time to load the file and build the session / module
    metadata: dict[str, str] = field(default_factory=dict)  # the artifact's own metadata
    threads: int | None = None
    session: object | None = field(default=None, repr=False)  # the ORT session, if any

    @property
    def name(self) -> str:
        """The bench backend name of this format."""
        return next(b for b, f in BACKENDS.items() if f == self.format)

    def run(self, batch: np.ndarray) -> np.ndarray:
        """(N, 10) outputs for a normalised float32 (N, 1, 28, 28) batch."""
        return self.fn(batch)

    __call__ = run


def load_runner(
    source: Path | str, *, fmt: str | None = None, threads: int | None = None
) -> Runner:
    """A Runner for a checkpoint or an exported artifact (format from the name unless given)."""
    path = Path(source)
    fmt = fmt or format_of(path)
    if fmt not in LOADERS:
        raise ConfigError(f"unknown format {fmt!r}; choose from {', '.join(FORMATS)}")
    check_threads(threads)
    if fmt != "checkpoint" and not path.is_file():
        raise ArtifactError(f"no {fmt} artifact at {path}; export it with `mnist-edge export`")
    t0 = time.perf_counter()
    runner = LOADERS[fmt](path, threads)
    runner.format, runner.threads = fmt, threads
    runner.load_ms = (time.perf_counter() - t0) * 1e3
    return runner


def _onnxruntime(path: Path, threads: int | None) -> Runner:
    from .runtime import check_io, load_session, model_metadata

    session = load_session(path, threads=threads)
    in_name, out_name = check_io(session, path)

    def run(x: np.ndarray) -> np.ndarray:
        return session.run([out_name], {in_name: x})[0]

    return Runner(path, "onnx", run, metadata=model_metadata(session), session=session)


def _torch():
    try:
        import torch
    except ImportError:
        raise missing_dependency("torch", "running PyTorch models") from None
    return torch


def _torch_runner(path: Path, module, torch, meta: dict[str, str]) -> Runner:
    def run(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            out = module(torch.from_numpy(x))
        if tuple(out.shape) != (len(x), spec.NUM_CLASSES):
            raise ArtifactError(f"{path} gave output shape {tuple(out.shape)} for batch {len(x)}")
        return out.numpy()

    return Runner(path, "", run, metadata=meta)


def _checkpoint(path: Path, threads: int | None) -> Runner:
    torch = _torch()
    if threads:
        torch.set_num_threads(threads)
    from .checkpoint import load_model

    model, ckpt = load_model(path)
    meta = {spec.METADATA_PREFIX + "source_checkpoint_sha256": ckpt.sha256()}
    return _torch_runner(path, model, torch, meta)


def _torch_archive(path: Path, threads: int | None) -> Runner:
    torch = _torch()
    if threads:
        torch.set_num_threads(threads)
    extra = {EXTRA_FILE: ""}
    with reading(path, "a loadable PyTorch archive", ArtifactError):
        if path.name.endswith(".pt2"):
            module = torch.export.load(str(path), extra_files=extra).module()
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # torch.jit's deprecation notice
                module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra).eval()
    try:
        meta = json.loads(extra[EXTRA_FILE] or "{}")
    except ValueError:
        meta = {}
    return _torch_runner(path, module, torch, meta)


LOADERS: dict[str, Callable[[Path, int | None], Runner]] = {
    "onnx": _onnxruntime,
    "onnx-int8": _onnxruntime,
    "ort": _onnxruntime,
    "checkpoint": _checkpoint,
    "torchscript": _torch_archive,
    "pt2": _torch_archive,
}


def outputs(runner: Runner, images: np.ndarray, batch_size: int = 500) -> np.ndarray:
    """(N, 10) outputs for uint8 (N, 28, 28) images, fed in batches through data.batches."""
    from .data import batches

    return np.concatenate([runner(b) for b in batches(images, batch_size)])


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
    torch = _torch()
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
    from .runtime import load_session, raw_session

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
