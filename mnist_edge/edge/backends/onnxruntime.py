"""ONNX Runtime (CPU): .onnx, INT8 .onnx and .ort files; fp32 and int8 (the base install).

Loading and running are separate (as in Polygraphy): `load_session` builds an InferenceSession
with explicit options and checks that the model is an MNIST classifier; `load` wraps one in a
Runner. `raw_session` builds one for a model that is not a classifier as such (the roofline's
MatMul, a copy with layer outputs exposed), with the same options.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnxruntime as ort

from .. import layout
from ..errors import ArtifactError, reading
from ..machine import check_threads
from .base import Runner, check_io

WHY_NOT = {"bf16": "ONNX Runtime's CPU provider computes fp32 (use the openvino backend)"}


def precisions(fmt: str) -> tuple[str, ...]:
    return (layout.get(fmt).precision,)


def session_options(threads: int | None = None, *, spin: bool = True) -> ort.SessionOptions:
    """Options tuned for one small CNN on a few CPU cores (see
    docs/explanation/measurements.md); `spin` False stops idle intra-op threads from
    busy-waiting (for cores shared with workers)."""
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.intra_op_num_threads = check_threads(threads) or 0  # 0 = one per physical core
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3  # errors only: no warnings on stderr in applications
    if not spin:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return opts


def _dims(shape: list) -> list:
    return [d if isinstance(d, int) else None for d in shape]  # symbolic dims -> None


def io_names(session: ort.InferenceSession, path: Path | str = "model") -> tuple[str, str]:
    """(input name, output name) after checking the model takes (N, 1, 28, 28) and gives (N, 10)."""
    inputs, outputs = session.get_inputs(), session.get_outputs()
    check_io(
        path,
        [(f"{i.type} {i.shape} ({i.name!r})", i.type == "tensor(float)", _dims(i.shape))
         for i in inputs],
        [(f"{o.shape} ({o.name!r})", _dims(o.shape)) for o in outputs],
    )  # fmt: skip
    return inputs[0].name, outputs[0].name


def load_session(
    path: Path | str,
    *,
    threads: int | None = None,
    providers: tuple[str, ...] = ("CPUExecutionProvider",),
    options: ort.SessionOptions | None = None,
) -> ort.InferenceSession:
    """An InferenceSession for an .onnx or .ort file, checked to be an MNIST classifier."""
    path = Path(path)
    if not path.is_file():
        raise layout.missing(path, "onnx")
    with reading(path, "a loadable ONNX model", ArtifactError):
        session = ort.InferenceSession(
            os.fspath(path), sess_options=options or session_options(threads), providers=providers
        )
    io_names(session, path)
    return session


def raw_session(model: bytes, *, threads: int | None = None) -> ort.InferenceSession:
    """A session for a serialised model that is not an MNIST classifier as such, with the same
    options as every other session."""
    with reading("the model built in memory", "loadable by ONNX Runtime", ArtifactError):
        return ort.InferenceSession(
            model, sess_options=session_options(threads), providers=["CPUExecutionProvider"]
        )


def model_metadata(session: ort.InferenceSession) -> dict[str, str]:
    """The model's metadata_props (custom_metadata_map)."""
    return dict(session.get_modelmeta().custom_metadata_map)


def load(path: Path, fmt: str, precision: str, threads: int | None, spin: bool = True) -> Runner:
    session = load_session(path, options=session_options(threads, spin=spin))
    in_name, out_name = io_names(session, path)

    def run(x: np.ndarray) -> np.ndarray:
        return session.run([out_name], {in_name: x})[0]

    return Runner(path, fmt, run, metadata=model_metadata(session), session=session)
