"""Checkpoint -> LiteRT (.tflite): fp32 through litert-torch, INT8 through ai-edge-quantizer.

`pip install 'mnist-edge[litert-export]'` (litert-torch, which brings jax and transformers: the
converter side only; running a .tflite needs ai-edge-litert alone).

**A dynamic batch.** litert-torch 0.10 cannot lower this model with a dynamic batch (its view
after conv3 fails in the JAX bridge with a symbolic size) and, from any example, writes every
tensor after the input with the example's batch. So the model is converted at EXAMPLE_BATCH, a
size no other dimension of this model has (7), and then made dynamic in the flatbuffer itself,
with the runtime's own schema: every activation's shape signature starts with -1, and each
RESHAPE's target shape starts with -1 where it held the example batch. Nothing else changes
(weights, operators and their order are the converter's). The result is checked before it is
written: at batches 1, 3 and EXAMPLE_BATCH it gives the converted model's outputs row for row.

**The contract** travels as the model's metadata entry `spec.TFLITE_METADATA` (the flatbuffer's
own metadata table, as `min_runtime_version` does), one JSON object of the same keys as ONNX.

**INT8** (ai-edge-quantizer, static): the convolutions and the fully connected layer with int8
per-channel weights and int8 activations calibrated on the same training images as the ONNX INT8
model; input, output and the log-softmax stay float, as in the ONNX QDQ model.

Conversion and quantization are deterministic: the same checkpoint gives the same bytes.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import torch

from .edge import policy, spec
from .edge.backends.base import quiet_stderr
from .edge.data import batches
from .edge.errors import ArtifactError, reason
from .edge.files import atomic_write
from .edge.threads import cores

EXAMPLE_BATCH = 7  # no other dimension of this model is 7 (1, 10, 22-28, 32, 64, 128, 61952)
CHECK_BATCHES = (1, 3, EXAMPLE_BATCH)
INT8_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")  # quantized; the rest stays float
INT8_SETTINGS = {"quantizer": "ai-edge-quantizer static", "weights": "int8 per-channel",
                 "activations": "int8", "ops": list(INT8_OPS),
                 "float": "input, output, log-softmax"}  # fmt: skip


@contextlib.contextmanager
def _quiet():
    """litert-torch prints its progress on stdout (rich) and MLIR notices on fd 2."""
    with quiet_stderr(), contextlib.redirect_stdout(io.StringIO()):
        yield


def convert(model: torch.nn.Module) -> bytes:
    """The model as a .tflite flatbuffer with a fixed batch of EXAMPLE_BATCH."""
    torch.manual_seed(0)
    example = torch.randn(EXAMPLE_BATCH, *spec.INPUT_SHAPE)  # (7, 1, 28, 28)
    with _quiet():
        import litert_torch  # torchao's import notices, too

        return bytes(litert_torch.convert(model.eval(), (example,)).model_content())


def dynamic_batch(content: bytes, batch: int = EXAMPLE_BATCH) -> bytes:
    """`content` with its batch dimension made dynamic (see the module's docstring)."""
    from ai_edge_litert.tools import flatbuffer_utils as fbu

    model = fbu.read_model_from_bytearray(bytearray(content))
    ops = {i: fbu.opcode_to_name(model, i) for i in range(len(model.operatorCodes))}
    for graph in model.subgraphs:
        for tensor in graph.tensors:
            data = model.buffers[tensor.buffer].data
            constant = data is not None and len(data) > 0
            if not constant and tensor.shape is not None and len(tensor.shape) > 0 \
                    and tensor.shape[0] == batch:  # fmt: skip
                signature = np.array(tensor.shape, np.int32)
                signature[0] = -1
                tensor.shapeSignature = signature
        for op in graph.operators:
            if ops[op.opcodeIndex] != "RESHAPE" or len(op.inputs) < 2:
                continue
            target = model.buffers[graph.tensors[op.inputs[1]].buffer]
            shape = np.frombuffer(bytes(target.data), np.int32).copy()
            if len(shape) and shape[0] == batch:
                shape[0] = -1
                target.data = np.frombuffer(shape.tobytes(), np.uint8)
            options = op.builtinOptions
            new_shape = getattr(options, "newShape", None)
            if new_shape is not None and len(new_shape) and new_shape[0] == batch:
                options.newShape = [-1, *list(new_shape)[1:]]
    return bytes(fbu.convert_object_to_bytearray(model))


def with_metadata(content: bytes, meta: dict[str, str]) -> bytes:
    """`content` with `meta` as its metadata entry spec.TFLITE_METADATA (replaced if present)."""
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils as fbu

    model = fbu.read_model_from_bytearray(bytearray(content))
    model.metadata = [m for m in (model.metadata or [])
                      if (m.name.decode() if isinstance(m.name, bytes) else m.name)
                      != spec.TFLITE_METADATA]  # fmt: skip
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(json.dumps(meta, sort_keys=True).encode(), np.uint8)
    model.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name, entry.buffer = spec.TFLITE_METADATA, len(model.buffers) - 1
    model.metadata.append(entry)
    return bytes(fbu.convert_object_to_bytearray(model))


def _run(content: bytes, x: np.ndarray) -> np.ndarray:
    from ai_edge_litert.interpreter import Interpreter

    with quiet_stderr():
        interpreter = Interpreter(model_content=content, num_threads=1)
        interpreter.resize_tensor_input(0, list(x.shape))
        interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])


