"""The Open Inference Protocol (KServe V2 / Triton) over HTTP, as pure functions: an inference
request's body (JSON, or JSON followed by binary tensors) -> the model's input, and the model's
output -> a response body. No server, no model here (model_server.py and app.py have them).
The tensors' own rules are tensors.py's, shared with gRPC.

Requests: `inputs` holds one tensor, either FP32 (N, 1, 28, 28) normalised pixels named as the
model's input (`input`), or BYTES (N,) of encoded image files (PNG, JPEG, ...) named `image`,
which go through `prepare_image` as `predict` does. A tensor's data is JSON (`data`, a flat or
nested list; BYTES elements as base64 strings) or binary (`parameters.binary_data_size`, the
bytes after the JSON header whose length the `Inference-Header-Content-Length` header gives;
BYTES elements each a 4-byte little-endian length and the bytes), as Triton's binary tensor
data extension defines. Responses carry `log_probs` FP32 (N, 10), as JSON or as binary when the
request asks (`parameters.binary_data_output`, or `binary_data` on a requested output).

JSON is read and written with orjson, for speed (benchmarks/json_codec.py measures it against
the standard library's `json`). Note what it refuses that `json` took: NaN and Infinity
literals, integers past 64 bits and nesting past 1,024 levels, all 400s here anyway.

Every problem is a ProtocolError with the HTTP status the protocol gives it (400 for a wrong
name, shape, datatype or size; 404 for an unknown model or version; 413 for a body over the
limit), whose message goes out as `{"error": "..."}`.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import orjson

from .. import spec
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

HEADER_LENGTH = "inference-header-content-length"  # (HTTP header names are case-insensitive)


def _json_header(body: bytes, header_length: str | None) -> tuple[dict[str, Any], bytes]:
    if header_length is None:
        head, rest = body, b""
    else:
        try:
            size = int(header_length)
        except ValueError:
            raise ProtocolError(f"Inference-Header-Content-Length is not a number: "
                                f"{header_length[:40]!r}") from None  # fmt: skip
        if not 0 <= size <= len(body):
            raise ProtocolError(f"Inference-Header-Content-Length {size} is outside the body "
                                f"of {len(body)} bytes")  # fmt: skip
        head, rest = body[:size], body[size:]
    try:
        header = orjson.loads(head)
    except (ValueError, UnicodeDecodeError) as exc:  # orjson.JSONDecodeError is a ValueError
        raise ProtocolError(f"the request is not JSON: {str(exc)[:120]}") from None
    except RecursionError:  # arrays or objects nested thousands deep (orjson stops at 1,024)
        raise ProtocolError("the request's JSON nests too deep") from None
    if not isinstance(header, dict):
        raise ProtocolError("the request must be a JSON object with an 'inputs' list")
    return header, rest


def parse_request(body: bytes, header_length: str | None, *, input_name: str = spec.INPUT_NAME,
                  max_batch: int = 1024) -> Request:  # fmt: skip
    """An inference request's body (and its Inference-Header-Content-Length) -> Request."""
    header, rest = _json_header(body, header_length)
    inputs = header.get("inputs")
    if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
        raise ProtocolError(one_input(input_name))
    tensor = inputs[0]
    name = tensor.get("name")
    params = tensor.get("parameters") or {}
    if not isinstance(params, dict):
        raise ProtocolError(f"input {name!r}: parameters must be an object")
    binary_size = params.get("binary_data_size")
    if binary_size is not None and (not isinstance(binary_size, int) or binary_size < 0):
        raise ProtocolError(f"input {name!r}: binary_data_size must be a byte count")
    if binary_size is not None and binary_size != len(rest):
        raise ProtocolError(f"input {name!r}: binary_data_size is {binary_size} but the body "
                            f"holds {len(rest)} bytes after the JSON header")  # fmt: skip
    if binary_size is None and rest:
        raise ProtocolError("binary data follows the JSON header, but no input names its "
                            "binary_data_size")  # fmt: skip
    kind, data = parse_tensor(name, tensor.get("datatype"), tensor.get("shape"),
                              raw=None if binary_size is None else rest, data=tensor.get("data"),
                              input_name=input_name, max_batch=max_batch)  # fmt: skip
    wanted, binary_out, k = _outputs(header)
    request_id = header.get("id")
    return Request(None if request_id is None else str(request_id), kind, data, wanted,
                   binary_out, header.get("parameters") or {}, k)  # fmt: skip


def _outputs(header: dict[str, Any]) -> tuple[tuple[str, ...], bool, int]:
    """(the outputs asked for, whether binary, the classification extension's k or 0)."""
    params = header.get("parameters") or {}
    binary = bool(params.get("binary_data_output", False)) if isinstance(params, dict) else False
    outputs = header.get("outputs") or []
    if not isinstance(outputs, list):
        raise ProtocolError("'outputs' must be a list")
    names, k = [], 0
    for out in outputs:
        names.append(check_output(out.get("name") if isinstance(out, dict) else out))
        p = (out.get("parameters") if isinstance(out, dict) else None) or {}
        if not isinstance(p, dict):
            raise ProtocolError("an output's 'parameters' must be an object")
        if "binary_data" in p:
            binary = bool(p["binary_data"])
        if "classification" in p:
            k = check_classification(p["classification"])
    return tuple(names), binary, k


def response(
    model: str,
    version: str,
    request: Request,
    log_probs: np.ndarray,
    labels: tuple[str, ...] = spec.CLASS_LABELS,
) -> tuple[bytes, dict[str, str]]:
    """(body, headers) answering `request` with the model's (N, 10) output, or its top k
    classes as BYTES "score:index:label" (N, k) when the request asked for classification."""
    out: dict[str, Any] = {"name": spec.OUTPUT_NAME, "datatype": FP32,
                           "shape": list(log_probs.shape)}  # fmt: skip
    head: dict[str, Any] = {"model_name": model, "model_version": version, "outputs": [out]}
    if request.id is not None:
        head["id"] = request.id
    if request.classification:
        top = classify(log_probs, request.classification, labels)
        out.update(datatype=BYTES, shape=[len(log_probs), request.classification])
        if request.binary_output:
            raw = bytes_raw(top)
            out["parameters"] = {"binary_data_size": len(raw)}
            text = orjson.dumps(head)
            return text + raw, {HEADER_LENGTH: str(len(text)),
                                "content-type": "application/octet-stream"}  # fmt: skip
        out["data"] = [t.decode() for t in top]
        return orjson.dumps(head), {"content-type": "application/json"}
    if request.binary_output:
        raw = np.ascontiguousarray(log_probs, dtype="<f4").tobytes()
        out["parameters"] = {"binary_data_size": len(raw)}
        text = orjson.dumps(head)
        return text + raw, {HEADER_LENGTH: str(len(text)),
                            "content-type": "application/octet-stream"}  # fmt: skip
    out["data"] = np.ascontiguousarray(log_probs, dtype=np.float32).ravel()
    # float32 written as the shortest text that reads back as the same float32
    body = orjson.dumps(head, option=orjson.OPT_SERIALIZE_NUMPY)
    return body, {"content-type": "application/json"}


def error_body(message: str) -> bytes:
    return json.dumps({"error": message}).encode()
