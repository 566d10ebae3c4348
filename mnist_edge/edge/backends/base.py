"""What every backend returns and shares: the Runner (numpy in, numpy out) and the checks that
run before any engine does (as Polygraphy's BaseRunner.infer runs check_inputs first).

A Runner takes normalised float32 (N, 1, 28, 28) and gives float32 (N, 10); a batch of any other
dtype or shape is refused with the shape it has, before the engine sees it. `check_io` is the one
check that a loaded model is an MNIST classifier, whichever engine read it.
"""

from __future__ import annotations

import io
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, redirect_stderr
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import spec
from ..errors import ArtifactError, InputError

SIDE = spec.IMAGE_SIZE
INPUT = (spec.CHANNELS, SIDE, SIDE)  # per image


_F32 = np.dtype(np.float32)


def check_batch(x: object) -> np.ndarray:
    """`x` when it is a float32 (N, 1, 28, 28) array with N >= 1; an InputError otherwise."""
    # the common case in as few steps as possible: this runs before every model call, and at
    # batch 1 of an INT8 model (~0.3 ms) each microsecond of Python shows (benchmarks/runtimes.py)
    if type(x) is np.ndarray and x.dtype is _F32 and x.shape[1:] == INPUT and x.shape[0]:
        return x
    if not isinstance(x, np.ndarray):
        raise InputError(f"expected a float32 (N, 1, {SIDE}, {SIDE}) array, got "
                         f"{type(x).__name__}")  # fmt: skip
    if x.dtype != np.float32 or x.ndim != 4 or x.shape[1:] != INPUT or len(x) == 0:
        raise InputError(f"expected float32 (N, 1, {SIDE}, {SIDE}) with N >= 1, got {x.dtype} "
                         f"{tuple(x.shape)}")  # fmt: skip
    return x


def check_io(path: Path | str, inputs: Sequence[tuple[str, bool, Sequence]],
             outputs: Sequence[tuple[str, Sequence]]) -> None:  # fmt: skip
    """Refuse a model that is not an MNIST classifier: one input, float, (N, 1, 28, 28), and one
    output (N, 10). `inputs`: (description, is float, dims) per input; `outputs`: (description,
    dims) per output; a symbolic dimension is None."""
    if len(inputs) != 1 or len(outputs) != 1:
        raise ArtifactError(f"{path} has {len(inputs)} inputs and {len(outputs)} outputs; "
                            "an MNIST classifier has one of each")  # fmt: skip
    (what, is_float, dims), (out_what, out_dims) = inputs[0], outputs[0]
    if not is_float or list(dims)[1:] != list(INPUT):
        raise ArtifactError(f"{path} expects {what} as input; an MNIST classifier takes float "
                            f"(N, 1, {SIDE}, {SIDE})")  # fmt: skip
    if len(out_dims) != 2 or out_dims[1] != spec.NUM_CLASSES:
        raise ArtifactError(f"{path} gives {out_what} as output; an MNIST classifier gives "
                            f"(N, {spec.NUM_CLASSES})")  # fmt: skip


@contextmanager
def quiet_stderr() -> Iterator[None]:
    """Standard error (file descriptor 2 and sys.stderr) silenced for a moment: the C++ runtimes
    (LiteRT, ExecuTorch) and torchao's import print notices there as a model first loads or
    converts, and a command's stderr is for its own lines. Used around loading and converting only
    (a raised error still comes through as an exception)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null, redirect_stderr(io.StringIO()):
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


@dataclass
class Runner:
    """One loaded model: normalised float32 (N, 1, 28, 28) in, float32 (N, 10) out."""

    path: Path
    format: str  # one of layout.FORMATS
    fn: Callable[[np.ndarray], np.ndarray] = field(repr=False)
    load_ms: float = 0.0  # time to load the file and build the session / module
    metadata: dict[str, str] = field(default_factory=dict)  # the artifact's own metadata
    threads: int | None = None
    session: object | None = field(default=None, repr=False)  # the engine's own object
    backend: str = ""
    precision: str = "fp32"
    case: str = ""  # its name in the catalogue ("onnxruntime", "openvino-bf16", ...)

    @property
    def name(self) -> str:
        """Its case name (bench, tune): "onnxruntime", "openvino-bf16", ..."""
        return self.case or f"{self.backend}:{self.format}:{self.precision}"

    def run(self, batch: np.ndarray) -> np.ndarray:
        """(N, 10) outputs for a normalised float32 (N, 1, 28, 28) batch (checked first)."""
        return self.fn(check_batch(batch))

    __call__ = run
