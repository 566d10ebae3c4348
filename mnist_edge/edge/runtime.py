"""Inference for applications: numpy and onnxruntime (OpenVINO when installed), no torch.

`Predictor` wraps one runner of the catalogue (runners.py: any backend, format and precision)
with the preprocessing contract read from the model's metadata, feeds it at most `max_batch`
images per call (bounded memory), reads images (`prepare_image`, Pillow imported lazily) and
streams files (`predict_files`, with worker processes preparing them). `Predictor.pretrained()`
loads the model shipped inside the package; `Predictor.from_profile()` what `mnist-edge tune`
chose on this CPU. Building an ONNX Runtime session alone is `load_session` (the onnxruntime
backend's, re-exported here).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from . import policy, spec, threads
from . import profile as profiles
from .backends.onnxruntime import load_session
from .errors import ArtifactError, InputError
from .images import MAX_IMAGE_PIXELS, prepare_image, prepared_stream
from .layout import FILENAMES
from .runners import load_runner

if TYPE_CHECKING:  # Pillow is imported lazily, only for image files
    from PIL import Image

__all__ = ["Predictor", "Prediction", "FileResult", "load_session", "prepare_image",
           "pretrained_path"]  # fmt: skip

MAX_BATCH = policy.BATCH  # images per model call (bounded memory: policy.py says why)
PACKAGED = Path(__file__).parent / "models"  # the pretrained model shipped in the package


@dataclass(frozen=True)
class Prediction:
    """Answers for a batch of N images."""

    labels: np.ndarray  # (N,) int64, the most probable digit
    probabilities: np.ndarray  # (N, 10) float32, rows sum to 1

    @property
    def confidences(self) -> np.ndarray:
        """(N,) probability of each chosen label."""
        return self.probabilities[np.arange(len(self.labels)), self.labels]

    def top(self, k: int = 3) -> list[list[tuple[int, float]]]:
        """Per image, the k most probable (label, probability) pairs, best first."""
        order = np.argsort(-self.probabilities, axis=1)[:, :k]
        pairs = zip(order, self.probabilities, strict=True)
        return [[(int(c), float(p[c])) for c in row] for row, p in pairs]

    def __len__(self) -> int:
        return len(self.labels)


def _describe(x: np.ndarray) -> str:
    return f"{x.dtype} {tuple(x.shape)}"


def _softmax(z: np.ndarray) -> np.ndarray:
    """Softmax over classes; of log-probabilities it gives the probabilities back exactly."""
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


class Predictor:
    """An MNIST classifier with the model's own preprocessing contract, on any backend of the
    catalogue (runners.BACKENDS): ONNX Runtime unless told otherwise.

    Thread-safe: `predict` keeps no state between calls, and every backend's runner may be
    called from several threads at once.
    """

    def __init__(
        self,
        path: Path | str,
        *,
        threads: int | None = None,
        backend: str | None = None,
        precision: str | None = None,
        max_batch: int = policy.BATCH,
        max_image_pixels: int = MAX_IMAGE_PIXELS,
        spin: bool = True,
    ) -> None:
        if max_batch < 1 or max_image_pixels < 1:
            raise InputError("max_batch and max_image_pixels must be at least 1")
        self.max_batch, self.max_image_pixels = max_batch, max_image_pixels
        self.path = Path(path)
        self.runner = load_runner(self.path, threads=threads, backend=backend,
                                  precision=precision, spin=spin)  # fmt: skip
        contract = spec.Contract.from_metadata(self.runner.metadata)
        self.contract_from_model = contract is not None
        if contract is None:
            warnings.warn(
                f"{self.path} carries no mnist-edge metadata; assuming standard MNIST "
                f"preprocessing (mean {spec.MEAN}, std {spec.STD})",
                stacklevel=2,
            )
            contract = spec.Contract()
        self.contract = contract
        # Per-call cost matters at batch 1 (a model call is ~1.5 ms): uint8 pixels are normalised
        # by one table lookup, and our own models' log-probabilities need one exp, not a softmax.
        levels = np.arange(256, dtype=np.float64) * contract.pixel_scale
        self._lut = ((levels - contract.mean) / contract.std).astype(np.float32)
        self._float_scale = np.float32(1.0 / contract.std)
        self._shift = np.float32(-contract.mean / contract.std)
        self._outputs_log_probs = self.contract_from_model  # mnist-edge exports end in log-softmax

    @property
    def backend(self) -> str:
        return self.runner.backend

    @property
    def precision(self) -> str:
        return self.runner.precision

    def preprocess(self, x: np.ndarray) -> np.ndarray:
        """uint8 0..255 or float 0..1 pixels, (28, 28) / (N, 28, 28) / (N, 1, 28, 28) ->
        normalised float32 (N, 1, 28, 28)."""
        x = original = np.asarray(x)
        side = self.contract.image_size
        expected = (
            f"uint8 or float32 ({side}, {side}), (N, {side}, {side}) or (N, 1, {side}, {side})"
        )
        if x.ndim == 2:
            x = x[None, None]
        elif x.ndim == 3:
            x = x[:, None]
        if x.ndim != 4 or x.shape[1:] != (1, side, side):
            raise InputError(f"expected {expected}, got {_describe(original)}")
        if x.shape[0] == 0:
            raise InputError(f"expected at least one image, got an empty batch {tuple(x.shape)}")
        if x.dtype == np.uint8:
            return self._lut.take(x)
        if x.dtype.kind != "f":
            raise InputError(
                f"expected uint8 pixels 0..255 or float pixels 0..1, got {_describe(x)}"
            )
        bad = ~np.isfinite(x)
        if bad.any():
            raise InputError(f"input holds {int(bad.sum())} NaN or Inf values; expected 0..1")
        lo, hi = float(x.min()), float(x.max())
        if lo < -1e-3 or hi > 1 + 1e-3:
            raise InputError(
                f"float pixels must lie in 0..1, got {lo:g}..{hi:g}; "
                "pass uint8 for 0..255 pixels or divide by 255"
            )
        return x.astype(np.float32) * self._float_scale + self._shift

    @classmethod
    def from_profile(cls, profile: Path | str, **kwargs: object) -> Predictor:
        """The model, backend, precision and threads that `mnist-edge tune` chose on this CPU
        (a profile tuned on a CPU with other flags, or whose model changed, is refused)."""
        loaded = profiles.read(profile)
        p = loaded.profile
        opts = {"threads": p.threads, "backend": p.backend, "precision": p.precision}
        return cls(loaded.model_path, **{**opts, **kwargs})  # type: ignore[arg-type]

    @classmethod
    def pretrained(cls, *, int8: bool = False, **kwargs: object) -> Predictor:
        """The model shipped inside the package (fp32, or its INT8 version), no torch needed."""
        return cls(pretrained_path(int8=int8), **kwargs)  # type: ignore[arg-type]

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Raw model output (N, 10) for an already normalised float32 (N, 1, 28, 28) batch."""
        return self.runner(batch)

    def predict(self, x: np.ndarray) -> Prediction:
        """Labels and probabilities for pixels in any accepted form, max_batch at a time."""
        x = np.asarray(x)
        if x.ndim < 3 or len(x) <= self.max_batch:
            out = self.run(self.preprocess(x))
        else:  # bounded memory: normalise and run one chunk at a time
            out = np.concatenate(
                [self.run(self.preprocess(x[i : i + self.max_batch]))
                 for i in range(0, len(x), self.max_batch)]
            )  # fmt: skip
        probs = np.exp(out) if self._outputs_log_probs else _softmax(out)
        return Prediction(labels=probs.argmax(axis=1), probabilities=probs)

    def predict_image(self, image: Path | str | Image.Image) -> Prediction:
        """One image file or PIL image, prepared the way MNIST digits were (see prepare_image)."""
        return self.predict(prepare_image(image, max_pixels=self.max_image_pixels))

    def predict_images(self, images: list) -> Prediction:
        """Several image files or PIL images, as one batch."""
        if not images:
            raise InputError("expected at least one image, got none")
        limit = self.max_image_pixels
        return self.predict(np.stack([prepare_image(im, max_pixels=limit) for im in images]))

    def predict_files(
        self,
        paths: Iterable[Path],
        *,
        top: int = 1,
        batch_size: int = policy.BATCH,
        workers: int | None = None,
    ) -> Iterator[FileResult]:
        """One FileResult per file, in order; a file that cannot be read gets its error, and the
        stream goes on. `workers` processes decode and prepare the files while this one runs the
        model on them, `batch_size` at a time; by default as many as the cores this Predictor's
        engine threads leave free (threads.for_files), none for a few files."""
        paths = list(paths)
        pools = threads.for_files(len(paths), threads=self.runner.threads or threads.cores(),
                                  workers=workers)  # fmt: skip
        pending: list[tuple[Path, np.ndarray]] = []

        def flush() -> Iterator[FileResult]:
            pred = self.predict(np.stack([px for _, px in pending]))
            for (path, _), best in zip(pending, pred.top(top), strict=True):
                yield FileResult(str(path), best[0][0], best[0][1], best)
            pending.clear()

        stream = prepared_stream(paths, self.max_image_pixels, pools.workers, pools.worker_env())
        for path, digit, error in stream:
            if error is not None:
                yield from flush() if pending else ()
                yield FileResult(str(path), error=error)
                continue
            pending.append((path, digit))
            if len(pending) >= batch_size:
                yield from flush()
        if pending:
            yield from flush()


@dataclass(frozen=True)
class FileResult:
    """The answer for one image file, or why there is none."""

    file: str
    label: int | None = None
    confidence: float | None = None
    top: list[tuple[int, float]] = field(default_factory=list)  # (label, probability), best first
    error: str | None = None  # set when the file could not be read

    def to_dict(self) -> dict[str, object]:
        return {"file": self.file, "label": self.label, "confidence": self.confidence,
                "top": [{"label": c, "probability": p} for c, p in self.top],
                "error": self.error}  # fmt: skip


def pretrained_path(*, int8: bool = False) -> Path:
    """The packaged model file (fp32 or INT8)."""
    path = PACKAGED / FILENAMES["onnx-int8" if int8 else "onnx"]
    if not path.is_file():
        raise ArtifactError(f"the packaged model {path} is missing; reinstall mnist-edge")
    return path
