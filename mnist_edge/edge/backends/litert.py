"""LiteRT (TensorFlow Lite): .tflite and INT8 .tflite files, fp32 and int8, without torch.

`pip install 'mnist-edge[litert]'` (ai-edge-litert alone). The Interpreter runs the model with
its XNNPACK delegate at the thread count asked for. mnist-edge's own files have a dynamic batch
(the input's shape signature starts with -1); a file with a fixed batch B (a foreign .tflite) is
fed in chunks of B, the last one padded. A file whose input or output is quantized (a full-integer
model, as microcontrollers take) is fed and read through its own scale and zero point. The
contract travels as the model's metadata entry `spec.TFLITE_METADATA` (a JSON object), read from
the flatbuffer with the schema the runtime ships.

An Interpreter is not thread-safe: each calling thread gets its own, made on first use.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np

from .. import layout, spec
from ..errors import ArtifactError, MissingDependency, reading, reason
from ..threads import cores
from .base import Runner, check_io, quiet_stderr

WHY_NOT = {"bf16": "LiteRT's CPU path computes a file at its own precision (fp32, or int8 for a "
                   "quantized file)"}  # fmt: skip
QUANTIZED = (np.int8, np.uint8, np.int16)


def precisions(fmt: str) -> tuple[str, ...]:
    return (layout.get(fmt).precision,)


def _interpreter_class():
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        raise MissingDependency(
            "the litert backend needs ai-edge-litert; install it with "
            "pip install 'mnist-edge[litert]'"
        ) from None
    return Interpreter


def metadata(content: bytes) -> dict[str, str]:
    """The model's `spec.TFLITE_METADATA` entry as key/values ({} when it has none)."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.Model.GetRootAs(content, 0)
    for i in range(model.MetadataLength()):
        entry = model.Metadata(i)
        if entry.Name() and entry.Name().decode() == spec.TFLITE_METADATA:
            data = model.Buffers(entry.Buffer()).DataAsNumpy()
            try:
                found = json.loads(bytes(data).decode())
            except (ValueError, TypeError):
                return {}
            return {str(k): str(v) for k, v in found.items()} if isinstance(found, dict) else {}
    return {}


def _quantization(detail: dict) -> tuple[float, int] | None:
    """(scale, zero point) of a quantized tensor, None for a float one."""
    if detail["dtype"] == np.float32:
        return None
    scale, zero = detail["quantization"]
    return (float(scale), int(zero)) if scale else None


def _check(interpreter, path: Path) -> None:
    ins, outs = interpreter.get_input_details(), interpreter.get_output_details()

    def dims(d: dict) -> list:
        return [None if s < 0 else int(s) for s in d["shape_signature"]]

    check_io(
        path,
        [(f"{np.dtype(d['dtype']).name} {list(d['shape_signature'])} ({d['name']!r})",
          d["dtype"] == np.float32 or _quantization(d) is not None, dims(d)) for d in ins],
        [(f"{list(o['shape_signature'])} ({o['name']!r})", dims(o)) for o in outs],
    )  # fmt: skip


def load(path: Path, fmt: str, precision: str, threads: int | None, spin: bool = True) -> Runner:
    interpreter_class = _interpreter_class()
    with reading(path, "a LiteRT (.tflite) model", ArtifactError):
        content = Path(path).read_bytes()
        meta = metadata(content)
        first = interpreter_class(model_content=content, num_threads=threads or cores())
    _check(first, path)
    with quiet_stderr(), reading(path, "a LiteRT model this runtime can run", ArtifactError):
        first.allocate_tensors()  # the XNNPACK delegate announces itself here, once a process
    signature = first.get_input_details()[0]["shape_signature"]
    fixed = int(signature[0]) if signature[0] > 0 else None  # None: any batch
    local = threading.local()
    local.interpreter = first  # this thread's; tensors are allocated on the first call

    def prepare(n: int) -> tuple:
        """This thread's interpreter sized for a batch of n, as the few things a call needs
        (read once per size, not per call: get_*_details builds dicts)."""
        it = getattr(local, "interpreter", None)
        if it is None:  # another thread: its own interpreter
            it = local.interpreter = interpreter_class(model_content=content,
                                                       num_threads=threads or cores())  # fmt: skip
        it.resize_tensor_input(0, [n, *spec.INPUT_SHAPE])
        it.allocate_tensors()
        inp, out = it.get_input_details()[0], it.get_output_details()[0]
        local.state = (n, it.set_tensor, it.invoke, it.get_tensor, inp["index"], out["index"],
                       _quantization(inp), inp["dtype"], _quantization(out))  # fmt: skip
        return local.state

    def call(x: np.ndarray) -> np.ndarray:
        state = getattr(local, "state", None)
        if state is None or state[0] != len(x):
            state = prepare(len(x))
        _, set_tensor, invoke, get_tensor, i, o, q_in, dtype, q_out = state
        if q_in is not None:
            info = np.iinfo(dtype)
            x = np.clip(np.round(x / q_in[0]) + q_in[1], info.min, info.max).astype(dtype)
        set_tensor(i, x)
        invoke()
        y = get_tensor(o)  # a copy
        if q_out is not None:
            y = (y.astype(np.float32) - q_out[1]) * np.float32(q_out[0])
        return y

    def run(x: np.ndarray) -> np.ndarray:
        try:
            if fixed is None:
                return call(x)
            parts = []
            for i in range(0, len(x), fixed):
                chunk = x[i : i + fixed]
                pad = fixed - len(chunk)  # the last chunk, padded to the file's fixed batch
                padded = np.concatenate([chunk, np.zeros((pad, *chunk.shape[1:]), chunk.dtype)])
                parts.append(call(padded if pad else chunk)[: len(chunk)])
            return np.concatenate(parts)
        except (RuntimeError, ValueError) as exc:
            raise ArtifactError(f"{path} could not run a batch of {len(x)}: {reason(exc)}") from exc

    return Runner(path, fmt, run, metadata=meta, session=first)
