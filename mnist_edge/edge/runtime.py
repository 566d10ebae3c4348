"""Inference for applications: numpy and onnxruntime (OpenVINO when installed), no torch.

Loading and running are separate (as in Polygraphy): `load_session` builds an ONNX Runtime
`InferenceSession` with explicit options and checks that the model is an MNIST classifier (the
onnxruntime backend uses it). `Predictor` wraps one runner of the catalogue (runners.py: any
backend, format and precision) with the preprocessing contract read from the model's metadata,
feeds it at most `max_batch` images per call (bounded memory), reads images (`prepare_image`,
Pillow imported lazily) and streams folders of files (`predict_files`).
`Predictor.pretrained()` loads the model shipped inside the package; `Predictor.from_profile()`
what `mnist-edge tune` chose on this CPU.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import onnxruntime as ort

from . import policy, spec
from .errors import ArtifactError, InputError, reading
from .images import IMAGE_SUFFIXES, MAX_IMAGE_PIXELS, prepare_image
from .layout import FILENAMES
from .machine import check_threads

if TYPE_CHECKING:  # Pillow is imported lazily, only for image files
    from PIL import Image

__all__ = ["Predictor", "Prediction", "FileResult", "load_session", "prepare_image",
           "pretrained_path"]  # fmt: skip

MAX_BATCH = policy.BATCH  # images per model call (bounded memory: policy.py says why)
PACKAGED = Path(__file__).parent / "models"  # the pretrained model shipped in the package


def session_options(threads: int | None = None) -> ort.SessionOptions:
    """Options tuned for one small CNN on a few CPU cores (see benchmarks/README.md)."""
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.intra_op_num_threads = check_threads(threads) or 0  # 0 = one per physical core
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
    with reading(path, "a loadable ONNX model", ArtifactError):
        session = ort.InferenceSession(
            os.fspath(path), sess_options=options or session_options(threads), providers=providers
        )
    check_io(session, path)
    return session


def raw_session(model: bytes, *, threads: int | None = None) -> ort.InferenceSession:
    """A session for a serialised model that is not an MNIST classifier as such (the roofline's
    MatMul, a copy with layer outputs exposed), with the same options as every other session."""
    with reading("the model built in memory", "loadable by ONNX Runtime", ArtifactError):
        return ort.InferenceSession(
            model, sess_options=session_options(threads), providers=["CPUExecutionProvider"]
        )


def model_metadata(session: ort.InferenceSession) -> dict[str, str]:
    """The model's metadata_props (custom_metadata_map)."""
    return dict(session.get_modelmeta().custom_metadata_map)


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
    ) -> None:
        from .runners import load_runner

        if max_batch < 1 or max_image_pixels < 1:
            raise InputError("max_batch and max_image_pixels must be at least 1")
        self.max_batch, self.max_image_pixels = max_batch, max_image_pixels
        self.path = Path(path)
        self.runner = load_runner(self.path, threads=threads, backend=backend,
                                  precision=precision)  # fmt: skip
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
        from .tune import read_profile

        p = read_profile(profile)
        opts = {"threads": p["threads"], "backend": p["backend"], "precision": p["precision"]}
        return cls(p["model_path"], **{**opts, **kwargs})  # type: ignore[arg-type]

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
        stream goes on. Worker processes decode and prepare the files (`workers`, default one
        per core, for a few hundred files or more); this process runs the model on them,
        `batch_size` at a time."""
        from .images import prepared_stream

        pending: list[tuple[Path, np.ndarray]] = []

        def flush() -> Iterator[FileResult]:
            pred = self.predict(np.stack([px for _, px in pending]))
            for (path, _), best in zip(pending, pred.top(top), strict=True):
                yield FileResult(str(path), best[0][0], best[0][1], best)
            pending.clear()

        for path, digit, error in prepared_stream(list(paths), self.max_image_pixels, workers):
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


def expand_inputs(items: Iterable[str | Path]) -> list[Path]:
    """Files, folders (their image files, recursively) and glob patterns -> a stable, sorted
    list of paths. A name that matches nothing is kept, so that it gets its own error row; so is
    an image name in a folder that is not a readable file (a broken link, a FIFO, a device),
    which is refused without being opened."""
    import glob  # only for folders and patterns: not on the way to a first prediction

    out: list[Path] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            found = [p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES]
            out += sorted(p for p in found if not p.is_dir())
        elif not path.exists() and glob.has_magic(str(item)):
            out += sorted(
                Path(p) for p in glob.glob(str(item), recursive=True) if not Path(p).is_dir()
            )
        else:
            out.append(path)
    return out


def pretrained_path(*, int8: bool = False) -> Path:
    """The packaged model file (fp32 or INT8)."""
    path = PACKAGED / FILENAMES["onnx-int8" if int8 else "onnx"]
    if not path.is_file():
        raise ArtifactError(f"the packaged model {path} is missing; reinstall mnist-edge")
    return path
