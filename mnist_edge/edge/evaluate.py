"""evaluate(source) -> EvalResult: test loss, accuracy, per-class accuracy, confusion matrix.

Any runnable source: a training checkpoint (PyTorch, needs torch) or a deployed artifact (ONNX,
INT8 ONNX, ORT: numpy + onnxruntime only), on a test split the caller loaded (data.load_split).
The test images are fed in batches of `batch_size`, so memory does not grow with the test set.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from . import spec
from .data import Split
from .metrics import accuracy
from .runners import Runner, load_runner, outputs


@dataclass(frozen=True)
class EvalResult:
    """Test-set numbers for one model."""

    loss: float  # mean NLL of the log-softmax of the outputs
    accuracy: float  # percent
    n: int
    per_class_accuracy: list[float]  # percent, index = digit
    confusion: list[list[int]]  # rows = true digit, columns = predicted
    checkpoint: str = ""  # the source evaluated (a checkpoint or an artifact)
    format: str = "checkpoint"
    extra: dict = field(default_factory=dict)

    @property
    def correct(self) -> int:
        return sum(self.confusion[i][i] for i in range(len(self.confusion)))

    def to_dict(self) -> dict:
        return asdict(self)


def log_softmax(z: np.ndarray) -> np.ndarray:
    """Log-probabilities of logits (identity, up to rounding, on log-probabilities)."""
    z = z.astype(np.float64)
    m = z.max(axis=1, keepdims=True)
    return z - m - np.log(np.exp(z - m).sum(axis=1, keepdims=True))


def score(outputs: np.ndarray, labels: np.ndarray, source: str = "", fmt: str = "") -> EvalResult:
    """EvalResult of (N, 10) outputs against (N,) labels."""
    logp = log_softmax(outputs)
    loss = float(-logp[np.arange(len(labels)), labels].mean())
    pred = logp.argmax(1)
    k = spec.NUM_CLASSES
    confusion = np.zeros((k, k), dtype=np.int64)
    np.add.at(confusion, (labels, pred), 1)
    support = confusion.sum(1)
    per_class = np.where(support > 0, np.diag(confusion) / np.maximum(support, 1) * 100, np.nan)
    return EvalResult(
        loss=loss,
        accuracy=accuracy(pred, labels),
        n=len(labels),
        per_class_accuracy=[float(v) for v in per_class],
        confusion=confusion.tolist(),
        checkpoint=source,
        format=fmt,
    )


def evaluate(
    source: Path | str | Runner,
    test: Split,
    *,
    fmt: str | None = None,
    threads: int | None = None,
    batch_size: int | None = None,
    backend: str | None = None,
    precision: str | None = None,
) -> EvalResult:
    """Evaluate a checkpoint or an exported artifact (or a Runner already loaded: a command
    loads the model before the data, so that a bad file is named first) on `test`, on
    `backend` at `precision` when given (the catalogue's defaults for its format otherwise)."""
    if isinstance(source, Runner):
        runner = source
    else:
        runner = load_runner(source, fmt=fmt, threads=threads, backend=backend,
                             precision=precision)  # fmt: skip
    out = outputs(runner, test.images, batch_size)
    return score(out, test.labels, str(runner.path), runner.format)
