"""The `predict` task: pick the model, stream image files through the Predictor, write rows.

Torch-free; prints nothing (the caller renders each row as it comes, through `on_row`). The
model is `model` when given, else exports/mnist_cnn.onnx when it exists, else the model shipped
inside the package. Inputs are files, folders (their image files, recursively, sorted) and glob
patterns. Each file gets one row (file, label, confidence, top-k) or an error row with the
reason; an unreadable file never stops the run. With `output`, the rows go to a .csv or .jsonl
file written atomically. The cores are split between the engine and the worker processes that
prepare the files by threads.for_files.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import phases
from . import profile as profiles
from . import threads as pools
from .errors import ConfigError
from .files import atomic_write
from .images import IMAGE_SUFFIXES
from .layout import Layout
from .machine import check_threads
from .runtime import FileResult, Predictor, pretrained_path

OUTPUT_SUFFIXES = (".csv", ".jsonl")


@dataclass(frozen=True)
class PredictConfig:
    """What to classify, with which model, and where the rows go."""

    model: str | None = None  # None: exports/mnist_cnn.onnx when it exists, else packaged
    top: int = 1  # the K best labels in each row
    threads: int | None = None  # engine threads (default: threads.for_files decides)
    workers: int | None = None  # processes preparing files (default: threads.for_files)
    backend: str | None = None
    precision: str | None = None
    profile: str | None = None  # a deploy.json from tune: its model, backend, precision
    output: str | None = None  # a .csv or .jsonl file

    def __post_init__(self) -> None:
        if not 1 <= self.top <= 10:
            raise ConfigError(f"top must be 1..10, got {self.top}")
        check_threads(self.threads)
        if self.workers is not None and self.workers < 0:
            raise ConfigError(f"workers must be >= 0, got {self.workers}")
        if self.output is not None and Path(self.output).suffix not in OUTPUT_SUFFIXES:
            raise ConfigError(f"--output must end in .csv or .jsonl, got {self.output}")
        if self.profile is not None and (self.model or self.backend or self.precision):
            raise ConfigError("--profile names the model, backend and precision: drop --model, "
                              "--backend and --precision")  # fmt: skip


@dataclass(frozen=True)
class PredictSummary:
    model: str
    source: str  # where the model came from: "--model", "exported", "packaged", "profile ..."
    case: str  # the catalogue's name of what ran it
    rows: list[FileResult] = field(default_factory=list, repr=False)
    output: str | None = None
    workers: int = 0  # processes that prepared the files
    threads: int = 0  # the engine's threads
    files: int = 0  # files named by the inputs

    @property
    def total(self) -> int:
        return len(self.rows)

    @property
    def failed(self) -> int:
        return sum(r.error is not None for r in self.rows)


def resolve_model(model: Path | str | None) -> tuple[Path, str]:
    """(model path, where it came from)."""
    if model is not None:
        return Path(model), "--model"
    if Layout().onnx.is_file():
        return Layout().onnx, "exported"
    return pretrained_path(), "packaged"


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


def _csv_text(rows: list[FileResult], top: int) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf)
    head = ["file", "label", "confidence"]
    for k in range(1, top + 1):
        head += [f"top{k}_label", f"top{k}_probability"]
    writer.writerow([*head, "error"])
    for r in rows:
        cells: list[Any] = [r.file, "" if r.label is None else r.label,
                            "" if r.confidence is None else f"{r.confidence:.6f}"]  # fmt: skip
        for k in range(top):
            cells += [r.top[k][0], f"{r.top[k][1]:.6f}"] if k < len(r.top) else ["", ""]
        writer.writerow([*cells, r.error or ""])
    return buf.getvalue()


def rows_text(rows: list[FileResult], top: int, suffix: str) -> str:
    """The rows as CSV (suffix ".csv") or JSON Lines (anything else)."""
    if suffix == ".csv":
        return _csv_text(rows, top)
    return "".join(json.dumps(r.to_dict()) + "\n" for r in rows)


def write_rows(path: Path, rows: list[FileResult], top: int) -> None:
    """Write the rows as CSV or JSON Lines (by the suffix), atomically."""
    text = rows_text(rows, top, Path(path).suffix)
    atomic_write(path, lambda tmp: tmp.write_text(text))


def open_predictor(cfg: PredictConfig, threads: int | None = None,
                   spin: bool = True) -> tuple[Predictor, str]:  # fmt: skip
    """The Predictor `cfg` names and where its model came from, with `threads` engine threads
    (for a profile: cfg.threads, else the profile's own)."""
    if cfg.profile is not None:
        extra = {"threads": cfg.threads} if cfg.threads else {}
        return Predictor.from_profile(cfg.profile, spin=spin, **extra), f"profile {cfg.profile}"
    path, source = resolve_model(cfg.model)
    return Predictor(path, threads=threads, backend=cfg.backend, precision=cfg.precision,
                     spin=spin), source  # fmt: skip


def predict_paths(
    items: list[str],
    cfg: PredictConfig = PredictConfig(),
    *,
    on_start: Callable[[PredictSummary], None] | None = None,
    on_row: Callable[[FileResult], None] | None = None,
) -> PredictSummary:
    """Classify every image the items name, in order; `on_start` hears which model runs,
    `on_row` each row as it comes; the rows go to cfg.output when set."""
    paths = expand_inputs(items)
    wanted = cfg.threads
    if wanted is None and cfg.profile is not None:
        wanted = profiles.read(cfg.profile).profile.threads  # the tuned count keeps its cores
    plan = pools.for_files(len(paths), threads=wanted, workers=cfg.workers)
    predictor, source = open_predictor(cfg, plan.intra_op, plan.spin)
    summary = PredictSummary(str(predictor.path), source, predictor.runner.name, [], cfg.output,
                             plan.workers, predictor.runner.threads or plan.intra_op,
                             len(paths))  # fmt: skip
    if on_start:
        on_start(summary)
    rows = predictor.predict_files(paths, top=cfg.top, workers=plan.workers)
    return collect(summary, rows, cfg, on_row)


def collect(summary: PredictSummary, rows: Iterable[FileResult], cfg: PredictConfig,
            on_row: Callable[[FileResult], None] | None = None) -> PredictSummary:  # fmt: skip
    """The rows into the summary as they come (`on_row` hears each), then into cfg.output."""
    for row in rows:
        if not summary.rows:
            phases.mark("predicting")
        summary.rows.append(row)
        if on_row:
            on_row(row)
    if cfg.output is not None:
        write_rows(Path(cfg.output), summary.rows, cfg.top)
    return summary
