"""The Open Inference Protocol's tensors and requests, as the REST codec (rest_codec.py) and
the gRPC codec (grpc_codec.py) both read them: one input tensor, either FP32 (N, 1, 28, 28)
normalised pixels named as the model's input (`input`), or BYTES (N,) of encoded image files
(PNG, JPEG, ...) named `image`, which go through `prepare_image` as `predict` does.

Every problem is a ProtocolError with the HTTP status the protocol gives it (400 for a wrong
name, shape, datatype or size; 404 for an unknown model or version; 413 for a body over the
limit); the gRPC service says the same in gRPC's codes.
"""

from __future__ import annotations

import base64
import binascii
import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .. import spec

IMAGE_INPUT = "image"  # the BYTES input: encoded image files
FP32 = "FP32"
BYTES = "BYTES"
SIDE = spec.IMAGE_SIZE
PER_IMAGE = spec.CHANNELS * SIDE * SIDE


class ProtocolError(Exception):
    """A request the protocol refuses: the message goes out as {"error": ...} with `status`."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Request:
    """One parsed inference request."""

    id: str | None
    kind: str  # FP32 or BYTES
    tensor: np.ndarray | list[bytes]  # float32 (N, 1, 28, 28), or N encoded image files
    outputs: tuple[str, ...]  # outputs asked for (empty: all)
    binary_output: bool  # answer with binary tensors
    parameters: dict[str, Any] = field(default_factory=dict)
    classification: int = 0  # the classification extension's k: the top k as BYTES (0: off)

    @property
    def n(self) -> int:
        return len(self.tensor)


def _shape(raw: Any) -> tuple[int, ...]:
    if not isinstance(raw, list) or not all(isinstance(d, int) and d >= 0 for d in raw):
        raise ProtocolError(f"shape must be a list of non-negative integers, got {raw!r}"[:200])
    return tuple(raw)


def _flat_numbers(data: Any, count: int, name: str) -> np.ndarray:
    try:  # numbers only: numpy would also take "0.5" or true as a number
        given = data if isinstance(data, np.ndarray) else np.asarray(data)
        if given.dtype.kind not in "iuf":  # strings, booleans, objects, integers past int64
            raise ValueError
        values = given.astype(np.float32, copy=False).ravel()
    except (TypeError, ValueError, OverflowError):
        raise ProtocolError(f"input {name!r}: data must be numbers") from None
    if values.size != count:
        raise ProtocolError(f"input {name!r}: {values.size} values for a shape of {count}")
    return values


def _bytes_elements(raw: bytes, name: str) -> list[bytes]:
    out, i = [], 0
    while i < len(raw):
        if i + 4 > len(raw):
            raise ProtocolError(f"input {name!r}: a BYTES element's length is cut short")
        (size,) = struct.unpack_from("<I", raw, i)
        i += 4
        if i + size > len(raw):
            raise ProtocolError(f"input {name!r}: a BYTES element claims {size} bytes, "
                                f"{len(raw) - i} are left")  # fmt: skip
        out.append(raw[i : i + size])
        i += size
    return out


def one_input(input_name: str) -> str:
    return (
        f"'inputs' must hold exactly one tensor: {input_name!r} (FP32 "
        f"[N, 1, {SIDE}, {SIDE}]) or {IMAGE_INPUT!r} (BYTES [N])"
    )


Tensor = np.ndarray | list[bytes]  # FP32 (N, 1, 28, 28), or N encoded image files


def parse_tensor(name: Any, datatype: Any, shape_raw: Any, *, raw: bytes | None, data: Any,
                 input_name: str = spec.INPUT_NAME, max_batch: int = 1024,
                 elements: list[bytes] | None = None) -> tuple[str, Tensor]:  # fmt: skip
    """One input tensor -> (FP32 or BYTES, its data), from whichever form it came in: `raw`
    bytes (REST's binary extension, gRPC's raw_input_contents), JSON `data` (numbers, or base64
    strings for BYTES), or, from gRPC's typed contents, numbers in `data` or `elements`."""
    shape = _shape(shape_raw)
    if name == input_name:
        if datatype != FP32:
            raise ProtocolError(f"input {name!r} is FP32, got {datatype!r}")
        if len(shape) != 4 or shape[1:] != (spec.CHANNELS, SIDE, SIDE) or shape[0] < 1:
            raise ProtocolError(f"input {name!r} has shape [N, 1, {SIDE}, {SIDE}] with N >= 1, "
                                f"got {list(shape)}")  # fmt: skip
        if shape[0] > max_batch:
            raise ProtocolError(f"{shape[0]} images in one request; at most {max_batch}")
        count = shape[0] * PER_IMAGE
        if raw is not None:
            if len(raw) != count * 4:
                raise ProtocolError(f"input {name!r}: {len(raw)} bytes for {count} FP32 "
                                    f"values ({count * 4} bytes)")  # fmt: skip
            values = np.frombuffer(raw, dtype="<f4").astype(np.float32, copy=False)
        else:
            values = _flat_numbers(data, count, name)
        array = values.reshape(shape)
        if not np.isfinite(array).all():
            raise ProtocolError(f"input {name!r} holds NaN or Inf")
        return FP32, array
    if name == IMAGE_INPUT:
        if datatype != BYTES:
            raise ProtocolError(f"input {name!r} is BYTES (encoded image files), got {datatype!r}")
        if len(shape) != 1 or shape[0] < 1:
            raise ProtocolError(f"input {name!r} has shape [N] with N >= 1, got {list(shape)}")
        if shape[0] > max_batch:
            raise ProtocolError(f"{shape[0]} images in one request; at most {max_batch}")
        if raw is not None:
            files = _bytes_elements(raw, name)
        elif elements is not None:
            files = list(elements)
        else:
            if not isinstance(data, list) or not all(isinstance(x, str) for x in data):
                raise ProtocolError(f"input {name!r}: JSON data must be a list of base64 strings")
            try:
                files = [base64.b64decode(x, validate=True) for x in data]
            except (binascii.Error, ValueError):
                raise ProtocolError(f"input {name!r}: an element is not base64") from None
        if len(files) != shape[0]:
            raise ProtocolError(f"input {name!r}: {len(files)} elements for a shape of {shape[0]}")
        return BYTES, files
    raise ProtocolError(f"unknown input {name!r}; this model takes {input_name!r} (FP32) or "
                        f"{IMAGE_INPUT!r} (BYTES)")  # fmt: skip


