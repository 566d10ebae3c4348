"""ONNX Runtime inference for applications: numpy and onnxruntime only (no torch).

Loading and running are separate (as in Polygraphy): `load_session` builds an
`InferenceSession` with explicit options and checks that the model is an MNIST classifier;
`Predictor` wraps one session with the preprocessing contract read from the model's metadata.
"""

from __future__ import annotations

import os
from pathlib import Path

import onnxruntime as ort

from . import spec
from .errors import ArtifactError


def session_options(threads: int | None = None) -> ort.SessionOptions:
    """Options tuned for one small CNN on a few CPU cores (see benchmarks/README.md)."""
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.intra_op_num_threads = threads or 0  # 0 = one per physical core
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3  # errors only: no warnings on stderr in applications
    return opts


def _dims(shape: list) -> list:
    return [d if isinstance(d, int) else None for d in shape]  # symbolic dims -> None


def check_io(session: ort.InferenceSession, path: Path | str = "model") -> tuple[str, str]:
    """(input name, output name) after checking the model takes (N, 1, 28, 28) and gives (N, 10)."""
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if len(inputs) != 1 or len(outputs) != 1:
        raise ArtifactError(
            f"{path} has {len(inputs)} inputs and {len(outputs)} outputs; "
            "an MNIST classifier has one of each"
        )
    inp, out = inputs[0], outputs[0]
    side = spec.IMAGE_SIZE
    if inp.type != "tensor(float)" or _dims(inp.shape)[1:] != [spec.CHANNELS, side, side]:
        raise ArtifactError(
            f"{path} expects {inp.type} {inp.shape} as input {inp.name!r}; "
            f"an MNIST classifier takes float (N, 1, {side}, {side})"
        )
    if len(out.shape) != 2 or _dims(out.shape)[1] != spec.NUM_CLASSES:
        raise ArtifactError(
            f"{path} gives {out.shape} as output {out.name!r}; "
            f"an MNIST classifier gives (N, {spec.NUM_CLASSES})"
        )
    return inp.name, out.name


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
        raise ArtifactError(f"no model at {path}; export one with `mnist-edge export`")
    try:
        session = ort.InferenceSession(
            os.fspath(path), sess_options=options or session_options(threads), providers=providers
        )
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph/... types
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise ArtifactError(f"{path} is not a loadable ONNX model: {first}") from exc
    check_io(session, path)
    return session


def model_metadata(session: ort.InferenceSession) -> dict[str, str]:
    """The model's metadata_props (custom_metadata_map)."""
    return dict(session.get_modelmeta().custom_metadata_map)