def check_dynamic(fixed: bytes, dynamic: bytes) -> None:
    """The dynamic model answers as the converted one, row for row, at CHECK_BATCHES."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(EXAMPLE_BATCH, *spec.INPUT_SHAPE)).astype(np.float32)
    want = _run(fixed, x)
    for n in CHECK_BATCHES:
        try:
            got = _run(dynamic, x[:n])
        except (RuntimeError, ValueError) as exc:
            raise ArtifactError(f"the LiteRT model made dynamic does not run at batch {n}: "
                                f"{reason(exc)}") from exc  # fmt: skip
        # the same kernels on the same rows; a different batch may change the GEMM blocking,
        # so allow fp32 rounding
        if got.shape != (n, spec.NUM_CLASSES) or not np.allclose(got, want[:n], rtol=1e-5,
                                                                 atol=1e-5):  # fmt: skip
            raise ArtifactError(f"the LiteRT model made dynamic answers otherwise at batch {n}; "
                                "litert-torch's output changed shape: report it")  # fmt: skip


def export_litert(model: torch.nn.Module, meta: dict[str, str], dest: Path) -> None:
    """fp32 .tflite with a dynamic batch and the metadata, written atomically."""
    fixed = convert(model)
    dynamic = dynamic_batch(fixed)
    check_dynamic(fixed, dynamic)
    content = with_metadata(dynamic, meta)
    atomic_write(dest, lambda tmp: tmp.write_bytes(content))


def int8_settings(calibration_size: int) -> dict[str, object]:
    """How the INT8 model is made, as recorded in its metadata and the manifest."""
    return {**INT8_SETTINGS, "calibration_size": calibration_size}


def quantize_litert(model: torch.nn.Module, meta: dict[str, str], dest: Path,
                    calibration: np.ndarray) -> None:  # fmt: skip
    """INT8 .tflite calibrated on `calibration` (uint8 (N, 28, 28) training images), with a
    dynamic batch and the metadata, written atomically."""
    with _quiet():
        from ai_edge_quantizer import quantizer
        from ai_edge_quantizer.qtyping import TFLOperationName

    fixed = convert(model)
    dynamic = dynamic_batch(fixed)
    check_dynamic(fixed, dynamic)
    q = quantizer.Quantizer(bytearray(dynamic))
    for op in INT8_OPS:
        q.add_static_config(".*", getattr(TFLOperationName, op), 8, 8)
    name = _input_name(dynamic)
    feed = [{name: b} for b in batches(calibration, policy.BATCH)]
    with _quiet():
        result = q.quantize(q.calibrate({"serving_default": feed}, num_threads=cores()),
                            enable_progress_report=False)  # fmt: skip
    # the quantizer's own tensors (its input QUANTIZE) copy the example batch: dynamic again
    content = with_metadata(dynamic_batch(bytes(result.quantized_model)), meta)
    check_dynamic(content, content)
    atomic_write(dest, lambda tmp: tmp.write_bytes(content))


def _input_name(content: bytes) -> str:
    from ai_edge_litert.interpreter import Interpreter

    signature = Interpreter(model_content=content).get_signature_list()["serving_default"]
    return signature["inputs"][0]
