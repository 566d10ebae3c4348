"""The protocol's gRPC messages, as pure functions: a ModelInferRequest -> the model's input
(by the same rules as a REST body: tensors.py), and the model's output -> a ModelInferResponse.
No server here (grpc_service.py has it).

A tensor comes as `raw_input_contents` (FP32 little-endian; BYTES elements each a 4-byte
little-endian length and the bytes) or as typed `contents` (fp32_contents, bytes_contents); the
answer comes as `raw_output_contents`, as Triton's does. Messages are Triton's (../proto/, a
superset of the Open Inference Protocol's with the same field numbers).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import spec
from ..proto import grpc_service_pb2
from .tensors import (
    BYTES,
    FP32,
    ProtocolError,
    Request,
    bytes_raw,
    check_classification,
    check_output,
    classify,
    one_input,
    parse_tensor,
)


def parse(request: Any, *, input_name: str, max_batch: int) -> Request:
    """A ModelInferRequest -> Request, by the same rules as a REST body."""
    if len(request.inputs) != 1:
        raise ProtocolError(one_input(input_name))
    tensor = request.inputs[0]
    raw_inputs = request.raw_input_contents
    if raw_inputs and len(raw_inputs) != len(request.inputs):
        raise ProtocolError(f"{len(raw_inputs)} raw_input_contents for "
                                     f"{len(request.inputs)} input")  # fmt: skip
    contents = tensor.contents if tensor.HasField("contents") else None
    if raw_inputs and contents is not None and contents.ListFields():
        raise ProtocolError(f"input {tensor.name!r}: both raw_input_contents and "
                                     "contents; send one")  # fmt: skip
    raw = bytes(raw_inputs[0]) if raw_inputs else None
    typed = contents if contents is not None and contents.ListFields() else None
    if raw is None and typed is None:
        raise ProtocolError(f"input {tensor.name!r}: no data (raw_input_contents or "
                                     "contents)")  # fmt: skip
    kind, data = parse_tensor(
        tensor.name, tensor.datatype, list(tensor.shape), raw=raw,
        data=None if typed is None else np.asarray(typed.fp32_contents, dtype=np.float32),
        elements=None if typed is None else list(typed.bytes_contents),
        input_name=input_name, max_batch=max_batch,
    )  # fmt: skip
    outputs = tuple(check_output(o.name) for o in request.outputs)
    k = 0
    for o in request.outputs:
        if "classification" in o.parameters:
            p = o.parameters["classification"]
            which = p.WhichOneof("parameter_choice")
            k = check_classification(getattr(p, which) if which else None)
    return Request(request.id or None, kind, data, outputs, True, {}, k)


def answer(request: Any, model: str, version: str, log_probs: np.ndarray,
           labels: tuple[str, ...] = spec.CLASS_LABELS, k: int = 0) -> Any:  # fmt: skip
    """The ModelInferResponse: log_probs FP32 (N, 10) as raw_output_contents, or with the
    classification extension's `k`, the top k as BYTES (N, k) "score:index:label"."""
    out = grpc_service_pb2.ModelInferResponse(
        model_name=model, model_version=version, id=request.id
    )
    if k:
        out.outputs.add(name=spec.OUTPUT_NAME, datatype=BYTES, shape=[len(log_probs), k])
        out.raw_output_contents.append(bytes_raw(classify(log_probs, k, labels)))
        return out
    out.outputs.add(name=spec.OUTPUT_NAME, datatype=FP32,
                    shape=list(log_probs.shape))  # fmt: skip
    out.raw_output_contents.append(np.ascontiguousarray(log_probs, dtype="<f4").tobytes())
    return out


__all__ = ["parse", "answer"]