def check_classification(value: Any, classes: int = len(spec.CLASS_LABELS)) -> int:
    """The classification extension's k for an output: an integer 1..classes (a bool, a
    string or a float is not one; 0 asks for nothing and is refused as such)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ProtocolError(f"classification must be an integer 1..{classes}, got {value!r}"[:200])
    if not 1 <= value <= classes:
        raise ProtocolError(f"classification must be 1..{classes} (the model's classes), got "
                            f"{value}")  # fmt: skip
    return value


def classify(log_probs: np.ndarray, k: int, labels: tuple[str, ...]) -> list[bytes]:
    """The top `k` classes of each row as Triton writes them, best first: "score:index:label"
    (the score is the output's value, here the log-probability, with 6 decimals)."""
    top = np.argsort(-log_probs, axis=1, kind="stable")[:, :k]
    return [f"{log_probs[r, i]:f}:{i}:{labels[i] if i < len(labels) else i}".encode()
            for r in range(len(log_probs)) for i in top[r]]  # fmt: skip


def bytes_raw(elements: list[bytes]) -> bytes:
    """BYTES elements serialised as the binary extension and gRPC's raw contents do: each
    prefixed by its length, 4 bytes little-endian."""
    return b"".join(len(e).to_bytes(4, "little") + e for e in elements)


def check_output(name: Any) -> str:
    """An output a request asks for, refused unless the model gives it."""
    if name != spec.OUTPUT_NAME:
        raise ProtocolError(f"unknown output {name!r}; this model gives {spec.OUTPUT_NAME!r}")
    return name
